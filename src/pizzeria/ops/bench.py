"""``pizzeria bench``: what the order saga costs on top of the bare engine, in one run.

The benchmark starts its own in-memory dev server and worker process(es) on 127.0.0.1
(free ports, never 7233), with the order's timer and the driver search at zero, and runs
four cases on the same worker:

* ``baseline-good``: the bare engine, five no-op activities (`pizzeria.ops.baseline`);
* ``good``: the good order through the saga and the ledger;
* ``baseline-bad``: two no-ops, one non-retryable failure, two no-op compensations;
* ``bad``: the bad-card order, compensations included.

Each baseline is measured next to its saga, in batches ordered baseline, saga, saga,
baseline, so that noise on this shared machine and the dev server slowing down as it fills
hit both alike; a fresh server and worker serve each pair, so no server holds more than a
few thousand workflows. Per case and concurrency it reports workflows per second, p50 and
p99 latency (start to result), and CPU milliseconds per workflow of the server and of the
worker, read from ``/proc/<pid>/stat``: on a noisy machine CPU per workflow holds when
throughput wobbles. The ratios to the baseline are the figures that matter.

The worker is a separate process (``python -m pizzeria.ops.bench``) built with
`pizzeria.worker.build_worker`, the same wiring as ``pizzeria worker``; the baseline
workflow is added to it with a plugin, so both share one worker, its pollers and its slots.
"""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.plugin import SimplePlugin
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import pizzeria
from pizzeria import config
from pizzeria.client import start_order
from pizzeria.devserver import DevServer, DevServerError, stop_process
from pizzeria.failures import error_type_of
from pizzeria.ledger import open_ledger
from pizzeria.models import CREDIT_CARD_PROCESSING_ERROR, TASK_QUEUE
from pizzeria.ops.baseline import (
    BAD_CARD_SHAPE,
    BASELINE_ACTIVITIES,
    BASELINE_FAILURE_ERROR,
    GOOD_ORDER_SHAPE,
    BaselineShape,
    BaselineWorkflow,
)
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.worker import build_worker, connect, served_activities

BASE_CONCURRENCY = (1, 10, 50)
FULL_CONCURRENCY = (*BASE_CONCURRENCY, 200)
# Workflows per batch; each case runs two batches per concurrency and run. Sized so that a
# default run (three runs, concurrency 1, 10 and 50) takes about six and a half minutes
# here and no server holds more than about 2,700 workflows even with --full.
WORKFLOWS_PER_BATCH = {1: 12, 10: 100, 50: 150, 200: 400}
WARMUP_WORKFLOWS = 6  # per case, on a fresh stack, before anything is measured
HISTORY_SAMPLES = 4  # histories read per batch for event counts and compensation time
RSS_SAMPLE_SECONDS = 0.2
# Zero waits, a driver always found: what is measured is the engine and our code, not sleep.
WORKER_ENVIRONMENT = {
    "PIZZERIA_DRIVER_SECONDS": "0",
    "PIZZERIA_DRIVER_PROBABILITY": "1",
    "PIZZERIA_FAULTS": "",
}
PREP_SECONDS = 0.0
# A fresh ledger holds 1,000 portions of each ingredient: about 160 exercise orders.
BENCH_STOCK = 10**9
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


PLOT_NEEDS_MATPLOTLIB = "--plot needs matplotlib: pip install -e '.[bench]'"


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and an exit code, as every pizzeria command fails."""
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise SystemExit(code)


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a process died, a wrong outcome)."""


@dataclass(frozen=True)
class Case:
    name: str
    saga: bool  # False: the bare-engine baseline
    bad_card: bool
    baseline: str | None = None  # the case this one is compared with

    @property
    def expected_error(self) -> str | None:
        if not self.bad_card:
            return None
        return CREDIT_CARD_PROCESSING_ERROR if self.saga else BASELINE_FAILURE_ERROR


BASELINE_GOOD = Case("baseline-good", saga=False, bad_card=False)
GOOD = Case("good", saga=True, bad_card=False, baseline="baseline-good")
BASELINE_BAD = Case("baseline-bad", saga=False, bad_card=True)
BAD = Case("bad", saga=True, bad_card=True, baseline="baseline-bad")
CASES = (BASELINE_GOOD, GOOD, BASELINE_BAD, BAD)
PAIRS = ((BASELINE_GOOD, GOOD), (BASELINE_BAD, BAD))


