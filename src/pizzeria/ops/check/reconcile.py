"""Temporal's records against one ledger snapshot: every rule, then the report."""

from __future__ import annotations

import asyncio
from collections import Counter

from temporalio.client import Client

from pizzeria.ledger import Ledger, LedgerSnapshot, runs_of
from pizzeria.models import order_number_of, split_order_ref
from pizzeria.ops.check.records import (
    COMPLETED,
    DEFAULT_QUERY,
    OPEN,
    OUTCOMES,
    CannotCheck,
    OrderRecord,
    Progress,
    describe_all,
    temporal_records,
)
from pizzeria.ops.check.report import CheckReport
from pizzeria.ops.check.rules import RUN_RULES, RUN_TALLIES, Findings, RunView, run_views
from pizzeria.ops.check.stock import stock_conserved


def reconcile(
    records: list[OrderRecord], snapshot: LedgerSnapshot, *, require_closed: bool = False
) -> CheckReport:
    """Every invariant between Temporal's records and one ledger snapshot."""
    views = run_views(records, runs_of(snapshot.effects))
    found = Findings(require_closed=require_closed)
    for rule in RUN_RULES:
        for view in views:
            rule(view, found)
    for tally in RUN_TALLIES:
        for view in views:
            tally(view, found)
    stock = stock_conserved(snapshot, found)
    known = [view.record for view in views if view.record is not None]
    return CheckReport(
        orders=order_counts(known),
        failures=dict(
            Counter(r.error_type or "unknown" for r in known if r.status == "FAILED").most_common()
        ),
        stock=stock,
        money=money_figures(views, found),
        double_effects=found.double_effects,
        refunds_above_charges=found.refunds_above_charges,
        open_orders=sorted(found.open_orders),
        violations=found.violations,
        warnings=found.warnings,
    )


def order_counts(records: list[OrderRecord]) -> dict[str, int]:
    """How many orders ended how: every outcome named, then any other status seen."""
    outcomes = Counter(record.status for record in records)
    return {
        "total": len(records),
        **{status.lower(): outcomes[status] for status in OUTCOMES if status != OPEN},
        "open": outcomes[OPEN],
        **{status.lower(): n for status, n in outcomes.items() if status not in OUTCOMES},
    }


def money_figures(views: list[RunView], found: Findings) -> dict[str, int]:
    charged = sum(view.ledger.charged for view in views)
    refunded = sum(view.ledger.refunded for view in views)
    return {
        "charged": charged,
        "refunded": refunded,
        "net": charged - refunded,
        "billed_completed": sum(v.ledger.billed for v in views if v.status == "COMPLETED"),
        # per order: charged - refunded is the bill (completed) or 0 (undone)
        "completed_orders_settled": found.settled["completed"],
        "undone_orders_settled": found.settled["undone"],
    }


async def check_orders(
    client: Client,
    ledger: Ledger,
    *,
    query: str = DEFAULT_QUERY,
    require_closed: bool = False,
    progress: Progress | None = None,
) -> CheckReport:
    """Temporal first, then the ledger: see the package docstring for why.

    Raises `CannotCheck` when a run that matters cannot be decrypted with this checker's
    keys: a verdict on it would be a guess.
    """
    records = await temporal_records(client, query, progress=progress)
    snapshot = await asyncio.to_thread(ledger.snapshot)
    # A run can be missing from the list while visibility catches up: ask for it directly.
    listed = {record.order_ref for record in records}
    missing = sorted({effect["order_ref"] for effect in snapshot.effects} - listed)
    records += await describe_all(client, [split_order_ref(ref) for ref in missing if "/" in ref])
    refuse_undecryptable(
        records, {effect["order_ref"] for effect in snapshot.effects if not effect["tombstone"]}
    )
    return reconcile(records, snapshot, require_closed=require_closed)


def refuse_undecryptable(records: list[OrderRecord], wrote: set[str]) -> None:
    """A run that wrote to the ledger, or completed, must be read to be judged (a run
    with tombstones only is judged by its status alone)."""
    for record in records:
        if record.undecryptable and (record.status == COMPLETED or record.order_ref in wrote):
            raise CannotCheck(
                f"cannot decrypt order {order_number_of(record.workflow_id)} "
                f"(run {record.run_id}): {record.undecryptable}; run the check with the key "
                "its payloads were encrypted with (PIZZERIA_CODEC_KEY or the key file)"
            )
