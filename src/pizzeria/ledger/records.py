"""What the ledger hands back (effects, per-run totals, snapshots) and how it refuses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
    split_order_ref,
)


class OutOfStock(Exception):
    def __init__(self, missing: dict[str, int]) -> None:
        listed = ", ".join(f"{name} (short {count})" for name, count in missing.items())
        super().__init__(f"Out of stock: {listed}")
        self.missing = missing


class LateStepRefused(Exception):
    """The step's compensation already ran: taking effect now would never be undone."""


class LedgerError(Exception):
    """The ledger cannot be used as asked; the message is one line meant for the user."""


class AlreadyBilled(LedgerError):
    """A billed run cannot be abandoned: the bill is the pivot, after it only forward."""


class LedgerUnavailable(LedgerError):
    """The location is malformed, or the file or server cannot be reached."""


class LedgerNotFound(LedgerError):
    """Opened read-only where no ledger was ever created."""


class LedgerReadOnly(LedgerError):
    """A write asked of a ledger opened read-only."""


class SchemaTooNew(LedgerError):
    """The ledger was upgraded by a newer pizzeria: this code would misread it."""


class SchemaTooOld(LedgerError):
    """Opened read-only below the current version: only a writable open upgrades it."""


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
