"""The SQL both backends run, written once: a transaction as the shared logic sees it
(`Tx`), each effect claimed under its idempotency key, stock taken only when it is there.

book.py (the `Ledger`) calls these inside one transaction of its backend; schema.py runs
its migrations through `Tx` too, so neither imports the other for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pizzeria.ledger.records import (
    REAUTHORIZE_HOLD,
    Delivery,
    DeliveryKeyReused,
    Effect,
    HoldChanged,
    LateStepRefused,
    OutOfStock,
    idempotency_key,
)
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_UPDATE_INVENTORY,
)


class Tx:
    """One open transaction as the shared logic sees it: SQL with ``?`` placeholders."""

    def __init__(self, execute: Callable[[str, Sequence[Any]], Any]) -> None:
        self._execute = execute

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self._execute(sql, params).fetchone()
        return None if row is None else dict(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._execute(sql, params).fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""
        return int(self._execute(sql, params).rowcount)


def put_back(tx: Tx, order_ref: str, order_number: str) -> Effect:
    """revert_inventory: what the run took goes back to stock, once."""
    taken = find(tx, order_ref, STEP_UPDATE_INVENTORY)
    claimed = claim(
        tx,
        Claim(
            order_ref,
            order_number,
            COMPENSATE_REVERT_INVENTORY,
            ingredients=taken.ingredients if taken else {},
            tombstone=taken is None,
        ),
    )
    if claimed.applied and taken is not None:
        for name, count in sorted(taken.ingredients.items()):
            tx.run(
                "UPDATE stock SET quantity = quantity + ? WHERE ingredient = ?",
                (count, name),
            )
    return claimed


def release(tx: Tx, wanted: Claim, seen: tuple[str | None, str | None]) -> Effect:
    """refund_customer's row after the payment provider released (or refunded) the run's
    money: exactly the amount held, once; a tombstone when no hold was recorded.

    ``seen`` holds the payment ids of the run's hold and of its renewal (the bill's new
    hold after the first expired) as the caller found them (None: none) before it asked
    the provider. A hold recorded since (a late step) refuses the claim with
    `HoldChanged`, so that the caller looks again instead of leaving that hold behind.
    """
    held = find(tx, wanted.order_ref, STEP_PROCESS_CREDIT_CARD)
    renewed = find(tx, wanted.order_ref, REAUTHORIZE_HOLD)
    now = (held.payment_id if held else None, renewed.payment_id if renewed else None)
    if now != seen:
        raise HoldChanged(f"the hold of {wanted.order_ref} changed meanwhile; look again")
    wanted.step = COMPENSATE_REFUND_CUSTOMER
    wanted.amount = held.amount if held else 0
    wanted.tombstone = held is None
    return claim(tx, wanted)


def refund(tx: Tx, order_ref: str, order_number: str) -> Effect:
    """refund_customer in the ledger alone (an abandoned run, or a charge recorded before
    payments went through a provider): exactly what the run charged, once."""
    charged = find(tx, order_ref, STEP_PROCESS_CREDIT_CARD)
    return claim(
        tx,
        Claim(
            order_ref,
            order_number,
            COMPENSATE_REFUND_CUSTOMER,
            amount=charged.amount if charged else 0,
            tombstone=charged is None,
        ),
    )


@dataclass
class Claim:
    """The row a step writes under its idempotency key."""

    order_ref: str
    order_number: str
    step: str
    amount: int = 0
    ingredients: dict[str, int] = field(default_factory=dict)
    tombstone: bool = False
    reference: str = ""
    payment_id: str = ""
    money_state: str = ""


def claim(tx: Tx, wanted: Claim) -> Effect:
    """Insert the step's row, or read back the one already under its key."""
    now = time.time()
    inserted = tx.run(
        "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
        " ingredients, tombstone, reference, created_at, payment_id, money_state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
        (
            idempotency_key(wanted.order_ref, wanted.step),
            wanted.order_ref,
            wanted.order_number,
            wanted.step,
            wanted.amount,
            json.dumps(wanted.ingredients, sort_keys=True),
            int(wanted.tombstone),
            wanted.reference,
            now,
            wanted.payment_id,
            wanted.money_state,
        ),
    )
    if inserted:
        return Effect(
            wanted.step,
            wanted.amount,
            wanted.ingredients,
            wanted.tombstone,
            wanted.reference,
            now,
            applied=True,
            payment_id=wanted.payment_id,
            money_state=wanted.money_state,
        )
    existing = find(tx, wanted.order_ref, wanted.step)
    if existing is None:  # only if rows were deleted behind the ledger's back
        raise RuntimeError(f"{idempotency_key(wanted.order_ref, wanted.step)} vanished")
    return existing


def claim_unless_undone(tx: Tx, wanted: Claim, *, undone_by: str, refusal: str) -> Effect:
    """Claim a step, refused (and rolled back) when its compensation already wrote."""
    claimed = claim(tx, wanted)
    if claimed.applied and find(tx, wanted.order_ref, undone_by) is not None:
        raise LateStepRefused(refusal)
    return claimed


def find(tx: Tx, order_ref: str, step: str) -> Effect | None:
    row = tx.one(
        "SELECT * FROM effects WHERE idempotency_key = ?", (idempotency_key(order_ref, step),)
    )
    if row is None:
        return None
    return Effect(
        step=row["step"],
        amount=row["amount"],
        ingredients=json.loads(row["ingredients"]),
        tombstone=bool(row["tombstone"]),
        reference=row["reference"],
        created_at=row["created_at"],
        applied=False,
        payment_id=row.get("payment_id") or "",
        money_state=row.get("money_state") or "",
    )


def take(tx: Tx, ingredients: dict[str, int]) -> None:
    """Lower stock by ``ingredients``, or raise `OutOfStock` naming every shortage."""
    short = {
        name
        for name, count in sorted(ingredients.items())
        if not tx.run(
            "UPDATE stock SET quantity = quantity - ? WHERE ingredient = ? AND quantity >= ?",
            (count, name, count),
        )
    }
    if short:
        left = {name: row["quantity"] for name, row in read_stock(tx).items()}
        raise OutOfStock(
            {
                name: count - left.get(name, 0)
                for name, count in ingredients.items()
                if name in short
            }
        )


def read_stock(tx: Tx) -> dict[str, dict[str, int]]:
    rows = tx.all("SELECT ingredient, initial, quantity FROM stock ORDER BY ingredient")
    return {r["ingredient"]: {"initial": r["initial"], "quantity": r["quantity"]} for r in rows}


def already_received(tx: Tx, key: str, ingredient: str, portions: int) -> Delivery:
    row = tx.one("SELECT * FROM deliveries WHERE delivery_key = ?", (key,))
    assert row is not None  # the insert found it
    if (row["ingredient"], row["portions"]) != (ingredient, portions):
        raise DeliveryKeyReused(
            f"delivery key {key!r} was already used for {row['portions']} {row['ingredient']};"
            " give a new key for another delivery"
        )
    return Delivery(key, ingredient, portions, row["created_at"], applied=False)


def read_deliveries(tx: Tx) -> list[dict[str, Any]]:
    return tx.all("SELECT * FROM deliveries ORDER BY created_at, delivery_key")


def read_effects(tx: Tx, order_ref: str | None) -> list[dict[str, Any]]:
    if order_ref is None:
        rows = tx.all("SELECT * FROM effects ORDER BY created_at")
    else:
        rows = tx.all("SELECT * FROM effects WHERE order_ref = ? ORDER BY created_at", (order_ref,))
    return [{**row, "ingredients": json.loads(row["ingredients"])} for row in rows]
