"""A peer in the same run: DBOS Transact, with its SQLite database, running the order's
five-step good shape, so that the benchmark can say how we compare with the durable
execution library a Python team would weigh against Temporal.

The peer runs in a process of its own (``python -m pizzeria.ops.bench.peer``): DBOS is a
process-wide singleton and does its work in the caller's process, so the CPU that process
spends is all the CPU a DBOS workflow costs (ours is the server's and the worker's). The
five steps are no-ops, as in the bare engine's shape (`pizzeria.ops.baseline`): what is
measured is the engine, not the work. Its only output is one JSON object on stdout.

DBOS comes with the ``bench`` extra (``pip install -e '.[bench]'``); without it the peer
says so in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PEERS = ("dbos",)
STEP_NAMES = (
    "get_distance",
    "update_inventory",
    "process_credit_card",
    "send_bill",
    "notify_delivery_driver",
)
WARMUP_WORKFLOWS = 6


class PeerError(RuntimeError):
    """The peer could not be measured (DBOS missing, its process failed)."""


@dataclass(frozen=True)
class PeerBatch:
    """One batch of the peer's workflows at one concurrency."""

    peer: str
    concurrency: int
    workflows: int
    seconds: float
    p50_ms: float
    p95_ms: float
    throughput: float  # workflows per second
    cpu_ms_per_workflow: float  # the peer's whole process (its engine is in-process)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def timed_batch(
    run_one: Callable[[], Awaitable[Any]], concurrency: int, workflows: int
) -> tuple[list[float], float, float]:
    """Latencies of ``workflows`` runs at ``concurrency`` in flight, the batch's wall time
    and the process's CPU over it."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            await run_one()
            latencies.append(time.perf_counter() - started)

    cpu = process_cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(workflows)))
    return latencies, time.perf_counter() - started, process_cpu_seconds() - cpu


def batch_of(concurrency: int, latencies: list[float], seconds: float, cpu: float) -> PeerBatch:
    count = len(latencies)
    return PeerBatch(
        peer="dbos",
        concurrency=concurrency,
        workflows=count,
        seconds=round(seconds, 3),
        p50_ms=round(statistics.median(latencies) * 1000, 1),
        p95_ms=round(percentile(latencies, 0.95) * 1000, 1),
        throughput=round(count / seconds, 2),
        cpu_ms_per_workflow=round(cpu / count * 1000, 1),
    )


async def measure_dbos(database: Path, batches: Sequence[tuple[int, int]]) -> list[PeerBatch]:
    """DBOS's five-step workflow, ``(concurrency, workflows)`` per batch, on a SQLite file."""
    try:
        from dbos import DBOS
    except ImportError:
        raise PeerError(
            "DBOS is not installed: pip install -e '.[bench]' (the bench extra)"
        ) from None
    logging.getLogger("dbos").setLevel(logging.WARNING)

    def no_op_step(name: str) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            return None

        step.__name__ = step.__qualname__ = name
        decorated: Callable[[], Awaitable[None]] = DBOS.step(name=name)(step)
        return decorated

    steps = [no_op_step(name) for name in STEP_NAMES]

    async def order() -> str:
        for step in steps:
            await step()
        return "COMPLETED"

    workflow = DBOS.workflow(name="PizzaOrderPeerWorkflow")(order)
    DBOS(
        config={
            "name": "pizzeria-bench-peer",
            "system_database_url": f"sqlite:///{database}",
            "console_log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:

        async def run_one() -> Any:
            handle = await DBOS.start_workflow_async(workflow)
            return await handle.get_result()

        await timed_batch(run_one, WARMUP_WORKFLOWS, WARMUP_WORKFLOWS)
        results = []
        for concurrency, workflows in batches:
            results.append(
                batch_of(concurrency, *await timed_batch(run_one, concurrency, workflows))
            )
        return results
    finally:
        DBOS.destroy()


def check_peer(peer: str) -> None:
    """Refuse, before anything starts, a peer that cannot be measured here."""
    if peer not in PEERS:
        raise PeerError(f"unknown peer {peer!r}: one of {', '.join(PEERS)}")
    if importlib.util.find_spec("dbos") is None:
        raise PeerError("DBOS is not installed: pip install -e '.[bench]' (the bench extra)")


def run_peer(
    peer: str, batches: Sequence[tuple[int, int]], timeout: float = 600.0
) -> list[PeerBatch]:
    """The peer's batches, measured in a process of its own on a fresh database."""
    if peer not in PEERS:
        raise PeerError(f"unknown peer {peer!r}: one of {', '.join(PEERS)}")
    spec = ",".join(f"{concurrency}x{workflows}" for concurrency, workflows in batches)
    with tempfile.TemporaryDirectory(prefix="pizzeria-peer-") as folder:
        command = [
            sys.executable, "-m", "pizzeria.ops.bench.peer",
            "--database", str(Path(folder) / "dbos.sqlite"), "--batches", spec,
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(f"the {peer} peer did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerError(f"the {peer} peer failed: {last}")
    return [PeerBatch(**row) for row in json.loads(done.stdout)]


def parse_batches(spec: str) -> list[tuple[int, int]]:
    batches = []
    for part in spec.split(","):
        concurrency, _, workflows = part.partition("x")
        batches.append((int(concurrency), int(workflows)))
    return batches


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--batches", required=True, help="CONCURRENCYxWORKFLOWS,...")
    arguments = parser.parse_args(argv)
    try:
        batches = asyncio.run(measure_dbos(arguments.database, parse_batches(arguments.batches)))
    except PeerError as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps([asdict(batch) for batch in batches]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
