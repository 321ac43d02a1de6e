"""What every command shares: its consoles, its options, one-line errors, opening things."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

import click
from rich.console import Console
from temporalio.client import Client
from temporalio.runtime import Runtime

from pizzeria import config
from pizzeria.ledger import Ledger, open_ledger
from pizzeria.temporal.connection import connect, connect_config

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

address_option = click.option(
    "--address", help="Temporal address [default: SDK env config, else localhost:7233]"
)
ledger_option = click.option(
    "--ledger",
    "ledger_location",
    metavar="FILE|URL",
    help="The ledger: a SQLite file or a postgresql:// URL "
    "[default: $PIZZERIA_LEDGER, else .pizzeria/ledger.db]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object")


class UserError(Exception):
    """A mistake in what the user asked for: one line, exit code 2."""


def error_line(message: str) -> None:
    err.print(f"error: {message}", markup=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    error_line(message)
    raise SystemExit(code)


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


async def client_or_fail(
    address: str | None = None, runtime: Runtime | None = None, encrypt: bool = True
) -> Client:
    try:
        return await connect(address, runtime=runtime, encrypt=encrypt)
    except RuntimeError as error:
        target = connect_config(address)["target_host"]
        reason = "connection refused" if "refused" in str(error).lower() else str(error)[:120]
        raise ConnectionError(
            f"cannot reach Temporal at {target} ({reason}); start it with `pizzeria server`"
        ) from None


def ledger_at(location: str | None) -> Ledger:
    """The ledger given, else the configured one (created when missing); a `LedgerError`
    (unreachable, too new) is one line for `main`."""
    return open_ledger(location or config.ledger_location())


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so `finally` blocks stop what this command started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
