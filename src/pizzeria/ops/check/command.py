"""The ``pizzeria check`` command."""

from __future__ import annotations

import asyncio
import json

import click
from rich.console import Console
from temporalio.client import Client

from pizzeria import config
from pizzeria.ledger import Ledger, LedgerNotFound, open_ledger
from pizzeria.ops.check.reconcile import check_orders
from pizzeria.ops.check.report import CheckReport, print_check_report
from pizzeria.worker import connect


async def connect_or_fail(address: str | None) -> Client:
    try:
        return await connect(address)
    except RuntimeError as error:
        reason = "connection refused" if "refused" in str(error).lower() else str(error)[:120]
        raise ConnectionError(
            f"cannot reach Temporal at {address or 'the configured address'} ({reason})"
        ) from None


async def run_check(
    address: str | None, ledger: Ledger, *, require_closed: bool = False
) -> CheckReport:
    client = await connect_or_fail(address)
    try:
        return await check_orders(client, ledger, require_closed=require_closed)
    finally:
        ledger.close()


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
    """Compare the ledger with Temporal's record of every order; exit 1 on any violation."""
    try:
        ledger = open_ledger(ledger_location or config.ledger_location(), read_only=True)
    except LedgerNotFound as error:
        raise click.UsageError(str(error)) from None
    report = asyncio.run(run_check(address, ledger, require_closed=require_closed))
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        print_check_report(report, Console(highlight=False, soft_wrap=True))
    if not report.ok:
        raise SystemExit(1)
