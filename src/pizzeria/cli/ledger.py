"""``pizzeria ledger`` and ``pizzeria stock``: what the ledger holds, and deliveries into it.

``ledger`` shows the stock and what each run of an order charged, refunded and billed;
``stock`` shows where each ingredient's portions went, and ``stock add`` records a
delivery, once per delivery key.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click
from rich.table import Table

from pizzeria import config
from pizzeria.cli.common import UserError, cell, err, ledger_at, order_column, out
from pizzeria.cli.options import json_option, ledger_option
from pizzeria.ledger import (
    DeliveryKeyReused,
    LedgerError,
    LedgerNotFound,
    is_postgres_location,
    open_ledger,
)
from pizzeria.menu import INGREDIENTS
from pizzeria.models import IDEMPOTENCY_KEY_SAID, IDEMPOTENCY_KEY_SHAPE, short_run
from pizzeria.statements import money_line

#: The most portions one delivery may bring (a typo of a few zeros is refused).
MAX_DELIVERY = 1_000_000


@click.command()
@ledger_option
@json_option
def ledger(ledger_location: str | None, as_json: bool) -> None:
    """Stock per ingredient, and per order the amounts charged, refunded and billed."""
    book = ledger_at(ledger_location, read_only=True)
    snapshot = book.snapshot().to_json()
    book.close()
    if as_json:
        out.print_json(json.dumps(snapshot))
        return
    stock = Table("ingredient", "initial", "received", "in stock", title="Stock")
    for name, row in snapshot["stock"].items():
        stock.add_row(name, str(row["initial"]), str(row["received"]), str(row["quantity"]))
    out.print(stock)
    numbers = order_column(row["order_number"] for row in snapshot["orders"])
    # Stock kept: taken and not put back (consumed by a completed order, held by an open
    # one); an undone order took its stock and put it back, and keeps none.
    orders = Table(numbers, "run", "card", "stock kept", title="Orders")
    for row in snapshot["orders"]:
        taken = sum(row["stock_held"].values())
        orders.add_row(
            cell(row["order_number"]),  # from a workflow id: any client chose it
            short_run(row["run_id"]),
            money_line(row),
            str(taken),
        )
    out.print(orders)


@click.group(invoke_without_command=True)
@ledger_option
@json_option
@click.pass_context
def stock(ctx: click.Context, ledger_location: str | None, as_json: bool) -> None:
    """Stock per ingredient: initial, received, in stock, held by open orders, consumed.

    initial + received = in stock + consumed + held, for every ingredient.
    """
    if ctx.invoked_subcommand is not None:
        return
    book = ledger_at(ledger_location, read_only=True)
    try:
        flow = book.snapshot().stock_flow()
    finally:
        book.close()
    if as_json:
        out.print_json(json.dumps({"stock": flow}))
        return
    table = Table("ingredient", "initial", "received", "in stock", "held", "consumed", "adds up")
    for name, row in flow.items():
        figures = (row[column] for column in ("initial", "received", "in_stock", "held"))
        table.add_row(
            name,
            *map(str, figures),
            str(row["consumed"]),
            "yes" if row["conserved"] else "[red]NO[/red]",
        )
    out.print(table)


def _no_ledger_at(location: str) -> bool:
    """Whether no ledger is at ``location`` yet: no file there, or a database without the
    ledger's tables. Anything else in the way (unreachable, too new) is not said here: the
    delivery's own opening of the ledger says it, in one line."""
    if not is_postgres_location(location):
        return not Path(location).exists()
    try:
        open_ledger(location, read_only=True).close()
    except LedgerNotFound:
        return True
    except LedgerError:
        return False
    return False


# A count of "-4" is a count the user got wrong, not an option: let IntRange say so.
@stock.command("add", context_settings={"ignore_unknown_options": True})
@click.argument(
    "ingredient", metavar="INGREDIENT", type=click.Choice(INGREDIENTS, case_sensitive=False)
)
@click.argument("count", metavar="COUNT", type=click.IntRange(1, MAX_DELIVERY))
@click.option(
    "--key",
    help="The delivery's key (say, the supplier's delivery note): recording the same key "
    "again adds nothing [default: a new key, printed]",
)
@ledger_option
@json_option
def add_stock(
    ingredient: str, count: int, key: str | None, ledger_location: str | None, as_json: bool
) -> None:
    """Receive a delivery: COUNT portions of INGREDIENT into stock, once per delivery key."""
    if key is not None and not IDEMPOTENCY_KEY_SHAPE.fullmatch(key.strip()):
        raise UserError(f"--key must be {IDEMPOTENCY_KEY_SAID}, as a refund's")
    delivery_key = key.strip() if key else f"delivery-{uuid.uuid4().hex[:12]}"
    # A delivery may be the ledger's first record: one is made where there is none, and
    # said (a mistyped --ledger or PIZZERIA_LEDGER, or an empty database, would otherwise
    # take the stock silently).
    where = ledger_location or config.ledger_location()
    made = _no_ledger_at(where)
    book = ledger_at(where, create=True)
    if made:
        err.print(f"No ledger was at {book.location}: made a new one", markup=False)
    try:
        delivery = book.receive(delivery_key, ingredient.lower(), count)
        in_stock = book.stock()[delivery.ingredient]["quantity"]
    except DeliveryKeyReused as reused:
        raise UserError(str(reused)) from None
    finally:
        book.close()
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "key": delivery.key,
                    "ingredient": delivery.ingredient,
                    "portions": delivery.portions,
                    "counted": delivery.applied,
                    "in_stock": in_stock,
                }
            )
        )
        return
    what = f"{delivery.portions} {delivery.ingredient}"
    if delivery.applied:
        out.print(f"Received {what} (delivery key {delivery.key}); in stock: {in_stock}")
        if key is None:
            out.print(f"  to record it again without counting it twice: --key {delivery.key}")
    else:
        out.print(f"Delivery {delivery.key} ({what}) was already received: not counted again")
