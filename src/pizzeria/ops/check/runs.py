"""The ledger's side of the check: each run's rows, added up."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pizzeria.ledger import LedgerSnapshot
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
)


@dataclass
class RunLedger:
    """One run's rows in the ledger, added up."""

    order_number: str = ""
    charged: int = 0
    refunded: int = 0
    billed: int = 0
    held: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)  # written (not tombstone) per step
    tombstones: set[str] = field(default_factory=set)
    refund_at: float | None = None
    bill_at: float | None = None

    @property
    def net(self) -> int:
        return self.charged - self.refunded

    @property
    def touches_anything(self) -> bool:
        return bool(self.charged or self.refunded or self.billed or +self.held)


def runs_in(snapshot: LedgerSnapshot) -> tuple[dict[str, RunLedger], int]:
    """Per order reference, its rows added up; and how many keys hold more than one row."""
    runs: dict[str, RunLedger] = defaultdict(RunLedger)
    keys = Counter(effect["idempotency_key"] for effect in snapshot.effects)
    taken: dict[str, Counter[str]] = defaultdict(Counter)
    for effect in snapshot.effects:
        run = runs[effect["order_ref"]]
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
            taken[effect["order_ref"]].update(effect["ingredients"])
    for ref, ingredients in taken.items():
        if not runs[ref].rows[COMPENSATE_REVERT_INVENTORY]:
            runs[ref].held = ingredients
    return dict(runs), sum(1 for count in keys.values() if count > 1)
