"""A real stack for end-to-end tests: a dev server and `pizzeria worker` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pizzeria.devserver import DevServer, stop_process

PIZZERIA = str(Path(sys.executable).parent / "pizzeria")
TEMPORAL = str(Path(sys.executable).parent / "temporal")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_env(data: Path, **extra: str) -> dict[str, str]:
    """The environment of the CLI against a test stack: own data folder, no waits."""
    return {
        **os.environ,
        "PIZZERIA_DATA_DIR": str(data),
        "PIZZERIA_DRIVER_SECONDS": "0",
        "PIZZERIA_DRIVER_PROBABILITY": "1",
        **extra,
    }


@contextmanager
def worker_process(env: dict[str, str], *args: str, log: Path | None = None) -> Iterator[None]:
    """`pizzeria worker ARGS` for the duration of the block, stopped like Ctrl-C would."""
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    worker = subprocess.Popen(
        [PIZZERIA, "worker", *args], env=env, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        yield
    finally:
        stop_process(worker, timeout=20, signum=signal.SIGINT)
        if log:
            output.close()  # type: ignore[union-attr]


@contextmanager
def dev_server(**options: object) -> Iterator[DevServer]:
    """A dev server on free ports of 127.0.0.1 (in memory unless given a history file)."""
    options.setdefault("port", free_port())
    options.setdefault("ui_port", free_port())
    server = DevServer(options.pop("history_file", None), **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
