"""The ledger: stock, charges, refunds and bills, each effect written exactly once.

Every row is keyed by an idempotency key ``<workflow id>/<run id>/<step>``. Activities run
at least once, so a repeated call finds its key and changes nothing; a later run of the
same order number has another run id and so never touches this run's rows. A compensation
that finds nothing to undo leaves a *tombstone* under its own key, so a step that arrives
late (after its compensation) is refused instead of taking effect with nobody to undo it;
so is a bill arriving after the run's refund (the order is being undone, not billed).

SQLite by default (one file, WAL mode, ``BEGIN IMMEDIATE`` so several worker processes on
one machine serialise their writes). The SQL is plain and portable so that PostgreSQL can
take its place when workers run on several machines.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pizzeria.menu import INGREDIENTS, INITIAL_STOCK
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
    split_order_ref,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    ingredient TEXT PRIMARY KEY,
    initial INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 0)
);
CREATE TABLE IF NOT EXISTS effects (
    idempotency_key TEXT PRIMARY KEY,
    order_ref TEXT NOT NULL,
    order_number TEXT NOT NULL,
    step TEXT NOT NULL,
    amount INTEGER NOT NULL DEFAULT 0,
    ingredients TEXT NOT NULL DEFAULT '{}',
    tombstone INTEGER NOT NULL DEFAULT 0,
    reference TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS effects_by_order ON effects (order_ref);
"""


class OutOfStock(Exception):
    def __init__(self, missing: dict[str, int]) -> None:
        listed = ", ".join(f"{name} (short {count})" for name, count in missing.items())
        super().__init__(f"Out of stock: {listed}")
        self.missing = missing


class LateStepRefused(Exception):
    """The step's compensation already ran: taking effect now would never be undone."""


def idempotency_key(order_ref: str, step: str) -> str:
    return f"{order_ref}/{step}"


@dataclass
class Effect:
    step: str
    amount: int
    ingredients: dict[str, int]
    tombstone: bool
    reference: str
    created_at: float
    applied: bool  # False when this call found the effect already written


@dataclass
class RunRows:
    """One run's rows added up per step: the one reading of the effects by run, which the
    ledger summary, the demo and the checker all build on."""

    order_ref: str
    order_number: str = ""
    charged: int = 0
    refunded: int = 0
    billed: int = 0
    taken: Counter[str] = field(default_factory=Counter)  # portions, by update_inventory
    put_back: Counter[str] = field(default_factory=Counter)  # portions, by revert_inventory
    rows: Counter[str] = field(default_factory=Counter)  # written (not tombstone) per step
    tombstones: set[str] = field(default_factory=set)
    refund_at: float | None = None  # when the refund (or its tombstone) was written
    bill_at: float | None = None

    @property
    def net(self) -> int:
        return self.charged - self.refunded

    @property
    def held(self) -> Counter[str]:
        """The stock the run still holds: what it took, unless that was put back."""
        return Counter() if self.rows[COMPENSATE_REVERT_INVENTORY] else Counter(self.taken)


def runs_of(effects: Iterable[dict[str, Any]]) -> dict[str, RunRows]:
    """Per order_ref (in the order the runs first wrote), its rows added up."""
    runs: dict[str, RunRows] = {}
    for effect in effects:
        run = runs.setdefault(effect["order_ref"], RunRows(effect["order_ref"]))
        run.order_number = effect["order_number"]
        step = effect["step"]
        if step == COMPENSATE_REFUND_CUSTOMER:
            run.refund_at = effect["created_at"]
        if effect["tombstone"]:
            run.tombstones.add(step)
            continue
        run.rows[step] += 1
        if step == STEP_PROCESS_CREDIT_CARD:
            run.charged += effect["amount"]
        elif step == COMPENSATE_REFUND_CUSTOMER:
            run.refunded += effect["amount"]
        elif step == STEP_SEND_BILL:
            run.billed += effect["amount"]
            run.bill_at = effect["created_at"]
        elif step == STEP_UPDATE_INVENTORY:
            run.taken.update(effect["ingredients"])
        elif step == COMPENSATE_REVERT_INVENTORY:
            run.put_back.update(effect["ingredients"])
    return runs


