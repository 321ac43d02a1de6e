"""The dev server, the payment provider and the workers one chaos run started: the only
processes it signals."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pizzeria.config import DEFAULT_GRACEFUL_SHUTDOWN_SECONDS
from pizzeria.ops.processes import (
    WorkerProcess,
    pizzeria_command,
    private_dev_server,
    stop_workers,
)
from pizzeria.payments import process as payments
from pizzeria.private import write_private_text
from pizzeria.temporal.devserver import DevServerError

PROVIDER_PORT_ATTEMPTS = 10


class FleetStopped(RuntimeError):
    """The run is stopping: nothing is started again (a monkey's restart in flight ends)."""


class ChaosFleet:
    """A dev server with its history in ``data_dir``, a local payment provider with its
    payments there too, and ``workers`` `pizzeria worker`s."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        self.data_dir = data_dir
        self.provider: payments.ProviderProcess | None = None
        self.server = private_dev_server(
            data_dir / "temporal.db", log_file=data_dir / "server.log", headless=True
        )
        # Each in a session of its own: a Ctrl-C in the terminal reaches chaos, which stops
        # the workers itself, in order.
        self.workers = [
            WorkerProcess(
                [*pizzeria_command(), "worker"], data_dir / f"worker-{index}.log", own_session=True
            )
            for index in range(workers)
        ]
        self.resting: set[int] = set()  # workers killed on purpose, not yet started again
        self.unexpected_exits = 0
        self.stopping = False  # set by stop_all: from then on nothing starts
        # Whether a worker rests, and its start, change together: a rolling restart starts
        # its worker on a thread while the supervisor looks for dead ones on the loop, and
        # between the two a worker not resting and not yet started looked dead (it was
        # started twice, and the first one was left running after the run).
        self._starting = threading.RLock()

    def _refuse_if_stopping(self) -> None:
        if self.stopping:
            raise FleetStopped("the chaos run is stopping")

    def start_server(self) -> None:
        self._refuse_if_stopping()
        for attempt in range(10):  # the port may take a moment to be free again
            try:
                self.server.start()
                return
            except DevServerError:
                if attempt == 9:
                    raise
                time.sleep(0.5)

    @property
    def provider_faults_file(self) -> Path:
        """The faults the payment provider meets (re-read whenever it changes)."""
        return self.data_dir / "provider-faults.txt"

    def start_provider(self, faults: str = "") -> str:
        """The payment provider of this run (a free port, in a session of its own), meeting
        ``faults`` (`pizzeria.payments.provider.faults`); its URL."""
        self.set_provider_faults(faults)
        self.provider = self._provider_on(port=0)
        return self.provider.url

    def _provider_on(self, port: int) -> payments.ProviderProcess:
        self._refuse_if_stopping()
        return payments.start(
            self.data_dir / "payments.db",
            port=port,
            faults_file=self.provider_faults_file,
            log_file=self.data_dir / "payments.log",
            own_session=True,
        )

    def set_provider_faults(self, faults: str) -> None:
        """Replace the provider's faults (a new file: the provider sees it at once)."""
        write_private_text(self.provider_faults_file, faults)

    def kill_provider(self) -> int:
        """SIGKILL: the requests in flight die unanswered. Its PID."""
        assert self.provider is not None
        pid = self.provider.pid
        self.provider.kill()
        return pid

    def restart_provider(self) -> None:
        """The provider again, on the port the workers know (its URL is in their
        environment), with the same data file and faults."""
        assert self.provider is not None
        url = self.provider.url
        port = int(url.rsplit(":", 1)[1])
        for attempt in range(PROVIDER_PORT_ATTEMPTS):
            started = self._provider_on(port)
            if started.url == url:
                self.provider = started
                return
            started.stop()  # the port was taken meanwhile: it listened elsewhere
            if attempt < PROVIDER_PORT_ATTEMPTS - 1:
                time.sleep(0.5)
        raise RuntimeError(f"the payment provider could not listen on {url} again")

    def server_died(self) -> bool:
        """The dev server exited though the run did not stop it (its exit reaped)."""
        process = self.server.process
        return process is not None and process.poll() is not None

    def provider_died(self) -> bool:
        """The provider exited though nobody killed it."""
        return self.provider is not None and not self.provider.running

    def start_workers(self) -> None:
        """Every worker, and back once each of them polls."""
        for index in range(len(self.workers)):
            self.start_worker(index)
        for worker in self.workers:
            worker.wait_until_polling()

    def start_worker(self, index: int) -> None:
        """Start worker ``index`` again, unless it is running (it is never started twice)."""
        with self._starting:
            self._refuse_if_stopping()
            self.resting.discard(index)
            if not self.workers[index].running:
                self.workers[index].start()

    def _rest(self, index: int) -> None:
        with self._starting:
            self.resting.add(index)

    def restart_worker_gracefully(self, index: int) -> int:
        """SIGTERM, wait for it to finish its steps and exit, start it again, wait until it
        polls: one step of a rolling restart. Its old PID."""
        self._rest(index)
        worker = self.workers[index]
        pid = worker.pid
        worker.stop(timeout=DEFAULT_GRACEFUL_SHUTDOWN_SECONDS + 10)
        self.start_worker(index)
        worker.wait_until_polling()
        return pid

    def kill_worker(self, index: int) -> int:
        """SIGKILL, its activities die mid-flight; started again by the caller. Its PID."""
        self._rest(index)
        return self.workers[index].kill()

    def restart_dead_workers(self) -> None:
        for index, worker in enumerate(self.workers):
            with self._starting:
                if index in self.resting or worker.process is None or worker.running:
                    continue
                self.unexpected_exits += 1
                self.start_worker(index)

    def stop_workers(self, grace: float = 20.0) -> None:
        """SIGTERM first (a late write in flight still lands), SIGKILL after ``grace``."""
        stop_workers(self.workers, grace)

    def stop_all(self, grace: float = 20.0) -> None:
        """Every process of the run stopped, and none started again (`FleetStopped`); a
        second call stops what a restart in flight started meanwhile."""
        with self._starting:  # a start under way ends first, and is stopped below
            self.stopping = True
        try:
            self.stop_workers(grace)
        finally:
            self.server.stop()
            if self.provider is not None:
                self.provider.stop()
