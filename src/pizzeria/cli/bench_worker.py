"""The benchmark's worker process, run as ``python -m pizzeria.cli.bench_worker``.

`pizzeria.ops.bench.stack` starts it (never a user): the order workflow, its activities and
the bare baseline on one worker (`pizzeria.ops.bench.worker`).
"""

from __future__ import annotations

import asyncio
import os
import sys

import click

from pizzeria import tuning
from pizzeria.ops.bench.worker import serve, worker_settings


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
    chosen = worker_settings(options, passthrough, without)
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
