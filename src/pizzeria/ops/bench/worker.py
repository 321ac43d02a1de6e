"""The benchmark's worker process: the order workflow, its activities and the baseline.

Run as ``python -m pizzeria.ops.bench.worker`` by `pizzeria.ops.bench.stack`, never by a
user (so it is no command of `pizzeria.cli`, and imports none: what the benchmark weighs
is a worker, not the command line). It is built with `pizzeria.worker.build_worker`, the
same wiring as ``pizzeria worker``; the baseline workflow is added with a plugin, so both
share one worker, its pollers and its slots.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from temporalio.plugin import SimplePlugin
from temporalio.worker import UnsandboxedWorkflowRunner

from pizzeria import config, tuning
from pizzeria.config import READY_LINE
from pizzeria.ledger import open_ledger
from pizzeria.ops.baseline import BASELINE_ACTIVITIES, BaselineWorkflow, LocalBaselineWorkflow
from pizzeria.ops.bench.cases import parse_worker_option
from pizzeria.ops.bench.provider import timed_gateway
from pizzeria.temporal.connection import connect
from pizzeria.worker import build_worker, payment_gateway, served_activities

# A fresh ledger holds 1,000 portions of each ingredient: about 160 exercise orders.
BENCH_STOCK = 10**9


def worker_settings(
    options: Iterable[str], passthrough: Iterable[str], without: Iterable[str]
) -> dict[str, Any]:
    """The Worker options the benchmark asked for; the pieces ``without`` switched off
    first (before anything is built: see `pizzeria.tuning`)."""
    chosen = dict(map(parse_worker_option, options))
    tuning.switch_off(set(without))
    modules = tuple(passthrough)
    if not tuning.is_on("sandbox"):
        chosen["workflow_runner"] = UnsandboxedWorkflowRunner()
    elif modules:  # beside the order's own module (`pizzeria.worker.order_sandbox`)
        chosen["sandbox_passthrough"] = modules
    return chosen


async def serve(
    address: str, task_queue: str, options: dict[str, Any], encrypt: bool = True
) -> None:
    # As `pizzeria worker` builds it: the ledger and faults file of the data folder.
    # ... with the provider's round trips timed, when the benchmark asks (`.provider`).
    activities = served_activities(
        open_ledger(config.ledger_location(), initial_stock=BENCH_STOCK),
        payments=timed_gateway(payment_gateway()),
    )
    client = await connect(address, encrypt=encrypt)
    baseline = SimplePlugin(
        "pizzeria.ops.bench.baseline",
        workflows=[BaselineWorkflow, LocalBaselineWorkflow],
        activities=list(BASELINE_ACTIVITIES),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    worker = build_worker(client, activities, task_queue=task_queue, plugins=[baseline], **options)
    async with worker:
        print(f"{READY_LINE} {task_queue!r}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 1 with one line on stderr if the worker cannot run."""
    parser = argparse.ArgumentParser(prog="python -m pizzeria.ops.bench.worker")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--option", dest="options", action="append", default=[])
    parser.add_argument("--passthrough", action="append", default=[])
    parser.add_argument("--without", action="append", default=[], choices=list(tuning.PIECES))
    arguments = parser.parse_args(argv)
    try:
        chosen = worker_settings(arguments.options, arguments.passthrough, arguments.without)
        encrypt = tuning.is_on("encryption")
        asyncio.run(serve(arguments.address, arguments.task_queue, chosen, encrypt=encrypt))
    except Exception as error:
        print(f"bench worker: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # See pizzeria.cli.main: the SDK's threads can abort the interpreter while it finalizes.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
