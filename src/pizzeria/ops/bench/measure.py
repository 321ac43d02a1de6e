"""A benchmark run: each baseline/saga pair on a fresh stack, repeated, batch by batch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
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
from pizzeria.ops.bench.figures import bench_report, comparison
from pizzeria.ops.bench.ledgers import ledger_size
from pizzeria.ops.bench.stack import Stack, stack_for
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
    stacked = stack_for(
        settings, settings.workers, without=settings.without, ledger=settings.ledger
    )
    async with stacked as (stack, client):
        prefix = f"b{run}-{uuid.uuid4().hex[:6]}"
        empty_file_bytes = ledger_size(stack.ledger)[2]
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
        rows, payload, file_bytes = ledger_size(stack.ledger)
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


def labelled_steps(step: StepReporter, label: str) -> StepReporter:
    def labelled(text: str) -> None:
        step(label + text)

    return labelled


async def run_setups(setups: Sequence[Settings], step: StepReporter) -> list[dict[str, Any]]:
    """One report per setup (ledger and worker count). The setups take turns within each
    run, so the machine's load drifts over all of them alike."""
    started = time.monotonic()
    batches: list[list[Batch]] = [[] for _ in setups]
    stacks: list[list[StackFacts]] = [[] for _ in setups]
    for run in range(setups[0].repeat):
        for index, settings in enumerate(setups):
            labelled = labelled_steps(step, f"{settings.setup}: " if len(setups) > 1 else "")
            for group in settings.groups:
                group_batches, facts = await measure_group(settings, run, group, labelled)
                batches[index] += group_batches
                stacks[index].append(facts)
    elapsed = round(time.monotonic() - started, 1)
    reports = [bench_report(s, b, f) for s, b, f in zip(setups, batches, stacks, strict=True)]
    for report in reports:
        report["elapsed_seconds"] = elapsed
    return reports


async def run_benchmark(settings: Settings, step: StepReporter) -> dict[str, Any]:
    """One setup's report."""
    (report,) = await run_setups([settings], step)
    return report


async def run_side_by_side(setups: Sequence[Settings], step: StepReporter) -> dict[str, Any]:
    """Several setups' reports, and their throughput side by side."""
    reports = await run_setups(setups, step)
    return {
        "setups": reports,
        "comparison": comparison(reports),
        "elapsed_seconds": reports[0]["elapsed_seconds"],
    }