@dataclass
class OrderLedger:
    order_ref: str
    order_number: str
    charged: int
    refunded: int
    billed: int
    stock_held: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        workflow_id, run_id = split_order_ref(self.order_ref)
        return {
            "order_number": self.order_number,
            "workflow_id": workflow_id,
            "run_id": run_id,
            "charged": self.charged,
            "refunded": self.refunded,
            "billed": self.billed,
            "stock_held": self.stock_held,
        }


def per_order_totals(effects: list[dict[str, Any]]) -> list[OrderLedger]:
    """Per run: charged, refunded and billed amounts, and the stock it still holds."""
    return [
        OrderLedger(
            run.order_ref, run.order_number, run.charged, run.refunded, run.billed, dict(run.held)
        )
        for run in runs_of(effects).values()
    ]


@dataclass
class LedgerSnapshot:
    """Everything the ledger holds at one moment (see `Ledger.snapshot`)."""

    stock: dict[str, dict[str, int]]
    effects: list[dict[str, Any]]

    def orders(self) -> list[OrderLedger]:
        return per_order_totals(self.effects)

    def to_json(self) -> dict[str, Any]:
        """Stock per ingredient and, per run, what it charged, refunded, billed and holds."""
        return {"stock": self.stock, "orders": [order.to_json() for order in self.orders()]}


