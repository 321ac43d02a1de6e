"""The ledger's logic, written once: each effect claimed under its key, stock taken only
when it is there. A backend (sqlite.py, postgres.py) adds only how to reach the database,
how to run one transaction, and what to lock.

Every step is one transaction that first *claims* its idempotency key: an insert that does
nothing when the key exists, after which the existing row is read back and returned with
``applied=False``. The primary key decides, so two workers racing on one key leave one row,
and a transaction retried after a lost connection (which may have committed) finds its own
row instead of taking effect twice. The rest of the transaction then checks that the step
was not compensated already and applies it; any refusal rolls the claim back with it.

Stock is taken with one conditional update per ingredient (``quantity >= n``), never read
and then written, in a fixed ingredient order so that concurrent takes cannot deadlock.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pizzeria.ledger import schema
from pizzeria.ledger.records import (
    AlreadyBilled,
    Delivery,
    DeliveryKeyReused,
    Effect,
    LateStepRefused,
    LedgerError,
    LedgerNotFound,
    LedgerReadOnly,
    LedgerSnapshot,
    OrderLedger,
    OutOfStock,
    idempotency_key,
    per_order_totals,
)
from pizzeria.menu import INGREDIENTS
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
)
from pizzeria.temporal.tracing import span

T = TypeVar("T")

# Held while a ledger is created or upgraded, so that workers starting together do not
# run the same migration twice.
SCHEMA_LOCK = "pizzeria ledger schema"


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


class Ledger(ABC):
    """Stock, charges, refunds and bills. Methods block: call them from a thread."""

    def __init__(self, location: str, *, read_only: bool) -> None:
        self.location = location  # for messages: a file path, or a URL without password
        self.read_only = read_only

    # -- what a backend provides -------------------------------------------------------

    @abstractmethod
    def _transaction(
        self, body: Callable[[Tx], T], *, lock: str | None = None, writes: bool = True
    ) -> T:
        """Run ``body`` in one transaction, all of it or nothing. ``lock`` names what no
        other writer may work on meanwhile (one run's steps); ``writes=False`` reads one
        consistent snapshot."""

    @abstractmethod
    def _table_names(self, tx: Tx) -> set[str]: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- opening -----------------------------------------------------------------------

    def _prepare(self, initial_stock: int) -> None:
        """Writable: create or upgrade the tables and seed missing stock. Read-only: only
        check that a ledger of the current version is there."""
        if self.read_only:
            self._transaction(self._check_readable, writes=False)
            return

        def create_or_upgrade(tx: Tx) -> None:
            schema.upgrade(tx, schema.recorded_version(tx, self._table_names(tx)), self.location)
            for name in INGREDIENTS:
                tx.run(
                    "INSERT INTO stock (ingredient, initial, quantity) VALUES (?, ?, ?)"
                    " ON CONFLICT (ingredient) DO NOTHING",
                    (name, initial_stock, initial_stock),
                )

        self._transaction(create_or_upgrade, lock=SCHEMA_LOCK)

    def _check_readable(self, tx: Tx) -> None:
        version = schema.recorded_version(tx, self._table_names(tx))
        if version == 0:
            raise LedgerNotFound(f"no ledger at {self.location}: a worker creates it")
        schema.refuse_other_than_latest(version, self.location)

    def schema_version(self) -> int:
        return self._transaction(
            lambda tx: schema.recorded_version(tx, self._table_names(tx)), writes=False
        )

    def _write(self, order_ref: str, body: Callable[[Tx], T]) -> T:
        if self.read_only:
            raise LedgerReadOnly(f"the ledger at {self.location} was opened read-only")
        with span("ledger transaction", order_ref=order_ref, ledger=type(self).__name__):
            return self._transaction(body, lock=order_ref)

    # -- reading -----------------------------------------------------------------------

    def stock(self) -> dict[str, dict[str, int]]:
        return self._transaction(read_stock, writes=False)

    def effects(self, order_ref: str | None = None) -> list[dict[str, Any]]:
        return self._transaction(lambda tx: read_effects(tx, order_ref), writes=False)

    def orders(self) -> list[OrderLedger]:
        """Per run of an order: charged, refunded and billed amounts, stock still held."""
        return per_order_totals(self.effects())

    def snapshot(self) -> LedgerSnapshot:
        """Stock and every effect read in one transaction: a consistent picture even while
        workers write, so that stock conservation can be checked at any moment."""
        return self._transaction(
            lambda tx: LedgerSnapshot(
                stock=read_stock(tx), effects=read_effects(tx, None), deliveries=read_deliveries(tx)
            ),
            writes=False,
        )

    # -- deliveries --------------------------------------------------------------------

    def receive(self, key: str, ingredient: str, portions: int) -> Delivery:
        """Add a delivery to stock, once per key: a delivery recorded again (a retry after
        a lost answer) finds its row and adds nothing. `DeliveryKeyReused` when the key
        names another delivery; `LedgerError` for an ingredient the ledger does not stock."""
        if self.read_only:
            raise LedgerReadOnly(f"the ledger at {self.location} was opened read-only")

        def body(tx: Tx) -> Delivery:
            now = time.time()
            inserted = tx.run(
                "INSERT INTO deliveries (delivery_key, ingredient, portions, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (delivery_key) DO NOTHING",
                (key, ingredient, portions, now),
            )
            if not inserted:
                return already_received(tx, key, ingredient, portions)
            if not tx.run(
                "UPDATE stock SET quantity = quantity + ? WHERE ingredient = ?",
                (portions, ingredient),
            ):
                # Raised inside the transaction: the delivery row is rolled back with it.
                raise LedgerError(f"the ledger at {self.location} stocks no {ingredient!r}")
            return Delivery(key, ingredient, portions, now, applied=True)

        return self._transaction(body)

    # -- inventory ---------------------------------------------------------------------

    def take_stock(self, order_ref: str, order_number: str, ingredients: dict[str, int]) -> Effect:
        """Take an order's ingredients out of stock, once per run."""

        def body(tx: Tx) -> Effect:
            claimed = claim_unless_undone(
                tx,
                Claim(order_ref, order_number, STEP_UPDATE_INVENTORY, ingredients=ingredients),
                undone_by=COMPENSATE_REVERT_INVENTORY,
                refusal=f"inventory for {order_ref} was already reverted; not taking stock now",
            )
            if claimed.applied:
                take(tx, ingredients)
            return claimed

        return self._write(order_ref, body)

    def put_back_stock(self, order_ref: str, order_number: str) -> Effect:
        """Undo `take_stock` of this run; a tombstone when nothing was taken."""
        return self._write(order_ref, lambda tx: put_back(tx, order_ref, order_number))

    # -- money -------------------------------------------------------------------------

    def charge(self, order_ref: str, order_number: str, amount: int, card_last4: str) -> Effect:
        """Charge a run's amount once; refused when its refund already ran."""
        return self._write(
            order_ref,
            lambda tx: claim_unless_undone(
                tx,
                Claim(
                    order_ref,
                    order_number,
                    STEP_PROCESS_CREDIT_CARD,
                    amount=amount,
                    reference=card_last4,
                ),
                undone_by=COMPENSATE_REFUND_CUSTOMER,
                refusal=f"{order_ref} was already refunded; not charging now",
            ),
        )

    def refund(self, order_ref: str, order_number: str) -> Effect:
        """Refund exactly what this run charged; a tombstone when nothing was charged."""
        return self._write(order_ref, lambda tx: refund(tx, order_ref, order_number))

    def bill(self, order_ref: str, order_number: str, amount: int, confirmation: str) -> Effect:
        """Record the bill once; refused when the run's charge was already compensated.

        The bill is the pivot: once the refund ran, the order is being undone, and a bill
        arriving late (an attempt that outlived its timeout) would bill an undone order.
        """
        return self._write(
            order_ref,
            lambda tx: claim_unless_undone(
                tx,
                Claim(
                    order_ref, order_number, STEP_SEND_BILL, amount=amount, reference=confirmation
                ),
                undone_by=COMPENSATE_REFUND_CUSTOMER,
                refusal=f"{order_ref} was already refunded; not billing now",
            ),
        )

    # -- an operator's way out ---------------------------------------------------------

    def abandon_run(self, order_ref: str, order_number: str) -> tuple[Effect, Effect]:
        """Both compensations of a run at once, for a run an operator gives up on: the
        stock put back, the charge refunded, each a tombstone when there was nothing, so
        that no step of the run can take effect afterwards (the bill neither: it is refused
        once the refund is written). Refused for a billed run, which only goes forward.
        """

        def body(tx: Tx) -> tuple[Effect, Effect]:
            billed = find(tx, order_ref, STEP_SEND_BILL)
            if billed is not None:
                raise AlreadyBilled(
                    f"{order_ref} was billed {billed.amount} cents: past its pivot an order "
                    "only goes forward, so there is nothing the ledger may undo"
                )
            return put_back(tx, order_ref, order_number), refund(tx, order_ref, order_number)

        return self._write(order_ref, body)


# -- the SQL, shared by both backends ------------------------------------------------------


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


def refund(tx: Tx, order_ref: str, order_number: str) -> Effect:
    """refund_customer: exactly what the run charged, once."""
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


def claim(tx: Tx, wanted: Claim) -> Effect:
    """Insert the step's row, or read back the one already under its key."""
    now = time.time()
    inserted = tx.run(
        "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
        " ingredients, tombstone, reference, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (idempotency_key) DO NOTHING",
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
