"""``pizzeria ledger``: the stock, and what each run of an order charged, refunded, billed."""

from __future__ import annotations

import json

import click
from rich.table import Table

from pizzeria.cli.common import json_option, ledger_at, ledger_option, out
from pizzeria.models import dollars


@click.command()
@ledger_option
@json_option
def ledger(ledger_location: str | None, as_json: bool) -> None:
    """Stock per ingredient, and per order the amounts charged, refunded and billed."""
    book = ledger_at(ledger_location)
    snapshot = book.snapshot().to_json()
    book.close()
    if as_json:
        out.print_json(json.dumps(snapshot))
        return
    stock = Table("ingredient", "initial", "in stock", title="Stock")
    for name, row in snapshot["stock"].items():
        stock.add_row(name, str(row["initial"]), str(row["quantity"]))
    out.print(stock)
    orders = Table("order", "run", "charged", "refunded", "billed", "stock held", title="Orders")
    for row in snapshot["orders"]:
        held = sum(row["stock_held"].values())
        orders.add_row(
            row["order_number"],
            row["run_id"][:8],
            dollars(row["charged"]),
            dollars(row["refunded"]),
            dollars(row["billed"]),
            str(held),
        )
    out.print(orders)