# -- reading processes from /proc --------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name (field 2) may hold spaces: count fields after its closing paren.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the stack: a server and worker processes that the benchmark started ------------------


@dataclass
class Stack:
    server: DevServer
    workers: list[subprocess.Popen[bytes]]
    data_dir: Path
    task_queue: str

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(worker.pid) for worker in self.workers)

    def worker_rss(self) -> int:
        return sum(rss_bytes(worker.pid) for worker in self.workers)

    def check_alive(self) -> None:
        for number, worker in enumerate(self.workers):
            if worker.poll() is not None:
                log = self.data_dir / f"worker-{number}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BenchError(f"worker {number} exited with code {worker.returncode}:\n{tail}")


@asynccontextmanager
async def running_stack(
    workers: int, worker_options: Sequence[str], passthrough: Sequence[str] = ()
) -> AsyncIterator[tuple[Stack, Client]]:
    """A fresh in-memory dev server, a client and ``workers`` worker processes.

    The client comes from `pizzeria.worker.connect`, as ``pizzeria order``'s does, so the
    benchmark uses the same data converter as the worker; it connects before the workers
    start, so that whatever it sets up on first use is there before they look for it.
    """
    with tempfile.TemporaryDirectory(prefix="pizzeria-bench-") as folder:
        data_dir = Path(folder)
        server = DevServer(
            None,
            port=free_port(),
            ui_port=free_port(),
            log_file=data_dir / "server.log",
            headless=True,
        )
        server.start()
        stack = Stack(server, [], data_dir, f"{TASK_QUEUE}-bench-{uuid.uuid4().hex[:8]}")
        try:
            client = await connect(server.address)
            for number in range(workers):
                stack.workers.append(start_worker(stack, number, worker_options, passthrough))
            await asyncio.to_thread(wait_until_ready, stack)
            yield stack, client
        finally:
            for process in stack.workers:
                stop_process(process)
            server.stop()


def start_worker(
    stack: Stack, number: int, worker_options: Sequence[str], passthrough: Sequence[str]
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "pizzeria.ops.bench",
        "--address",
        stack.server.address,
        "--task-queue",
        stack.task_queue,
        "--ready-file",
        str(stack.data_dir / f"worker-{number}.ready"),
    ]
    for option in worker_options:
        command += ["--option", option]
    for module in passthrough:
        command += ["--passthrough", module]
    # A ledger and a faults file of its own; everything else (the data folder, and with it
    # whatever key the data converter uses) as the user's own worker has it.
    env = {
        **os.environ,
        **WORKER_ENVIRONMENT,
        "PIZZERIA_LEDGER": str(stack.data_dir / "ledger.db"),
        "PIZZERIA_FAULTS_FILE": str(stack.data_dir / "faults.json"),
    }
    with open(stack.data_dir / f"worker-{number}.log", "wb") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def wait_until_ready(stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for number in range(len(stack.workers)):
        ready = stack.data_dir / f"worker-{number}.ready"
        while not ready.exists():
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"worker {number} did not start within {timeout:.0f} s")
            time.sleep(0.1)


# -- one batch: a bounded number of workflows at a fixed number in flight ------------------


@dataclass
class Batch:
    run: int
    case: str
    concurrency: int
    workflows: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    worker_cpu: float
    client_cpu: float
    peak_rss: int
    workflow_ids: list[str] = field(default_factory=list)


async def start_case(
    client: Client, case: Case, workflow_id: str, task_queue: str
) -> WorkflowHandle[Any, Any]:
    if case.saga:
        order = sample_order(
            workflow_id,
            card=BAD_CARD if case.bad_card else GOOD_CARD,
            prep_seconds=PREP_SECONDS,
        )
        return await start_order(client, order, task_queue)
    shape: BaselineShape = BAD_CARD_SHAPE if case.bad_card else GOOD_ORDER_SHAPE
    return await client.start_workflow(
        BaselineWorkflow.run, shape, id=workflow_id, task_queue=task_queue
    )


async def run_one(client: Client, case: Case, workflow_id: str, task_queue: str) -> str:
    handle = await start_case(client, case, workflow_id, task_queue)
    try:
        await handle.result()
    except WorkflowFailureError as failure:
        kind = error_type_of(failure.cause)
        if kind != case.expected_error:
            raise BenchError(
                f"{case.name} {workflow_id} failed with {kind}: {failure.cause}"
            ) from failure
        return handle.id
    if case.expected_error is not None:
        raise BenchError(f"{case.name} {workflow_id} completed instead of failing")
    return handle.id


