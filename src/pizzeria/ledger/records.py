"""What the ledger hands back (effects, per-run totals, snapshots) and how it refuses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    COMPENSATIONS,
    MONEY_CAPTURED,
    MONEY_HELD,
    MONEY_REFUNDED,
    STEP_PROCESS_CREDIT_CARD,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
    STEPS,
    split_order_ref,
)

#: Rows the ledger writes beside the steps' own, each once per run under
#: ``<order ref>/<name>``: a new hold made by the bill when the first one expired, and a
#: payment a late step made and undid itself (its step's compensation had already run).
REAUTHORIZE_HOLD = "reauthorize_hold"
LATE_PAYMENT_UNDONE = "undo_late_payment"
#: A refund staff gave a completed order (`pizzeria refund`), once per caller's key: its
#: rows are ``<order ref>/staff_refund/<digest of the key>`` (see ledger/refunds.py).
STAFF_REFUND = "staff_refund"


def is_staff_refund(step: str) -> bool:
    return step.startswith(STAFF_REFUND + "/")


class OutOfStock(Exception):
    def __init__(self, missing: dict[str, int]) -> None:
        listed = ", ".join(f"{name} (short {count})" for name, count in missing.items())
        super().__init__(f"Out of stock: {listed}")
        self.missing = missing


class LateStepRefused(Exception):
    """The step's compensation already ran: taking effect now would never be undone."""


class HoldChanged(Exception):
    """The run's hold changed while a compensation asked the payment provider about it (a
    late step recorded it meanwhile): the compensation must look again (a retry)."""


class LedgerError(Exception):
    """The ledger cannot be used as asked; the message is one line meant for the user."""


class AlreadyBilled(LedgerError):
    """A billed run cannot be abandoned: the bill is the pivot, after it only forward."""


class LedgerUnavailable(LedgerError):
    """The location is malformed, or the file or server cannot be reached."""


class UnsupportedLedger(LedgerUnavailable):
    """A location of a kind no ledger lives at (``mysql://...``): the user's to correct."""


class LedgerNotFound(LedgerError):
    """Opened read-only where no ledger was ever created."""


class LedgerReadOnly(LedgerError):
    """A write asked of a ledger opened read-only."""


class SchemaTooNew(LedgerError):
    """The ledger was upgraded by a newer pizzeria: this code would misread it."""


class SchemaTooOld(LedgerError):
    """Opened read-only below the current version: only a writable open upgrades it."""


class SchemaDamaged(LedgerError):
    """A table of the recorded version is gone (dropped by hand): nothing can repair it."""


class DeliveryKeyReused(LedgerError):
    """A delivery key already names another delivery (another ingredient or count)."""


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
    payment_id: str = ""  # the payment provider's id of the money this row moved
    money_state: str = ""  # where that money is after this row (models.MONEY_*)


@dataclass
class Delivery:
    key: str
    ingredient: str
    portions: int
    created_at: float
    applied: bool  # False when this key was already received: nothing was added


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
    cards: list[str] = field(default_factory=list)  # last four of each charge row
    confirmations: list[str] = field(default_factory=list)  # of each bill row
    # Refunded past the pivot (a billed order no driver took): not the saga's refund.
    refunded_after_bill: int = 0
    #: Each money row's payment id and the money's state after it, in the order written.
    payments: list[tuple[str, str, str]] = field(default_factory=list)  # step, id, state
    # Keys other than "<order_ref>/<step>" of a step we know: rows a step never writes.
    misfiled: list[str] = field(default_factory=list)
    #: The order number each row names (one, the run's, unless a row was edited).
    numbers: set[str] = field(default_factory=set)
    # Given back by staff after the order completed (`pizzeria refund`): the refunds the
    # provider made, and those claimed whose provider's answer is not recorded yet.
    refunded_by_staff: int = 0
    staff_refunds_pending: int = 0

    @property
    def net(self) -> int:
        return self.charged - self.refunded

    @property
    def held(self) -> Counter[str]:
        """The stock the run still holds: what it took, unless that was put back."""
        return Counter() if self.rows[COMPENSATE_REVERT_INVENTORY] else Counter(self.taken)

    @property
    def money(self) -> str:
        """Where the run's money is now at the payment provider (``models.MONEY_*``), as
        its last money row says; "" when none of its rows named a payment (it never reached
        the card, or was recorded before payments went through a provider)."""
        return self.payments[-1][2] if self.payments else ""

    @property
    def payment_ids(self) -> list[str]:
        """The provider's payments of this run, each once, in the order they came."""
        return list(dict.fromkeys(pid for _, pid, _ in self.payments if pid))


KNOWN_STEPS = frozenset((*STEPS, *COMPENSATIONS, REAUTHORIZE_HOLD, LATE_PAYMENT_UNDONE))
#: Where a row of each money step leaves the money when it does not say (legacy rows).
MONEY_OF_STEP = {
    STEP_PROCESS_CREDIT_CARD: MONEY_HELD,
    REAUTHORIZE_HOLD: MONEY_HELD,
    STEP_SEND_BILL: MONEY_CAPTURED,
    STEP_REFUND_UNDELIVERED: MONEY_REFUNDED,
}


