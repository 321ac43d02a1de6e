"""The ``pizzeria check`` command: the checks of `pizzeria.ops.check`, and their report.

Exit codes: 0 no violation, 1 violations found, 2 the check could not be made (no ledger,
a locked or unusable one, no server, payloads it cannot decrypt, a payment provider that
does not answer). The check only reads: the ledger is opened read-only, no codec key file
is created, and the payment provider is only listed.
"""

from __future__ import annotations

import json
from typing import NoReturn

import click
from temporalio.service import RPCError

from pizzeria.cli.common import client_or_fail, fail, ledger_at, out, run
from pizzeria.cli.options import address_option, flag_option, json_option, ledger_option
from pizzeria.ledger import Ledger, LedgerError
from pizzeria.ops.check.provider import check_gateway
from pizzeria.ops.check.reading import reading_converter
from pizzeria.ops.check.reconcile import check_orders
from pizzeria.ops.check.records import CannotCheck
from pizzeria.ops.check.report import CheckReport, print_check_report
from pizzeria.temporal.codec import CodecKeyError

CANNOT_CHECK = 2


async def run_check(
    address: str | None,
    ledger: Ledger,
    *,
    require_closed: bool,
    payments_url: str | None = None,
    whole_account: bool = False,
) -> CheckReport:
    """Temporal's record of every order against the ledger and the payment provider's
    records; the ledger is closed afterwards."""
    try:
        gateway = check_gateway(payments_url)
        try:
            client = await client_or_fail(address, converter=reading_converter(), advice=None)
            return await check_orders(
                client,
                ledger,
                require_closed=require_closed,
                progress=say_progress,
                payments=gateway,
                whole_account=whole_account,
            )
        finally:
            await gateway.close()
    finally:
        ledger.close()


def say_progress(done: int, total: int) -> None:
    click.echo(f"check: read {done} of {total} order histories", err=True)


def cannot_check(message: str, as_json: bool = False) -> NoReturn:
    """Exit 2 with one line; with ``--json``, also an object a script can read (as
    `pizzeria doctor --json` gives one when it fails)."""
    said = " ".join(message.split())
    if as_json:
        click.echo(json.dumps({"ok": False, "checked": False, "error": said}))
    fail(said, CANNOT_CHECK)


@click.command()
@address_option
@ledger_option
@flag_option("--closed", "require_closed", help="An order still open is a violation")
@click.option(
    "--payments",
    "payments_url",
    metavar="URL",
    help="The payment provider (a Stripe-compatible API) [default: as the workers find it: "
    "PIZZERIA_PAYMENTS_URL, STRIPE_API_KEY alone for Stripe, else the data folder's "
    "local provider]",
)
@flag_option(
    "--whole-account",
    help="Every payment at the provider is this deployment's: one naming an order neither "
    "Temporal nor the ledger knows is a violation, not a warning",
)
@json_option
def check(
    address: str | None,
    ledger_location: str | None,
    require_closed: bool,
    payments_url: str | None,
    whole_account: bool,
    as_json: bool,
) -> None:
    """Compare the ledger and the payment provider's records with Temporal's record of
    every order (what each was asked, how it ended). Exit 1 on any violation, 2 when the
    check cannot be made."""
    try:
        ledger = ledger_at(ledger_location, read_only=True)
        report = run(
            run_check(
                address,
                ledger,
                require_closed=require_closed,
                payments_url=payments_url,
                whole_account=whole_account,
            )
        )
    except (LedgerError, ConnectionError, CannotCheck, CodecKeyError) as error:
        cannot_check(str(error), as_json)
    except RPCError as error:
        cannot_check(f"Temporal failed while the check read it: {error}", as_json)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        print_check_report(report, out)
    if not report.ok:
        raise SystemExit(1)
