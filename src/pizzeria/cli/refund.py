"""``pizzeria refund``: staff give part of a completed order's money back, once per key."""

from __future__ import annotations

import json
import uuid

import click

from pizzeria.cli.common import (
    UserError,
    address_option,
    client_or_fail,
    json_option,
    ledger_at,
    ledger_option,
    out,
    run,
    shown,
)
from pizzeria.models import dollars
from pizzeria.refunds import (
    RefundError,
    RefundUnanswered,
    StaffRefund,
    parse_amount,
    refund_order,
    staff_gateway,
)


@click.command()
@click.argument("order_number")
@click.argument("amount")
@click.option("--reason", required=True, help="Why the money goes back (kept by the provider)")
@click.option(
    "--key",
    help="The refund's key: the same key again never refunds twice (a retry after an error "
    "must give it) [default: a new key, printed]",
)
@address_option
@ledger_option
@json_option
def refund(
    order_number: str,
    amount: str,
    reason: str,
    key: str | None,
    address: str | None,
    ledger_location: str | None,
    as_json: bool,
) -> None:
    """Refund AMOUNT of a completed order: whole cents (500) or dollars with two decimals
    (5.00 or $5.00), at most what its bill captured minus what went back already.

    The refund goes through the payment provider (the workers' own: PIZZERIA_PAYMENTS_URL,
    STRIPE_API_KEY, else the data folder's) and is recorded in the ledger under its key.
    """
    try:
        cents = parse_amount(amount)
    except RefundError as error:
        raise UserError(str(error)) from None
    key = key if key is not None else f"refund-{uuid.uuid4().hex[:12]}"
    book = ledger_at(ledger_location)
    gateway = staff_gateway()

    async def refunded() -> StaffRefund:
        try:
            client = await client_or_fail(address)
            return await refund_order(client, book, gateway, order_number, cents, reason, key)
        finally:
            await gateway.close()

    try:
        made = run(refunded())
    except RefundUnanswered as error:
        raise ConnectionError(f"{error} (--key {key})") from None
    except RefundError as error:
        raise UserError(str(error)) from None
    finally:
        book.close()
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
    out.print(
        f"  captured {dollars(made.captured)}, refunded {dollars(made.refunded)} in all, "
        f"{dollars(made.left)} left; key {shown(made.key)}",
        markup=False,
    )
