"""``pizzeria refund``: staff give part of a completed order's money back, once per key."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import click

from pizzeria.cli.common import (
    UserError,
    client_or_fail,
    ledger_at,
    out,
    run_with_ledger,
    shown,
)
from pizzeria.cli.options import (
    address_option,
    json_option,
    ledger_option,
    order_number_argument,
    run_option,
)
from pizzeria.ledger import Ledger, LedgerError
from pizzeria.ledger.refunds import staff_refunds
from pizzeria.models import dollars, order_ref, workflow_id_for
from pizzeria.refunds import (
    RefundError,
    RefundUnanswered,
    StaffRefund,
    check_request,
    parse_amount,
    refund_order,
    staff_gateway,
)


# An amount of "-5" is an amount the user got wrong, not an option: parse_amount says so.
@click.command(context_settings={"ignore_unknown_options": True})
@order_number_argument
@click.argument("amount")
@click.option("--reason", required=True, help="Why the money goes back (kept by the provider)")
@click.option(
    "--key",
    help="The refund's key: the same key again never refunds twice (a retry after an error "
    "must give it) [default: a new key, printed]",
)
@run_option(
    "Refund this run of the order number (an order placed again has a run per placing: "
    "`pizzeria ledger --json` shows each run's whole id) [default: its latest run]"
)
@address_option
@ledger_option
@json_option
def refund(
    order_number: str,
    amount: str,
    reason: str,
    key: str | None,
    run_id: str | None,
    address: str | None,
    ledger_location: str | None,
    as_json: bool,
) -> None:
    """Refund AMOUNT of a completed order (or of one ended from outside after its bill):
    whole cents (500) or dollars with two decimals (5.00 or $5.00), at most what its bill
    captured minus what went back already.

    The refund goes through the payment provider (the workers' own: PIZZERIA_PAYMENTS_URL,
    STRIPE_API_KEY, else the data folder's) and is recorded in the ledger under its key.
    """
    key = key if key is not None else f"refund-{uuid.uuid4().hex[:12]}"
    try:
        cents = parse_amount(amount)
        check_request(cents, reason, key)  # before anything is opened or asked (--run: its own)
    except RefundError as error:
        raise UserError(str(error)) from None

    async def refunded(book: Ledger) -> StaffRefund:
        gateway = staff_gateway()
        try:
            client = await client_or_fail(address)
            return await refund_order(
                client, book, gateway, order_number, cents, reason, key, run_id=run_id
            )
        finally:
            await gateway.close()

    try:
        made = run_with_ledger(ledger_location, refunded)
    except RefundUnanswered as error:
        raise ConnectionError(f"{error} (--key {key})") from None
    except RefundError as error:
        raise UserError(str(error)) from None
    if as_json:
        out.print_json(json.dumps(made.to_json()))
        return
    print_refund(made)


def print_refund(made: StaffRefund) -> None:
    number = shown(made.order_number)
    if made.replayed:
        line = (
            f"Order {number}: the refund with key {shown(made.key)} was already made: "
            f"{dollars(made.amount)} (refund {made.refund_id}); nothing moved now"
        )
    else:
        line = f"Order {number}: refunded {dollars(made.amount)} (refund {made.refund_id})"
    out.print(line, markup=False)
    unanswered = (
        f" ({dollars(made.unanswered)} of it asked, the provider's answer not recorded: "
        "retry those with their keys)"
        if made.unanswered
        else ""
    )
    out.print(
        f"  captured {dollars(made.captured)}, refunded {dollars(made.refunded)} in all"
        f"{unanswered}, {dollars(made.left)} left; key {shown(made.key)}",
        markup=False,
    )


def refunds_of_run(location: str | None, order_number: str, run_id: str) -> list[dict[str, Any]]:
    """The staff refunds the ledger holds for one run (for ``pizzeria status``). The
    configured ledger that cannot be read gives none (status reads Temporal first, the
    ledger only for this, and is run from anywhere); a ledger given with ``--ledger`` that
    cannot be read is a `LedgerError` (one line): "no refunds" would be a guess."""
    try:
        book = ledger_at(location, read_only=True)
    except LedgerError:
        if location is not None:
            raise
        return []
    try:
        return staff_refunds(book, order_ref(workflow_id_for(order_number), run_id))
    except LedgerError:
        if location is not None:
            raise
        return []
    finally:
        book.close()


def refund_lines(refunds: list[dict[str, Any]]) -> list[str]:
    """One line per staff refund, as ``pizzeria status`` shows them."""
    lines = []
    for refund in refunds:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(refund["claimed_at"]))
        what = {
            "refunded": f"refunded (refund {refund['refund_id']})",
            "pending": "pending: the provider has not answered it; retry with the same --key",
            "refused": f"refused, nothing moved: {shown(refund['note'])}",
        }[refund["state"]]
        lines.append(f"  {when}  {dollars(refund['amount'])} {what}")
    return lines