def runs_of(effects: Iterable[dict[str, Any]]) -> dict[str, RunRows]:
    """Per order_ref (in the order the runs first wrote), its rows added up."""
    runs: dict[str, RunRows] = {}
    for effect in effects:
        run = runs.setdefault(effect["order_ref"], RunRows(effect["order_ref"]))
        run.order_number = effect["order_number"]
        run.numbers.add(effect["order_number"])
        step = effect["step"]
        known = step in KNOWN_STEPS or is_staff_refund(step)
        if not known or effect["idempotency_key"] != idempotency_key(run.order_ref, step):
            run.misfiled.append(effect["idempotency_key"])
        if step == COMPENSATE_REFUND_CUSTOMER:
            run.refund_at = effect["created_at"]
        if effect["tombstone"]:
            run.tombstones.add(step)
            continue
        run.rows[step] += 1
        if effect.get("payment_id"):
            state = effect.get("money_state") or MONEY_OF_STEP.get(step, "")
            run.payments.append((step, effect["payment_id"], state))
        if step == STEP_PROCESS_CREDIT_CARD:
            run.charged += effect["amount"]
            run.cards.append(effect["reference"])
        elif step == COMPENSATE_REFUND_CUSTOMER:
            run.refunded += effect["amount"]
        elif step == STEP_SEND_BILL:
            run.billed += effect["amount"]
            run.bill_at = effect["created_at"]
            run.confirmations.append(effect["reference"])
        elif step == STEP_UPDATE_INVENTORY:
            run.taken.update(effect["ingredients"])
        elif step == COMPENSATE_REVERT_INVENTORY:
            run.put_back.update(effect["ingredients"])
        elif step == STEP_REFUND_UNDELIVERED:
            run.refunded_after_bill += effect["amount"]
        elif is_staff_refund(step):
            if effect["reference"]:  # the provider's refund id: done
                run.refunded_by_staff += effect["amount"]
            else:
                run.staff_refunds_pending += effect["amount"]
    return runs


@dataclass
class OrderLedger:
    """One run's money and stock. ``charged`` is what was put on the card (the hold, then
    captured by the bill), ``refunded`` what the saga's compensation gave back (a released
    hold, or a refund of what was captured), ``refunded_after_bill`` what a billed order
    no driver took got back; ``money`` where the money is now."""

    order_ref: str
    order_number: str
    charged: int
    refunded: int
    billed: int
    stock_held: dict[str, int]
    refunded_after_bill: int = 0
    money: str = ""
    payment_ids: list[str] = field(default_factory=list)
    refunded_by_staff: int = 0  # given back by staff after it completed (pizzeria refund)

    def to_json(self) -> dict[str, Any]:
        workflow_id, run_id = split_order_ref(self.order_ref)
        return {
            "order_number": self.order_number,
            "workflow_id": workflow_id,
            "run_id": run_id,
            "charged": self.charged,
            "refunded": self.refunded,
            "billed": self.billed,
            "refunded_after_bill": self.refunded_after_bill,
            "refunded_by_staff": self.refunded_by_staff,
            "money": self.money,
            "payment_ids": self.payment_ids,
            "stock_held": self.stock_held,
        }


def per_order_totals(effects: list[dict[str, Any]]) -> list[OrderLedger]:
    """Per run: charged, refunded and billed amounts, and the stock it still holds."""
    return [
        OrderLedger(
            run.order_ref,
            run.order_number,
            run.charged,
            run.refunded,
            run.billed,
            dict(run.held),
            run.refunded_after_bill,
            run.money,
            run.payment_ids,
            run.refunded_by_staff,
        )
        for run in runs_of(effects).values()
    ]


@dataclass
class LedgerSnapshot:
    """Everything the ledger holds at one moment (see `Ledger.snapshot`)."""

    stock: dict[str, dict[str, int]]
    effects: list[dict[str, Any]]
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def orders(self) -> list[OrderLedger]:
        return per_order_totals(self.effects)

    def received(self) -> Counter[str]:
        """Portions received per ingredient, delivery by delivery."""
        total: Counter[str] = Counter()
        for delivery in self.deliveries:
            total[delivery["ingredient"]] += delivery["portions"]
        return total

    def stock_flow(self) -> dict[str, dict[str, Any]]:
        """Per ingredient, where its portions went, from the ledger alone: consumed by
        billed orders (past the pivot, never undone), held by the others that took stock
        and did not put it back. ``conserved``: initial + received = in stock + consumed
        + held."""
        consumed: Counter[str] = Counter()
        held: Counter[str] = Counter()
        for run in runs_of(self.effects).values():
            (consumed if run.rows[STEP_SEND_BILL] else held).update(run.held)
        received = self.received()
        flow = {}
        for name, row in self.stock.items():
            figures = {
                "initial": row["initial"],
                "received": received[name],
                "in_stock": row["quantity"],
                "consumed": consumed[name],
                "held": held[name],
            }
            figures["conserved"] = (
                row["initial"] + received[name] == row["quantity"] + consumed[name] + held[name]
            )
            flow[name] = figures
        return flow

    def to_json(self) -> dict[str, Any]:
        """Stock per ingredient (with what deliveries brought) and, per run, what it
        charged, refunded, billed and holds."""
        received = self.received()
        return {
            "stock": {
                name: {**row, "received": received[name]} for name, row in self.stock.items()
            },
            "orders": [order.to_json() for order in self.orders()],
        }