async def run_batch(
    client: Client, stack: Stack, case: Case, concurrency: int, count: int, tag: str, run: int
) -> Batch:
    """Run ``count`` workflows of a case with ``concurrency`` of them in flight at a time."""
    latencies: list[float] = []
    workflow_ids: list[str] = []
    pending = iter(range(count))
    peak_rss = stack.worker_rss()

    async def lane() -> None:
        for index in pending:
            started = time.perf_counter()
            workflow_ids.append(await run_one(client, case, f"{tag}-{index}", stack.task_queue))
            latencies.append(time.perf_counter() - started)

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            await asyncio.sleep(RSS_SAMPLE_SECONDS)
            peak_rss = max(peak_rss, stack.worker_rss())

    sampler = asyncio.create_task(sample_rss())
    server_before, worker_before = cpu_seconds(stack.server_pid), stack.worker_cpu()
    client_before, started = own_cpu_seconds(), time.perf_counter()
    try:
        # Bounded in time as in count: a stuck workflow fails the run instead of hanging it.
        async with asyncio.timeout(60 + 5 * count / concurrency):
            await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    except TimeoutError:
        stack.check_alive()
        raise BenchError(
            f"{case.name} at concurrency {concurrency} did not finish in time"
        ) from None
    finally:
        sampler.cancel()
    seconds = time.perf_counter() - started
    return Batch(
        run=run,
        case=case.name,
        concurrency=concurrency,
        workflows=count,
        seconds=seconds,
        latencies=latencies,
        server_cpu=cpu_seconds(stack.server_pid) - server_before,
        worker_cpu=stack.worker_cpu() - worker_before,
        client_cpu=own_cpu_seconds() - client_before,
        peak_rss=max(peak_rss, stack.worker_rss()),
        workflow_ids=workflow_ids,
    )


# -- what the histories say ----------------------------------------------------------------


@dataclass
class HistoryFacts:
    concurrency: int
    events: int
    bytes: int
    compensation_seconds: float | None  # failing step to last compensation done


async def history_facts(client: Client, workflow_id: str, concurrency: int) -> HistoryFacts:
    """Events and bytes of one history; for a failed order, how long undoing it took.

    The compensation time runs from the failing step's ActivityTaskFailed event to the last
    ActivityTaskCompleted event after it, both as stamped by the server.
    """
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    failed_at: float | None = None
    last_done: float | None = None
    for event in history.events:
        stamp = event.event_time.seconds + event.event_time.nanos / 1e9
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED and failed_at is None:
            failed_at = stamp
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and failed_at:
            last_done = stamp
    return HistoryFacts(
        concurrency=concurrency,
        events=len(history.events),
        bytes=sum(event.ByteSize() for event in history.events),
        compensation_seconds=(last_done - failed_at) if failed_at and last_done else None,
    )


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    repeat: int = 3
    concurrency: tuple[int, ...] = BASE_CONCURRENCY
    workflows: int | None = None  # per batch; None: WORKFLOWS_PER_BATCH
    workers: int = 1
    worker_options: tuple[str, ...] = ()
    sandbox_passthrough: tuple[str, ...] = ()

    def batch_size(self, concurrency: int) -> int:
        if self.workflows is not None:
            return self.workflows
        return WORKFLOWS_PER_BATCH.get(concurrency, max(12, 2 * concurrency))


@dataclass
class StackFacts:
    """What one stack (one baseline/saga pair) showed besides the batches."""

    run: int
    pair: tuple[str, str]
    histories: dict[str, list[HistoryFacts]]  # per case
    ledger_rows: int
    ledger_payload_bytes: int
    ledger_file_bytes: int
    orders: int
    idle_rss: int


StepReporter = Callable[[str], None]


