"""What every command shares: its consoles, one-line errors, opening things (its options
are `pizzeria.cli.options`).

Text that comes from outside (an order, a history, the ledger, an error message) is
printed through `shown` (or `cell`, for a table): text.for_terminal, the one escaping
function, so a terminal is never sent an escape sequence or a bidi override to act on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn, TypeVar

from rich.console import Console
from rich.table import Column
from rich.text import Text
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from pizzeria import config
from pizzeria.client.outcomes import on_this_machine
from pizzeria.ledger import Ledger, open_ledger
from pizzeria.order_fields import MAX_TEXT
from pizzeria.temporal.codec import CodecKeyError
from pizzeria.temporal.connection import (
    NO_TLS_THERE,
    NOT_TEMPORAL_THERE,
    connect,
    connect_config,
    connection_failure,
)
from pizzeria.text import TextRefused, check_text, for_terminal


class _Console(Console):
    """Rich's console, whose ``print_json`` writes every non-ASCII character as a JSON
    escape: Rich's own default (``ensure_ascii=False``) re-renders ``\\u202e``, ``\\u2028``
    or a C1 control (``\\u009b``, CSI) from a history as the raw character, which a terminal
    acts on. The JSON stays the same JSON."""

    def print_json(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ensure_ascii", True)
        super().print_json(*args, **kwargs)

    def on_broken_pipe(self) -> None:
        """Its reader left early (`pizzeria order | head -1`): what follows goes nowhere,
        and the command goes on to its own exit code (Rich's default exits 1 here, which
        would say a completed order failed)."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.file.fileno())


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")


class UserError(Exception):
    """A mistake in what the user asked for: one line, exit code 2."""


#: Text from outside, as a terminal may be shown it (control and format characters escaped).
shown = for_terminal


def cell(value: object) -> Text:
    """Text from outside as a table cell or a line: escaped, and never read as Rich markup
    (``[link=...]`` in a cell would otherwise become a terminal hyperlink)."""
    return Text(for_terminal(value))


def order_column(numbers: Iterable[str], header: str = "order") -> Column:
    """A table's column of order numbers, never cut short (a number is there to be copied,
    also when the table is printed to a file or a pipe, 80 columns wide)."""
    widest = max((len(for_terminal(number)) for number in numbers), default=len(header))
    return Column(header, no_wrap=True, min_width=min(widest, 40))


def checked_text(option: str, value: str) -> str:
    """A free-text option (--reason, --resolve), refused as the API and the workflow refuse
    it: one line and exit 2, before anything is sent."""
    if len(value) > MAX_TEXT:  # the API's limit for a reason or a note
        raise UserError(f"{option} is longer than {MAX_TEXT} characters")
    try:
        return check_text(option, value)
    except TextRefused as refused:
        raise UserError(str(refused)) from None


def error_line(message: str) -> None:
    err.print(f"error: {for_terminal(message)}", markup=False, emoji=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    error_line(message)
    raise SystemExit(code)


def run(coroutine: Awaitable[T]) -> T:
    """Run a command's coroutine; a Ctrl-C is a `KeyboardInterrupt` (one line, 130) even
    when what it interrupted said so in its own words (the SDK turns an Update's
    cancellation into a `WorkflowUpdateRPCTimeoutOrCancelledError`)."""

    async def main() -> T:
        try:
            return await coroutine
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from None  # asyncio.run: KeyboardInterrupt
            raise

    return asyncio.run(main())


async def client_or_fail(
    address: str | None = None,
    runtime: Runtime | None = None,
    encrypt: bool = True,
    *,
    converter: DataConverter | None = None,
    advice: str | None = "start it with `pizzeria server`",
    create_key: bool = True,
    wait_for_start: float = 0.0,
) -> Client:
    """A client, else a `ConnectionError` naming the address (one line for `main`).

    Given ``wait_for_start`` seconds, a server on this machine that refuses the connection
    is asked again (every half second, saying so once on a terminal's stderr) for that
    long: one starting in the next terminal (`pizzeria server`) opens its port a few
    seconds after.
    """
    deadline = asyncio.get_running_loop().time() + wait_for_start
    said_waiting = False
    while True:
        try:
            return await connect(
                address,
                runtime=runtime,
                encrypt=encrypt,
                converter=converter,
                create_key=create_key,
            )
        except CodecKeyError:  # a RuntimeError too, but the key's fault, not the server's
            raise
        except RuntimeError as error:
            target = connect_config(address)["target_host"]
            reason = connection_failure(str(error))
            starting = reason == "connection refused" and on_this_machine(target)
            if starting and asyncio.get_running_loop().time() < deadline:
                if not said_waiting and err.is_terminal:  # a script's stderr stays one line
                    err.print(f"Waiting for Temporal at {target} to answer...", markup=False)
                    said_waiting = True
                await asyncio.sleep(0.5)
                continue
            if reason == NO_TLS_THERE:  # the server is up: starting one is no advice
                advice = "for a server without TLS (the dev server), set TEMPORAL_TLS=false"
            elif reason == NOT_TEMPORAL_THERE:  # the port is another's: nor here
                advice = None
            raise ConnectionError(
                f"cannot reach Temporal at {target} ({reason})" + (f"; {advice}" if advice else "")
            ) from None


def ledger_at(location: str | None, *, create: bool = False, read_only: bool = False) -> Ledger:
    """The ledger given, else the configured one; a `LedgerError` (none there, unreachable,
    too new) is one line for `main`. Only with ``create`` (the worker, a delivery of stock)
    is a missing ledger created: a command that reads or corrects orders creates nothing,
    and never puts a ledger's tables into a file that holds none (Temporal's database)."""
    where = location or config.ledger_location()
    if read_only:
        return open_ledger(where, read_only=True)
    if not create:
        open_ledger(where, read_only=True).close()  # `LedgerNotFound`, nothing made
    return open_ledger(where)


def run_with_ledger(location: str | None, work: Callable[[Ledger], Awaitable[T]]) -> T:
    """Run ``work`` on the ledger given (else the configured one, as `ledger_at` opens
    it, creating nothing), closed afterwards whatever happens."""
    book = ledger_at(location)
    try:
        return run(work(book))
    finally:
        book.close()


def stop_on_sigterm() -> None:
    """Treat SIGTERM, and SIGHUP (its terminal closed) unless it is ignored (``nohup``),
    like Ctrl-C, so `finally` blocks stop what this command started: processes started in
    sessions of their own would outlive it otherwise."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, interrupt)
