"""The processes the tools and the tests start: free ports, a private dev server, workers.

``pizzeria chaos``, ``pizzeria bench`` and the end-to-end tests all run a Temporal dev server
of their own on 127.0.0.1 and worker processes beside it. They start them here, and stop
them here: only a process started by this program is ever signalled, by its PID.

The dev server itself (`pizzeria.temporal.devserver`) belongs to the service: ``pizzeria server``
and ``pizzeria demo`` run it for a user on the well-known ports. What is added here is what
only the tools need: free ports, a worker process that can be waited for, killed and
started again, and stopping many at once.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pizzeria.config import READY_LINE
from pizzeria.temporal.devserver import HOST, DevServer, stop_process

LOG_TAIL_CHARS = 2000


class WorkerProcessError(RuntimeError):
    """A worker process exited, or did not start polling in time."""


def free_port() -> int:
    """A port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pizzeria_command() -> list[str]:
    """The ``pizzeria`` command of this installation (its script beside this Python)."""
    beside = Path(sys.executable).parent / "pizzeria"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from pizzeria.cli import main; main()"]


def private_dev_server(history_file: Path | None = None, **options: Any) -> DevServer:
    """A dev server (not started yet) on free ports of 127.0.0.1, never on 7233.

    Without a history file it keeps everything in memory.
    """
    options.setdefault("port", free_port())
    options.setdefault("ui_port", free_port())
    return DevServer(history_file, **options)


@contextlib.contextmanager
def dev_server(history_file: Path | None = None, **options: Any) -> Iterator[DevServer]:
    """`private_dev_server`, running for the duration of the block."""
    server = private_dev_server(history_file, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class WorkerProcess:
    """One worker process this program started, its output appended to ``log``.

    Args:
        command: what to run, e.g. ``[*pizzeria_command(), "worker"]``.
        log: the file its stdout and stderr go to; `wait_until_polling` reads it.
        env: its environment (default: this process's).
        own_session: in a session of its own, a Ctrl-C in the terminal reaches only us,
            and we stop the worker ourselves, in order.
    """

    def __init__(
        self,
        command: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
    ) -> None:
        self.command = list(command)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where this start's output begins in the log

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.own_session,
            )

    def output(self) -> str:
        """What this start of the worker has written so far."""
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def raise_if_exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise WorkerProcessError(
                f"worker (pid {self.process.pid}) exited with code {self.process.returncode}:\n"
                + self.output()[-LOG_TAIL_CHARS:]
            )

    def wait_until_polling(self, timeout: float = 60.0) -> None:
        """Block until the worker says it polls its task queue; raise if it dies first."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.output():
            self.raise_if_exited()
            if time.monotonic() > deadline:
                raise WorkerProcessError(
                    f"worker (pid {self.pid}) did not poll within {timeout:.0f} s:\n"
                    + self.output()[-LOG_TAIL_CHARS:]
                )
            time.sleep(0.1)

    def kill(self) -> int:
        """SIGKILL: no goodbye, its activities die mid-flight. Returns the PID it had."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        return self.process.pid

    def stop(self, timeout: float = 15.0, signum: int = signal.SIGTERM) -> None:
        """Ask with ``signum``, SIGKILL after ``timeout``."""
        if self.process is not None:
            stop_process(self.process, timeout=timeout, signum=signum)


def stop_workers(
    workers: Iterable[WorkerProcess], grace: float = 20.0, signum: int = signal.SIGTERM
) -> None:
    """Ask every running worker at once, then SIGKILL whichever is left after ``grace``."""
    running = [worker.process for worker in workers if worker.running]
    for process in running:
        assert process is not None
        process.send_signal(signum)
    deadline = time.monotonic() + grace
    for process in running:
        assert process is not None
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def worker_process(
    env: Mapping[str, str], *args: str, log: Path | None = None
) -> Iterator[WorkerProcess]:
    """``pizzeria worker ARGS``, polling, for the duration of the block; stopped like Ctrl-C."""
    with contextlib.ExitStack() as cleanup:
        if log is None:
            folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="pizzeria-worker-"))
            log = Path(folder) / "worker.log"
        worker = WorkerProcess([*pizzeria_command(), "worker", *args], log, env)
        worker.start()
        cleanup.callback(worker.stop, 20.0, signal.SIGINT)
        worker.wait_until_polling()
        yield worker
