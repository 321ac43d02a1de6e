"""A real stack for end-to-end tests: a dev server and a `pizzeria worker` process.

The processes are started and stopped by `pizzeria.ops.processes`, as chaos and bench
start theirs. Most test modules take the `stack` fixture of conftest.py (one per module)
and tune it by overriding the `stack_options` fixture.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from pizzeria.ops.processes import dev_server, free_port, worker_process
from pizzeria.payments import process
from pizzeria.payments.stripe_gateway import URL_VARIABLE

_provider: process.ProviderProcess | None = None


def payments_provider() -> process.ProviderProcess:
    """The test session's local payment provider (`pizzeria payments` on a free port),
    started on first use and stopped at the session's end (conftest.py) or exit. Every
    test worker moves money through it: `stack_env` gives workers its URL."""
    global _provider
    if _provider is None or not _provider.running:
        folder = Path(tempfile.mkdtemp(prefix="pizzeria-test-payments-"))
        _provider = process.start(folder / "payments.db", faults_file=provider_faults_file(folder))
        atexit.register(_stop_and_remove, _provider, folder)
    return _provider


def _stop_and_remove(provider: process.ProviderProcess, folder: Path) -> None:
    """At exit: the provider stopped, then its folder (data, log, faults file) removed,
    so that a test session leaves nothing in the temporary folder."""
    provider.stop()
    shutil.rmtree(folder, ignore_errors=True)


def provider_faults_file(folder: Path | None = None) -> Path:
    """The faults file the session's provider reads (`pizzeria.payments.provider.faults`)."""
    if folder is None:
        folder = payments_provider().log_file.parent
    return folder / "provider-faults.json"


def stop_payments_provider() -> None:
    if _provider is not None:
        _provider.stop()


class Stack(TypedDict):
    env: dict[str, str]  # the CLI's environment against this stack (the provider's URL too)
    data: Path  # its data folder: ledger, faults file, history file, worker.log
    address: str
    metrics_port: int | None


@dataclass(frozen=True)
class StackOptions:
    history: bool = True  # the server keeps its history in data/temporal.db
    worker_args: tuple[str, ...] = ()
    metrics: bool = False  # the worker serves metrics on a free port
    env: Mapping[str, str | None] = field(default_factory=dict)  # None: unset


def stack_env(data: Path, **extra: str | None) -> dict[str, str]:
    """The CLI's environment against a test stack: its own data folder, no waits, the
    session's payment provider, and none of the user's Temporal, pizzeria or Stripe
    settings. An ``extra`` of None unsets a variable."""
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TEMPORAL_", "PIZZERIA_", "STRIPE_"))
        },
        "TEMPORAL_CONFIG_FILE": str(data / "no-temporal-profile.toml"),
        "PIZZERIA_DATA_DIR": str(data),
        "PIZZERIA_DRIVER_SECONDS": "0",
        "PIZZERIA_DRIVER_PROBABILITY": "1",
    }
    if URL_VARIABLE not in extra:  # money moves through the session's provider
        env[URL_VARIABLE] = payments_provider().url
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@contextmanager
def open_stack(
    data: Path, options: StackOptions | None = None, **server_options: Any
) -> Iterator[Stack]:
    """A headless dev server on free ports and a worker polling it, for the block."""
    options = options or StackOptions()
    server_options.setdefault("headless", True)
    history = data / "temporal.db" if options.history else None
    metrics_port = free_port() if options.metrics else None
    worker_args = [*options.worker_args]
    if metrics_port is not None:
        worker_args += ["--metrics-port", str(metrics_port)]
    with dev_server(history, **server_options) as server:
        env = stack_env(data, TEMPORAL_ADDRESS=server.address, **options.env)
        with worker_process(env, *worker_args, log=data / "worker.log"):
            yield Stack(env=env, data=data, address=server.address, metrics_port=metrics_port)
