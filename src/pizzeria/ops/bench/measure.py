"""A benchmark run: each baseline/saga pair on a fresh stack, repeated, batch by batch."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client

from pizzeria.ops.bench.batches import (
    Batch,
    HistoryFacts,
    StackFacts,
    history_facts,
    run_batch,
    run_one,
)
from pizzeria.ops.bench.cases import HISTORY_SAMPLES, WARMUP_WORKFLOWS, Case, Settings
from pizzeria.ops.bench.figures import bench_report
from pizzeria.ops.bench.stack import Stack, running_stack
from pizzeria.ops.processes import stop_workers

StepReporter = Callable[[str], None]


async def warm_up(client: Client, stack: Stack, group: tuple[Case, ...], prefix: str) -> None:
    for case in group:
        await asyncio.gather(
            *(
                run_one(client, case, f"{prefix}-{case.name}-warm-{index}", stack.task_queue)
                for index in range(WARMUP_WORKFLOWS)
            )
        )


async def measure_group(
    settings: Settings, run: int, group: tuple[Case, ...], step: StepReporter
) -> tuple[list[Batch], StackFacts]:
    """The cases of a group (a baseline and its saga) on one fresh stack, in batches
    ordered forth and back (baseline, saga, saga, baseline) so that drift hits all alike."""
    sagas = [case.name for case in group if case.saga]
    batches: list[Batch] = []
    histories: dict[str, list[HistoryFacts]] = {case.name: [] for case in group}
    async with running_stack(
        settings.workers, settings.worker_options, settings.sandbox_passthrough, settings.without
    ) as (stack, client):
        prefix = f"b{run}-{uuid.uuid4().hex[:6]}"
        ledger_file = stack.data_dir / "ledger.db"
        empty_file_bytes = ledger_size(ledger_file)[2]
        await warm_up(client, stack, group, prefix)
        idle_rss = stack.worker_rss()
        for concurrency in settings.concurrency:
            count = settings.batch_size(concurrency)
            for number, case in enumerate((*group, *reversed(group))):
                step(f"run {run + 1}/{settings.repeat}: {case.name}, {concurrency} in flight")
                tag = f"{prefix}-{case.name}-c{concurrency}-{number}"
                batch = await run_batch(client, stack, case, concurrency, count, tag, run)
                batches.append(batch)
                for workflow_id in batch.workflow_ids[:HISTORY_SAMPLES]:
                    histories[case.name].append(
                        await history_facts(client, workflow_id, concurrency)
                    )
        stop_workers(stack.workers, grace=15.0)
        rows, payload, file_bytes = ledger_size(ledger_file)
    orders = WARMUP_WORKFLOWS * len(sagas) + sum(b.workflows for b in batches if b.case in sagas)
    facts = StackFacts(
        run=run,
        pair=(
            "+".join(case.name for case in group if not case.saga),
            "+".join(sagas),
        ),
        histories=histories,
        ledger_rows=rows,
        ledger_payload_bytes=payload,
        ledger_file_bytes=file_bytes - empty_file_bytes,
        orders=orders,
        idle_rss=idle_rss,
    )
    return batches, facts


def ledger_size(path: Path) -> tuple[int, int, int]:
    """Rows of the effects table, their text payload bytes, and the file's bytes."""
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows, payload = db.execute(
            "SELECT count(*), coalesce(sum(length(idempotency_key) + length(order_ref)"
            " + length(order_number) + length(step) + length(ingredients)"
            " + length(reference)), 0) FROM effects"
        ).fetchone()
    finally:
        db.close()
    return int(rows), int(payload), path.stat().st_size


async def run_benchmark(settings: Settings, step: StepReporter) -> dict[str, Any]:
    started = time.monotonic()
    batches: list[Batch] = []
    stacks: list[StackFacts] = []
    for run in range(settings.repeat):
        for group in settings.groups:
            pair_batches, facts = await measure_group(settings, run, group, step)
            batches += pair_batches
            stacks.append(facts)
    report = bench_report(settings, batches, stacks)
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report
