"""The rule over the whole ledger's stock, once every run's holdings are tallied.

The run rules (`rules`) judge each run on its own; this one adds up what they tallied
(`Findings.held_by`: the stock each run still holds, by who holds it) against the stock
table and the deliveries, and gives the report its stock table.
"""

from __future__ import annotations

from typing import Any

from pizzeria import menu
from pizzeria.ledger import LedgerSnapshot
from pizzeria.ops.check.report import Violation
from pizzeria.ops.check.views import HOLDERS, Findings


def stock_conserved(snapshot: LedgerSnapshot, found: Findings) -> dict[str, dict[str, Any]]:
    """Per ingredient: never negative, and initial + received = in stock + what the runs
    hold (the deliveries counted row by row, so an edited delivery shows)."""
    stock: dict[str, dict[str, Any]] = {}
    received = snapshot.received()
    held_anywhere = {name for holder in HOLDERS for name in +found.held_by[holder]}
    for name in sorted({*menu.INGREDIENTS, *received, *held_anywhere} - set(snapshot.stock)):
        found.violations.append(
            Violation("ingredient missing from stock", name, "-", "the ledger has no stock row")
        )
    for name, row in snapshot.stock.items():
        held = {holder: found.held_by[holder][name] for holder in HOLDERS}
        conserved = row["initial"] + received[name] == row["quantity"] + sum(held.values())
        stock[name] = {
            "initial": row["initial"],
            "received": received[name],
            "in_stock": row["quantity"],
            **{f"held_{h}" if h != "consumed" else h: n for h, n in held.items()},
            "conserved": conserved,
        }
        if row["quantity"] < 0:
            found.violations.append(
                Violation("negative stock", name, "-", f"{row['quantity']} in stock")
            )
        if not conserved:
            detail = (
                f"initial {row['initial']} + received {received[name]} != in stock "
                f"{row['quantity']} + held {sum(held.values())}"
            )
            found.violations.append(Violation("stock not conserved", name, "-", detail))
    return stock