async def measure_pair(
    settings: Settings, run: int, pair: tuple[Case, Case], step: StepReporter
) -> tuple[list[Batch], StackFacts]:
    baseline, saga = pair
    batches: list[Batch] = []
    histories: dict[str, list[HistoryFacts]] = {baseline.name: [], saga.name: []}
    orders = 0
    async with running_stack(
        settings.workers, settings.worker_options, settings.sandbox_passthrough
    ) as (stack, client):
        prefix = f"b{run}-{uuid.uuid4().hex[:6]}"
        ledger_file = stack.data_dir / "ledger.db"
        empty_file_bytes = ledger_size(ledger_file)[2]
        for case in pair:
            await asyncio.gather(
                *(
                    run_one(client, case, f"{prefix}-{case.name}-warm-{index}", stack.task_queue)
                    for index in range(WARMUP_WORKFLOWS)
                )
            )
        orders += WARMUP_WORKFLOWS
        idle_rss = stack.worker_rss()
        for concurrency in settings.concurrency:
            count = settings.batch_size(concurrency)
            for number, case in enumerate((baseline, saga, saga, baseline)):
                step(f"run {run + 1}/{settings.repeat}: {case.name}, {concurrency} in flight")
                tag = f"{prefix}-{case.name}-c{concurrency}-{number}"
                batch = await run_batch(client, stack, case, concurrency, count, tag, run)
                batches.append(batch)
                if case.saga:
                    orders += count
                for workflow_id in batch.workflow_ids[:HISTORY_SAMPLES]:
                    histories[case.name].append(
                        await history_facts(client, workflow_id, concurrency)
                    )
        for process in stack.workers:
            stop_process(process)
        rows, payload, file_bytes = ledger_size(ledger_file)
    facts = StackFacts(
        run=run,
        pair=(baseline.name, saga.name),
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
        for pair in PAIRS:
            pair_batches, facts = await measure_pair(settings, run, pair, step)
            batches += pair_batches
            stacks.append(facts)
    report = summarise(settings, batches, stacks)
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report


# -- summing up ------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def case_figures(batches: Sequence[Batch]) -> dict[str, float]:
    """One run's figures for one case and concurrency, from its batches taken together."""
    workflows = sum(b.workflows for b in batches)
    latencies = [latency for b in batches for latency in b.latencies]
    server = 1000 * sum(b.server_cpu for b in batches) / workflows
    worker = 1000 * sum(b.worker_cpu for b in batches) / workflows
    return {
        "workflows": workflows,
        "throughput": workflows / sum(b.seconds for b in batches),
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "server_cpu_ms": server,
        "worker_cpu_ms": worker,
        "cpu_ms": server + worker,
        "client_cpu_ms": 1000 * sum(b.client_cpu for b in batches) / workflows,
        "worker_peak_rss_mb": max(b.peak_rss for b in batches) / 2**20,
    }


RATIO_FIGURES = {
    "throughput": "throughput",
    "p50": "p50_ms",
    "p99": "p99_ms",
    "server_cpu": "server_cpu_ms",
    "worker_cpu": "worker_cpu_ms",
    "cpu": "cpu_ms",
}
TARGET_THROUGHPUT = 0.9
TARGET_CPU = 1.1
TARGET_P99 = 1.2
TARGET_P99_CONCURRENCY = 50


def summarise(
    settings: Settings, batches: Sequence[Batch], stacks: Sequence[StackFacts]
) -> dict[str, Any]:
    """Per case and concurrency the median over runs; ratios from those medians."""
    cases: list[dict[str, Any]] = []
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for case in CASES:
        for concurrency in settings.concurrency:
            runs = []
            for run in range(settings.repeat):
                chosen = [
                    b
                    for b in batches
                    if b.case == case.name and b.concurrency == concurrency and b.run == run
                ]
                if chosen:
                    runs.append(case_figures(chosen))
            if not runs:
                continue
            row: dict[str, Any] = {"case": case.name, "concurrency": concurrency}
            for key in runs[0]:
                row[key] = statistics.median(r[key] for r in runs)
            row["workflows"] = int(sum(r["workflows"] for r in runs))
            row.update(history_figures(case, concurrency, stacks))
            row["runs"] = [{k: round(v, 3) for k, v in r.items()} for r in runs]
            cases.append(row)
            by_key[(case.name, concurrency)] = row
    ratios = []
    for case in CASES:
        if case.baseline is None:
            continue
        for concurrency in settings.concurrency:
            saga, bare = (
                by_key.get((case.name, concurrency)),
                by_key.get((case.baseline, concurrency)),
            )
            if saga is None or bare is None:
                continue
            ratio: dict[str, Any] = {
                "case": case.name,
                "baseline": case.baseline,
                "concurrency": concurrency,
            }
            for name, key in RATIO_FIGURES.items():
                ratio[name] = saga[key] / bare[key] if bare[key] else None
            ratio["meets"] = {
                "throughput": ratio["throughput"] is not None
                and ratio["throughput"] >= TARGET_THROUGHPUT,
                "cpu": ratio["cpu"] is not None and ratio["cpu"] <= TARGET_CPU,
            }
            if concurrency == TARGET_P99_CONCURRENCY:
                ratio["meets"]["p99"] = ratio["p99"] is not None and ratio["p99"] <= TARGET_P99
            ratios.append(ratio)
    return {
        "settings": settings_json(settings),
        "machine": machine_json(),
        "cases": [rounded(row) for row in cases],
        "ratios": [rounded(ratio) for ratio in ratios],
        "growth": growth(settings, batches, stacks),
    }


def history_figures(case: Case, concurrency: int, stacks: Sequence[StackFacts]) -> dict[str, Any]:
    facts = [
        f
        for stack in stacks
        for f in stack.histories.get(case.name, [])
        if f.concurrency == concurrency
    ]
    if not facts:
        return {}
    figures: dict[str, Any] = {
        "history_events": statistics.median(f.events for f in facts),
        "history_bytes": statistics.median(f.bytes for f in facts),
    }
    undo = [f.compensation_seconds for f in facts if f.compensation_seconds is not None]
    if undo:
        figures["compensation_ms_p50"] = 1000 * statistics.median(undo)
        figures["compensation_ms_max"] = 1000 * max(undo)
    return figures


def growth(
    settings: Settings, batches: Sequence[Batch], stacks: Sequence[StackFacts]
) -> dict[str, Any]:
    """How cost grows: per order (history, ledger) and per order in flight (memory)."""
    result: dict[str, Any] = {}
    for case in CASES:
        facts = [f for stack in stacks for f in stack.histories.get(case.name, [])]
        if facts:
            result.setdefault("history_events_per_workflow", {})[case.name] = statistics.median(
                f.events for f in facts
            )
            result.setdefault("history_bytes_per_workflow", {})[case.name] = statistics.median(
                f.bytes for f in facts
            )
    for stack in stacks:
        saga = stack.pair[1]
        if stack.orders:
            result.setdefault("ledger_rows_per_order", {})[saga] = stack.ledger_rows / stack.orders
            result.setdefault("ledger_payload_bytes_per_order", {})[saga] = (
                stack.ledger_payload_bytes / stack.orders
            )
            result.setdefault("ledger_file_bytes_per_order", {})[saga] = (
                stack.ledger_file_bytes / stack.orders
            )
    low, high = min(settings.concurrency), max(settings.concurrency)
    if high > low:
        for case in CASES:
            peaks = {
                c: statistics.median(
                    b.peak_rss for b in batches if b.case == case.name and b.concurrency == c
                )
                for c in (low, high)
                if any(b.case == case.name and b.concurrency == c for b in batches)
            }
            if len(peaks) == 2:
                result.setdefault("worker_rss_kb_per_inflight_workflow", {})[case.name] = (
                    (peaks[high] - peaks[low]) / (high - low) / 1024
                )
    if stacks:
        result["worker_idle_rss_mb"] = statistics.median(s.idle_rss for s in stacks) / 2**20
    return {key: rounded(value) for key, value in result.items()}


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def settings_json(settings: Settings) -> dict[str, Any]:
    return {
        "repeat": settings.repeat,
        "concurrency": list(settings.concurrency),
        "workflows_per_batch": {str(c): settings.batch_size(c) for c in settings.concurrency},
        "batches_per_case": 2,
        "batch_order": "baseline, saga, saga, baseline (a fresh server and worker per pair)",
        "workers": settings.workers,
        "worker_options": list(settings.worker_options),
        "sandbox_passthrough": list(settings.sandbox_passthrough),
        "prep_seconds": PREP_SECONDS,
        "worker_environment": {k: v for k, v in WORKER_ENVIRONMENT.items() if v},
        "baseline_shapes": {
            "baseline-good": describe_shape(GOOD_ORDER_SHAPE),
            "baseline-bad": describe_shape(BAD_CARD_SHAPE),
        },
    }


def describe_shape(shape: BaselineShape) -> str:
    parts = [*shape.steps]
    if shape.failing_step:
        parts.append(f"{shape.failing_step} (fails)")
    parts += [f"{name} (compensation)" for name in shape.compensations]
    return ", ".join(parts)


def machine_json() -> dict[str, Any]:
    from temporalio import __version__ as temporalio_version

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "temporalio": temporalio_version,
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# -- output ----------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    ratios = {(r["case"], r["concurrency"]): r for r in report["ratios"]}
    table = Table(
        "case",
        "in flight",
        "wf/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/wf",
        "worker CPU ms/wf",
        "wf/s ratio",
        "p99 ratio",
        "CPU ratio",
        title=f"pizzeria bench: median of {report['settings']['repeat']} run(s)",
    )
    for row in report["cases"]:
        ratio = ratios.get((row["case"], row["concurrency"]))

        def mark(name: str, text: str, ratio: dict[str, Any] | None = ratio) -> str:
            if ratio is None or name not in ratio["meets"]:
                return text
            return f"[green]{text}[/green]" if ratio["meets"][name] else f"[red]{text}[/red]"

        table.add_row(
            row["case"],
            str(row["concurrency"]),
            f"{row['throughput']:.1f}",
            f"{row['p50_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            f"{row['server_cpu_ms']:.1f}",
            f"{row['worker_cpu_ms']:.1f}",
            mark("throughput", f"{ratio['throughput']:.2f}") if ratio else "",
            mark("p99", f"{ratio['p99']:.2f}") if ratio else "",
            mark("cpu", f"{ratio['cpu']:.2f}") if ratio else "",
        )
    # Wide enough for every column when stdout is a file or a pipe (rich assumes 80).
    Console(highlight=False, width=max(out.width, 132)).print(table)
    undo = [r for r in report["cases"] if "compensation_ms_p50" in r]
    for row in undo:
        out.print(
            f"{row['case']} at {row['concurrency']} in flight: failing step to last "
            f"compensation done {row['compensation_ms_p50']:.0f} ms (median of samples)"
        )
    out.print("growth: " + json.dumps(report["growth"]))
    out.print(f"elapsed: {report['elapsed_seconds']:.0f} s")


def draw_plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        fail(PLOT_NEEDS_MATPLOTLIB, 2)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for case in CASES:
        rows = sorted(
            (r for r in report["cases"] if r["case"] == case.name), key=lambda r: r["concurrency"]
        )
        if not rows:
            continue
        style = "-" if case.saga else "--"
        x = [r["concurrency"] for r in rows]
        left.plot(x, [r["throughput"] for r in rows], style, marker="o", label=case.name)
        right.plot(x, [r["p99_ms"] for r in rows], style, marker="o", label=case.name)
    levels = sorted({r["concurrency"] for r in report["cases"]})
    for axes, label in ((left, "workflows per second"), (right, "p99 latency (ms)")):
        axes.set_xscale("log")
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.minorticks_off()
        axes.set_xlabel("workflows in flight")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(f"pizzeria bench (median of {report['settings']['repeat']} runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw throughput and p99 against concurrency to this PNG (needs matplotlib)",
)
@click.option("--full", is_flag=True, help="Also 200 workflows in flight")
@click.option(
    "--repeat",
    type=click.IntRange(1, 9),
    default=3,
    show_default=True,
    help="Runs; every figure is the median over them",
)
@click.option(
    "--concurrency",
    "concurrency",
    type=click.IntRange(1, 500),
    multiple=True,
    help="Workflows in flight; repeat for several [default: 1, 10, 50 (and 200 with --full)]",
)
@click.option(
    "--workflows",
    type=click.IntRange(1, 2000),
    help="Workflows per batch (two batches per case) [default: 12, 100, 150, 400 by concurrency]",
)
@click.option(
    "--workers", type=click.IntRange(1, 4), default=1, show_default=True, help="Worker processes"
)
@click.option(
    "--worker-option",
    "worker_options",
    multiple=True,
    metavar="NAME=VALUE",
    help="A Worker option passed to build_worker, e.g. max_cached_workflows=100; repeatable",
)
@click.option(
    "--sandbox-passthrough",
    multiple=True,
    metavar="MODULE",
    help="Pass this module (and its children) through the workflow sandbox; repeatable",
)
def bench(
    as_json: bool,
    plot: Path | None,
    full: bool,
    repeat: int,
    concurrency: tuple[int, ...],
    workflows: int | None,
    workers: int,
    worker_options: tuple[str, ...],
    sandbox_passthrough: tuple[str, ...],
) -> None:
    """Measure what the order saga costs on top of the bare engine, in one run.

    Starts its own in-memory dev server and worker on 127.0.0.1 (free ports), with the
    order's timer and the driver search at zero, and compares the good and the bad-card
    order with bare workflows of as many no-op activities.
    """
    for option in worker_options:
        parse_worker_option(option)
    if plot is not None:
        draw_plot_check()
    chosen = tuple(sorted(set(concurrency))) or (FULL_CONCURRENCY if full else BASE_CONCURRENCY)
    settings = Settings(
        repeat=repeat,
        concurrency=chosen,
        workflows=workflows,
        workers=workers,
        worker_options=worker_options,
        sandbox_passthrough=sandbox_passthrough,
    )
    compile_package()
    total = settings.repeat * len(PAIRS) * len(settings.concurrency) * 4
    err.print(
        "Timer and driver search at zero: order settings prep_seconds=0, "
        "PIZZERIA_DRIVER_SECONDS=0, PIZZERIA_DRIVER_PROBABILITY=1. "
        f"{settings.repeat} run(s), {len(settings.concurrency)} concurrency level(s), "
        f"{total} batches, a fresh in-memory dev server per pair."
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=total)
        first = True

        def step(description: str) -> None:
            nonlocal first
            if not first:
                progress.advance(task)
            first = False
            progress.update(task, description=description)

        try:
            report = asyncio.run(run_benchmark(settings, step))
        except (BenchError, DevServerError) as error:
            progress.stop()
            fail(str(error))
        progress.advance(task)
    if plot is not None:
        draw_plot(report, plot)
        err.print(f"Plot written to {plot}")
    if as_json:
        out.print_json(json.dumps(report))
    else:
        print_report(report)


def compile_package() -> None:
    """Write the package's bytecode files, as ``pip install`` does, when they are missing.

    The workflow sandbox imports the workflow's module (and its package) afresh for every
    new workflow. With ``PYTHONDONTWRITEBYTECODE`` set (as on our machines) and an editable
    install, no ``.pyc`` exists, so each of those imports compiles the source again: about
    9 ms of worker CPU per order here, which no deployed worker pays. A package that cannot
    be written to is left as it is.
    """
    compileall.compile_dir(Path(pizzeria.__file__).parent, quiet=2)


def draw_plot_check() -> None:
    """Fail before a long run, not after it, when matplotlib is missing."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        fail(PLOT_NEEDS_MATPLOTLIB, 2)


# -- the worker process ---------------------------------------------------------------------


def parse_worker_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE an int, a float, true/false or none."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise click.BadParameter(f"{text!r}: expected NAME=VALUE", param_hint="--worker-option")
    lowered = raw.strip().lower()
    value: Any
    if lowered in ("true", "false"):
        value = lowered == "true"
    elif lowered == "none":
        value = None
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise click.BadParameter(
                    f"{text!r}: VALUE must be a number, true, false or none",
                    param_hint="--worker-option",
                ) from None
    return name, value


async def serve(address: str, task_queue: str, ready_file: Path, options: dict[str, Any]) -> None:
    # As `pizzeria worker` builds it: the ledger and faults file of the data folder.
    activities = served_activities(open_ledger(config.ledger_location(), initial_stock=BENCH_STOCK))
    client = await connect(address)
    baseline = SimplePlugin(
        "pizzeria.bench.baseline",
        workflows=[BaselineWorkflow],
        activities=list(BASELINE_ACTIVITIES),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    worker = build_worker(client, activities, task_queue=task_queue, plugins=[baseline], **options)
    async with worker:
        await asyncio.to_thread(ready_file.write_text, str(os.getpid()))
        await stop.wait()


@click.command()
@click.option("--address", required=True)
@click.option("--task-queue", required=True)
@click.option("--ready-file", type=click.Path(path_type=Path), required=True)
@click.option("--option", "options", multiple=True)
@click.option("--passthrough", "passthrough", multiple=True)
def worker_main(
    address: str,
    task_queue: str,
    ready_file: Path,
    options: tuple[str, ...],
    passthrough: tuple[str, ...],
) -> None:
    """The benchmark's worker process: the order workflow, its activities and the baseline."""
    chosen = dict(map(parse_worker_option, options))
    if passthrough:
        chosen["workflow_runner"] = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*passthrough)
        )
    asyncio.run(serve(address, task_queue, ready_file, chosen))


if __name__ == "__main__":
    try:
        worker_main.main(standalone_mode=False)
        code = 0
    except Exception as error:
        print(f"bench worker: {type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    # See pizzeria.cli.main: the SDK's threads can abort the interpreter while it finalizes.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
