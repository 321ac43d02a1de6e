"""The ``pizzeria check`` command.

Exit codes: 0 no violation, 1 violations found, 2 the check could not be made (no ledger,
a locked or unusable one, no server, payloads it cannot decrypt). The check only reads: the
ledger is opened read-only and no codec key file is created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from typing import NoReturn

import click
from rich.console import Console
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from pizzeria import config
from pizzeria.ledger import Ledger, LedgerError, open_ledger
from pizzeria.ops.check.reconcile import check_orders
from pizzeria.ops.check.records import CannotCheck
from pizzeria.ops.check.report import CheckReport, print_check_report
from pizzeria.temporal.codec import CodecKeyError, EncryptionCodec, key_file, load_keys
from pizzeria.temporal.connection import connect, connect_config

CANNOT_CHECK = 2


def reading_converter() -> DataConverter:
    """The codec with the keys there are, creating none: without a key, encrypted payloads
    stay unreadable (the check then says so) and plain ones read as they are."""
    if os.environ.get("PIZZERIA_CODEC_KEY") or key_file().exists():
        keys = load_keys(create=False)
    else:
        keys = [("no key", os.urandom(32))]  # names no key id a payload can carry
    codec = EncryptionCodec(keys, encrypt=False)
    return dataclasses.replace(DataConverter.default, payload_codec=codec)


async def connect_or_fail(address: str | None) -> Client:
    try:
        return await connect(address, converter=reading_converter())
    except RuntimeError as error:
        reason = "connection refused" if "refused" in str(error).lower() else str(error)[:120]
        raise ConnectionError(
            f"cannot reach Temporal at {connect_config(address)['target_host']} ({reason})"
        ) from None


async def run_check(
    address: str | None, ledger: Ledger, *, require_closed: bool = False, progress: bool = False
) -> CheckReport:
    try:
        client = await connect_or_fail(address)
        return await check_orders(
            client,
            ledger,
            require_closed=require_closed,
            progress=say_progress if progress else None,
        )
    finally:
        ledger.close()


def say_progress(done: int, total: int) -> None:
    click.echo(f"check: read {done} of {total} order histories", err=True)


def cannot_check(message: str) -> NoReturn:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    raise SystemExit(CANNOT_CHECK)


@click.command()
@click.option("--address", help="Temporal address [default: SDK env config, else localhost:7233]")
@click.option(
    "--ledger",
    "ledger_location",
    metavar="FILE|URL",
    help="The ledger: a SQLite file or a postgresql:// URL "
    "[default: $PIZZERIA_LEDGER, else .pizzeria/ledger.db]",
)
@click.option("--closed", "require_closed", is_flag=True, help="An order still open is a violation")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
def check(
    address: str | None, ledger_location: str | None, require_closed: bool, as_json: bool
) -> None:
    """Compare the ledger with Temporal's record of every order (what each was asked, how it
    ended). Exit 1 on any violation, 2 when the check cannot be made."""
    try:
        ledger = open_ledger(ledger_location or config.ledger_location(), read_only=True)
        report = asyncio.run(
            run_check(address, ledger, require_closed=require_closed, progress=True)
        )
    except (LedgerError, ConnectionError, CannotCheck, CodecKeyError) as error:
        cannot_check(str(error))
    except RPCError as error:
        cannot_check(f"Temporal failed while the check read it: {error}")
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        print_check_report(report, Console(highlight=False, soft_wrap=True))
    if not report.ok:
        raise SystemExit(1)
