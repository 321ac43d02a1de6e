"""The benchmark's worker process: the order workflow, its activities and the baseline.

Run as ``python -m pizzeria.ops.bench.worker`` by `pizzeria.ops.bench.stack`. It is built
with `pizzeria.worker.build_worker`, the same wiring as ``pizzeria worker``; the baseline
workflow is added with a plugin, so both share one worker, its pollers and its slots.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import click
from temporalio.plugin import SimplePlugin
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from pizzeria import config, tuning
from pizzeria.ledger import open_ledger
from pizzeria.ops.baseline import BASELINE_ACTIVITIES, BaselineWorkflow, LocalBaselineWorkflow
from pizzeria.temporal.connection import connect
from pizzeria.worker import READY_LINE, build_worker, served_activities

# A fresh ledger holds 1,000 portions of each ingredient: about 160 exercise orders.
BENCH_STOCK = 10**9


def parse_worker_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE an int, a float, true/false or none."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise click.BadParameter(f"{text!r}: expected NAME=VALUE", param_hint="--worker-option")
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    if lowered == "none":
        return name, None
    for number in (int, float):
        try:
            return name, number(raw)
        except ValueError:
            continue
    raise click.BadParameter(
        f"{text!r}: VALUE must be a number, true, false or none", param_hint="--worker-option"
    )


async def serve(
    address: str, task_queue: str, options: dict[str, Any], encrypt: bool = True
) -> None:
    # As `pizzeria worker` builds it: the ledger and faults file of the data folder.
    activities = served_activities(open_ledger(config.ledger_location(), initial_stock=BENCH_STOCK))
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


@click.command()
@click.option("--address", required=True)
@click.option("--task-queue", required=True)
@click.option("--option", "options", multiple=True)
@click.option("--passthrough", "passthrough", multiple=True)
@click.option("--without", "without", multiple=True, type=click.Choice(list(tuning.PIECES)))
def worker_main(
    address: str,
    task_queue: str,
    options: tuple[str, ...],
    passthrough: tuple[str, ...],
    without: tuple[str, ...],
) -> None:
    """The benchmark's worker process: the order workflow, its activities and the baseline."""
    chosen = dict(map(parse_worker_option, options))
    tuning.switch_off(set(without))  # before anything is built: see pizzeria.tuning
    if not tuning.is_on("sandbox"):
        chosen["workflow_runner"] = UnsandboxedWorkflowRunner()
    elif passthrough:
        chosen["workflow_runner"] = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*passthrough)
        )
    asyncio.run(serve(address, task_queue, chosen, encrypt=tuning.is_on("encryption")))


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
