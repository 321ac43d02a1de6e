"""The invariants, one small function each, over one shared record per run.

Every run either side knows becomes a `RunView`: what Temporal says it became (its
`OrderRecord`, or None for a run Temporal does not know) beside what the ledger shows (its
rows added up, a `pizzeria.ledger.RunRows`). A rule reads one view and writes what it finds
into `Findings`; a new invariant is a new function added to `RUN_RULES`. Tallies
(`RUN_TALLIES`) add up what the report shows without judging it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pizzeria.ledger import LedgerSnapshot, RunRows
from pizzeria.models import COMPENSATION_OF, order_number_of, split_order_ref
from pizzeria.ops.check.records import COMPLETED, OPEN, OrderRecord
from pizzeria.ops.check.report import Violation

# Who holds stock taken by a run that did not put it back, by what the run became.
HOLDERS = ("consumed", "open", "undone", "unknown")


@dataclass
class RunView:
    """One run of an order as both sides see it: the record every rule reads."""

    ref: str
    order_number: str
    run_id: str
    record: OrderRecord | None  # None: the ledger has rows of a run Temporal does not know
    ledger: RunRows

    @property
    def status(self) -> str | None:
        return self.record.status if self.record else None

    @property
    def touches_ledger(self) -> bool:
        """Holds money, a bill or stock (a tombstone alone is harmless)."""
        money = self.ledger
        return bool(money.charged or money.refunded or money.billed or +money.held)

    @property
    def undone(self) -> bool:
        """Closed without completing: it must have undone every effect."""
        return self.record is not None and self.status not in (COMPLETED, OPEN)

    @property
    def holder(self) -> str:
        """Who holds the stock this run still holds (see `HOLDERS`)."""
        if self.record is None:
            return "unknown"
        return {COMPLETED: "consumed", OPEN: "open"}.get(self.status or "", "undone")


@dataclass
class Findings:
    """What the rules found, and the tallies the report adds up."""

    require_closed: bool = False
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    double_effects: int = 0
    refunds_above_charges: int = 0
    held_by: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    settled: Counter[str] = field(default_factory=Counter)  # charged - refunded as it must be
    open_orders: list[str] = field(default_factory=list)

    def violation(self, kind: str, run: RunView, detail: str) -> None:
        self.violations.append(Violation(kind, run.order_number, run.run_id, detail))


RunRule = Callable[[RunView, Findings], None]


def run_views(records: list[OrderRecord], runs: dict[str, RunRows]) -> list[RunView]:
    """Every run Temporal knows (in its order), then every other run the ledger holds."""
    views: dict[str, RunView] = {}
    for record in records:
        ref = record.order_ref
        number = order_number_of(record.workflow_id)
        ledger = runs.get(ref) or RunRows(ref)
        views.setdefault(ref, RunView(ref, number, record.run_id, record, ledger))
    for ref, ledger in runs.items():
        if ref not in views:
            workflow_id, run_id = split_order_ref(ref)
            number = order_number_of(workflow_id) or ledger.order_number
            views[ref] = RunView(ref, number, run_id, None, ledger)
    return list(views.values())


# -- rules: one invariant each ---------------------------------------------------------------


def no_step_after_its_compensations_tombstone(run: RunView, found: Findings) -> None:
    for step, compensation in COMPENSATION_OF.items():
        if run.ledger.rows[step] and compensation in run.ledger.tombstones:
            found.double_effects += 1
            found.violation(
                "late effect after tombstone",
                run,
                f"{step} took effect after {compensation} found nothing to undo",
            )


def no_bill_after_the_refund(run: RunView, found: Findings) -> None:
    bill_at, refund_at = run.ledger.bill_at, run.ledger.refund_at
    if bill_at is not None and refund_at is not None and bill_at > refund_at:
        found.double_effects += 1
        found.violation("late effect after tombstone", run, "billed after the charge was refunded")


def no_step_written_twice(run: RunView, found: Findings) -> None:
    for step, count in run.ledger.rows.items():
        if count > 1:
            found.violation("double effect", run, f"{step} written {count}x")


def no_refund_above_the_charge(run: RunView, found: Findings) -> None:
    if run.ledger.refunded > run.ledger.charged:
        found.refunds_above_charges += 1
        found.violation(
            "refund above charge",
            run,
            f"refunded {run.ledger.refunded} of {run.ledger.charged} charged",
        )


def completed_order_billed_its_confirmation(run: RunView, found: Findings) -> None:
    confirmed = run.record.amount if run.record else None
    if run.status == COMPLETED and confirmed is not None and run.ledger.billed != confirmed:
        found.violation(
            "bill differs from confirmation",
            run,
            f"billed {run.ledger.billed}, confirmed {confirmed}",
        )


def completed_order_charged_its_bill(run: RunView, found: Findings) -> None:
    money = run.ledger
    if run.status == COMPLETED and money.net != money.billed:
        found.violation(
            "charge differs from bill",
            run,
            f"charged {money.charged} - refunded {money.refunded} != billed {money.billed}",
        )


def open_order_only_when_allowed(run: RunView, found: Findings) -> None:
    if run.status == OPEN and found.require_closed:
        assert run.record is not None
        found.violation("still open", run, run.record.details or "running")


def undone_order_kept_nothing(run: RunView, found: Findings) -> None:
    if not run.undone:
        return
    assert run.record is not None
    money, kept = run.ledger, []
    if money.net:
        kept.append(f"charged {money.charged} - refunded {money.refunded} = {money.net}")
    if +money.held:
        kept.append(f"holds {sum(money.held.values())} portions of stock")
    if money.billed:
        kept.append(f"billed {money.billed}")
    if not kept:
        return
    detail = f"{run.record.status.lower()} but " + "; ".join(kept)
    if run.record.settled_by_hand is not None and not money.billed:
        detail += f" (resolved by hand: {run.record.settled_by_hand})"
        warning = Violation("settled outside the ledger", run.order_number, run.run_id, detail)
        found.warnings.append(warning)
    else:
        found.violation("effects kept by an undone order", run, detail)


def no_effects_of_an_unknown_run(run: RunView, found: Findings) -> None:
    if run.record is None and run.touches_ledger:
        found.violation(
            "unknown run",
            run,
            f"the ledger holds effects of {run.ref}, which Temporal does not know",
        )


RUN_RULES: tuple[RunRule, ...] = (
    no_step_after_its_compensations_tombstone,
    no_bill_after_the_refund,
    no_step_written_twice,
    no_refund_above_the_charge,
    completed_order_billed_its_confirmation,
    completed_order_charged_its_bill,
    open_order_only_when_allowed,
    undone_order_kept_nothing,
    no_effects_of_an_unknown_run,
)


# -- tallies: what the report adds up ----------------------------------------------------------


def tally_stock_held(run: RunView, found: Findings) -> None:
    found.held_by[run.holder].update(run.ledger.held)


def tally_settled(run: RunView, found: Findings) -> None:
    """Orders whose charged - refunded is as it must be: the bill, or 0 when undone."""
    money = run.ledger
    if run.status == COMPLETED:
        assert run.record is not None
        confirmed = money.billed if run.record.amount is None else run.record.amount
        found.settled["completed"] += money.net == money.billed == confirmed
    elif run.undone:
        found.settled["undone"] += money.net == 0


def tally_open_orders(run: RunView, found: Findings) -> None:
    if run.status == OPEN:
        found.open_orders.append(run.order_number)


RUN_TALLIES: tuple[RunRule, ...] = (tally_stock_held, tally_settled, tally_open_orders)


# -- rules over the whole ledger ---------------------------------------------------------------


def no_key_written_twice(snapshot: LedgerSnapshot, found: Findings) -> None:
    keys = Counter(effect["idempotency_key"] for effect in snapshot.effects)
    duplicate_keys = sum(1 for count in keys.values() if count > 1)
    found.double_effects += duplicate_keys
    if duplicate_keys:
        found.violations.append(
            Violation("double effect", "-", "-", f"{duplicate_keys} idempotency keys hold 2+ rows")
        )


def stock_conserved(snapshot: LedgerSnapshot, found: Findings) -> dict[str, dict[str, Any]]:
    """Per ingredient: never negative, and initial = in stock + what the runs hold."""
    stock: dict[str, dict[str, Any]] = {}
    for name, row in snapshot.stock.items():
        held = {holder: found.held_by[holder][name] for holder in HOLDERS}
        conserved = row["initial"] == row["quantity"] + sum(held.values())
        stock[name] = {
            "initial": row["initial"],
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
                f"initial {row['initial']} != in stock {row['quantity']} + held "
                f"{sum(held.values())}"
            )
            found.violations.append(Violation("stock not conserved", name, "-", detail))
    return stock
