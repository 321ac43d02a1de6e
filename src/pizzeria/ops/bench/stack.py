"""The stack one baseline/saga pair runs on: a fresh dev server and worker processes."""

from __future__ import annotations

import asyncio
import compileall
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

import pizzeria
from pizzeria.models import TASK_QUEUE
from pizzeria.ops.bench.cases import SQLITE, WORKER_ENVIRONMENT, Settings
from pizzeria.ops.bench.ledgers import stack_ledger
from pizzeria.ops.bench.provider import CALLS_FILE, CALLS_VARIABLE, CallLog
from pizzeria.ops.bench.sampling import cpu_seconds, rss_bytes
from pizzeria.ops.processes import WorkerProcess, dev_server, stop_workers
from pizzeria.payments import process as payments
from pizzeria.temporal.connection import connect
from pizzeria.temporal.devserver import DevServer


@dataclass
class Stack:
    server: DevServer
    workers: list[WorkerProcess]
    data_dir: Path
    task_queue: str
    ledger: str  # the workers' PIZZERIA_LEDGER
    payments_url: str  # the stack's local payment provider, the workers' PIZZERIA_PAYMENTS_URL
    provider_calls: CallLog  # each call the workers made to it, timed (see .provider)
    provider_pid: int  # its process: on the same cores as the server's

    def provider_cpu(self) -> float:
        """The payment provider's CPU seconds so far."""
        return cpu_seconds(self.provider_pid)

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(worker.pid) for worker in self.workers)

    def worker_rss(self) -> int:
        return sum(rss_bytes(worker.pid) for worker in self.workers)

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.raise_if_exited()


@asynccontextmanager
async def running_stack(
    workers: int,
    worker_options: Sequence[str],
    passthrough: Sequence[str] = (),
    without: Sequence[str] = (),
    ledger: str = SQLITE,
    task_queue: str | None = None,
    server_options: Sequence[str] = (),
) -> AsyncIterator[tuple[Stack, Client]]:
    """A fresh in-memory dev server, a client and ``workers`` worker processes polling it,
    on a fresh ledger (`pizzeria.ops.bench.ledgers.stack_ledger`), moving money through a
    local payment provider of the stack's own.

    The client comes from `pizzeria.temporal.connection.connect`, as ``pizzeria order``'s
    does, so the benchmark uses the same data converter as the worker; it connects before
    the workers start, so that whatever it sets up on first use is there before they look for it.
    ``without`` names the optional pieces (`pizzeria.tuning`) the workers switch off; without
    encryption the client sends plain payloads too. The workers poll ``task_queue``, else
    one of the stack's own (the API of ``--peer`` places orders on the order's own queue).
    ``server_options`` are dynamic config values for the dev server, after its usual ones.
    """
    with (
        tempfile.TemporaryDirectory(prefix="pizzeria-bench-") as folder,
        stack_ledger(ledger, Path(folder)) as location,
        dev_server(
            None,
            log_file=Path(folder) / "server.log",
            headless=True,
            dynamic_config=server_options,
        ) as server,
        payments.running(Path(folder) / "payments.db") as provider,
    ):
        data_dir = Path(folder)
        queue = task_queue or f"{TASK_QUEUE}-bench-{uuid.uuid4().hex[:8]}"
        calls = CallLog(data_dir / CALLS_FILE)
        stack = Stack(server, [], data_dir, queue, location, provider.url, calls, provider.pid)
        try:
            client = await connect(server.address, encrypt="encryption" not in without)
            command = worker_command(stack, worker_options, passthrough, without)
            for number in range(workers):
                log = data_dir / f"worker-{number}.log"
                environment = worker_environment(data_dir, location, stack.payments_url)
                stack.workers.append(WorkerProcess(command, log, environment))
                stack.workers[-1].start()
            for worker in stack.workers:
                await asyncio.to_thread(worker.wait_until_polling)
            yield stack, client
        finally:
            stop_workers(stack.workers, grace=15.0)


def stack_for(
    settings: Settings, workers: int = 1, **options: Any
) -> AbstractAsyncContextManager[tuple[Stack, Client]]:
    """`running_stack` with the run's worker options, sandbox passthrough and dev server
    options; ``options`` are running_stack's others (``without``, ``ledger``...)."""
    return running_stack(
        workers,
        settings.worker_options,
        settings.sandbox_passthrough,
        server_options=settings.server_options,
        **options,
    )


def worker_command(
    stack: Stack,
    worker_options: Sequence[str],
    passthrough: Sequence[str],
    without: Sequence[str] = (),
) -> list[str]:
    """The benchmark's own worker process (`pizzeria.ops.bench.worker`), against this stack."""
    command = [
        sys.executable,
        "-m",
        "pizzeria.ops.bench.worker",
        "--address",
        stack.server.address,
        "--task-queue",
        stack.task_queue,
    ]
    for option in worker_options:
        command += ["--option", option]
    for module in passthrough:
        command += ["--passthrough", module]
    for piece in without:
        command += ["--without", piece]
    return command


def worker_environment(data_dir: Path, ledger: str, payments_url: str) -> dict[str, str]:
    # A ledger, a faults file and a payment provider of its own; everything else (the data
    # folder, and with it whatever key the data converter uses) as the user's own worker has.
    return {
        **{k: v for k, v in os.environ.items() if k != "STRIPE_API_KEY"},
        **WORKER_ENVIRONMENT,
        "PIZZERIA_LEDGER": ledger,
        "PIZZERIA_FAULTS_FILE": str(data_dir / "faults.json"),
        "PIZZERIA_PAYMENTS_URL": payments_url,
        CALLS_VARIABLE: str(data_dir / CALLS_FILE),
    }


def compile_package() -> None:
    """Write the package's bytecode files, as ``pip install`` does, when they are missing.

    The workflow sandbox imports the workflow's module (and its package) afresh for every
    new workflow. With ``PYTHONDONTWRITEBYTECODE`` set (as on our machines) and an editable
    install, no ``.pyc`` exists, so each of those imports compiles the source again: about
    9 ms of worker CPU per order here, which no deployed worker pays. A package that cannot
    be written to is left as it is.
    """
    compileall.compile_dir(Path(pizzeria.__file__).parent, quiet=2)