class Ledger:
    """One SQLite file. Methods are blocking: call them from a thread, not the event loop."""

    def __init__(self, path: str | Path, initial_stock: int = INITIAL_STOCK) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT INTO stock (ingredient, initial, quantity) VALUES (?, ?, ?) "
                "ON CONFLICT (ingredient) DO NOTHING",
                [(name, initial_stock, initial_stock) for name in INGREDIENTS],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- reading -----------------------------------------------------------------------

    @staticmethod
    def _find(db: sqlite3.Connection, key: str) -> Effect | None:
        row = db.execute("SELECT * FROM effects WHERE idempotency_key = ?", (key,)).fetchone()
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

    @staticmethod
    def _write(
        db: sqlite3.Connection,
        order_ref: str,
        order_number: str,
        step: str,
        *,
        amount: int = 0,
        ingredients: dict[str, int] | None = None,
        tombstone: bool = False,
        reference: str = "",
    ) -> Effect:
        now = time.time()
        db.execute(
            "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
            " ingredients, tombstone, reference, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                idempotency_key(order_ref, step),
                order_ref,
                order_number,
                step,
                amount,
                json.dumps(ingredients or {}, sort_keys=True),
                int(tombstone),
                reference,
                now,
            ),
        )
        return Effect(step, amount, ingredients or {}, tombstone, reference, now, applied=True)

    def stock(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM stock ORDER BY ingredient").fetchall()
        return {r["ingredient"]: {"initial": r["initial"], "quantity": r["quantity"]} for r in rows}

    def effects(self, order_ref: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM effects"
        params: tuple[str, ...] = ()
        if order_ref is not None:
            query += " WHERE order_ref = ?"
            params = (order_ref,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at", params).fetchall()
        return [{**dict(row), "ingredients": json.loads(row["ingredients"])} for row in rows]

    def orders(self) -> list[OrderLedger]:
        """Per run of an order: charged, refunded and billed amounts, stock still held."""
        return per_order_totals(self.effects())

    def snapshot(self) -> LedgerSnapshot:
        """Stock and every effect read in one transaction: a consistent picture even while
        workers write, so that stock conservation can be checked at any moment."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                stock = self._db.execute("SELECT * FROM stock ORDER BY ingredient").fetchall()
                effects = self._db.execute("SELECT * FROM effects ORDER BY created_at").fetchall()
            finally:
                self._db.execute("COMMIT")
        return LedgerSnapshot(
            stock={
                r["ingredient"]: {"initial": r["initial"], "quantity": r["quantity"]} for r in stock
            },
            effects=[
                {**dict(row), "ingredients": json.loads(row["ingredients"])} for row in effects
            ],
        )

    # -- inventory ---------------------------------------------------------------------

    def take_stock(self, order_ref: str, order_number: str, ingredients: dict[str, int]) -> Effect:
        """Take an order's ingredients out of stock, once per run."""
        with self._transaction() as db:
            done = self._find(db, idempotency_key(order_ref, STEP_UPDATE_INVENTORY))
            if done is not None:
                return done
            if self._find(db, idempotency_key(order_ref, COMPENSATE_REVERT_INVENTORY)) is not None:
                raise LateStepRefused(
                    f"inventory for {order_ref} was already reverted; not taking stock now"
                )
            stock = {
                r["ingredient"]: r["quantity"]
                for r in db.execute("SELECT ingredient, quantity FROM stock").fetchall()
            }
            missing = {
                name: count - stock.get(name, 0)
                for name, count in ingredients.items()
                if stock.get(name, 0) < count
            }
            if missing:
                raise OutOfStock(missing)
            db.executemany(
                "UPDATE stock SET quantity = quantity - ? WHERE ingredient = ?",
                [(count, name) for name, count in ingredients.items()],
            )
            return self._write(
                db, order_ref, order_number, STEP_UPDATE_INVENTORY, ingredients=ingredients
            )

    def put_back_stock(self, order_ref: str, order_number: str) -> Effect:
        """Undo `take_stock` of this run; a tombstone when nothing was taken."""
        with self._transaction() as db:
            done = self._find(db, idempotency_key(order_ref, COMPENSATE_REVERT_INVENTORY))
            if done is not None:
                return done
            taken = self._find(db, idempotency_key(order_ref, STEP_UPDATE_INVENTORY))
            if taken is None:
                return self._write(
                    db, order_ref, order_number, COMPENSATE_REVERT_INVENTORY, tombstone=True
                )
            db.executemany(
                "UPDATE stock SET quantity = quantity + ? WHERE ingredient = ?",
                [(count, name) for name, count in taken.ingredients.items()],
            )
            return self._write(
                db,
                order_ref,
                order_number,
                COMPENSATE_REVERT_INVENTORY,
                ingredients=taken.ingredients,
            )

    # -- money -------------------------------------------------------------------------

    def charge(self, order_ref: str, order_number: str, amount: int, card_last4: str) -> Effect:
        """Charge a run's amount once; refused when its refund already ran."""
        with self._transaction() as db:
            done = self._find(db, idempotency_key(order_ref, STEP_PROCESS_CREDIT_CARD))
            if done is not None:
                return done
            if self._find(db, idempotency_key(order_ref, COMPENSATE_REFUND_CUSTOMER)) is not None:
                raise LateStepRefused(f"{order_ref} was already refunded; not charging now")
            return self._write(
                db,
                order_ref,
                order_number,
                STEP_PROCESS_CREDIT_CARD,
                amount=amount,
                reference=card_last4,
            )

    def refund(self, order_ref: str, order_number: str) -> Effect:
        """Refund exactly what this run charged; a tombstone when nothing was charged."""
        with self._transaction() as db:
            done = self._find(db, idempotency_key(order_ref, COMPENSATE_REFUND_CUSTOMER))
            if done is not None:
                return done
            charged = self._find(db, idempotency_key(order_ref, STEP_PROCESS_CREDIT_CARD))
            if charged is None:
                return self._write(
                    db, order_ref, order_number, COMPENSATE_REFUND_CUSTOMER, tombstone=True
                )
            return self._write(
                db, order_ref, order_number, COMPENSATE_REFUND_CUSTOMER, amount=charged.amount
            )

    def bill(self, order_ref: str, order_number: str, amount: int, confirmation: str) -> Effect:
        """Record the bill once; refused when the run's charge was already compensated.

        The bill is the pivot: once the refund ran, the order is being undone, and a bill
        arriving late (an attempt that outlived its timeout) would bill an undone order.
        """
        with self._transaction() as db:
            done = self._find(db, idempotency_key(order_ref, STEP_SEND_BILL))
            if done is not None:
                return done
            if self._find(db, idempotency_key(order_ref, COMPENSATE_REFUND_CUSTOMER)) is not None:
                raise LateStepRefused(f"{order_ref} was already refunded; not billing now")
            return self._write(
                db, order_ref, order_number, STEP_SEND_BILL, amount=amount, reference=confirmation
            )
