"""Temporal's records against one ledger snapshot and the payment provider's records:
every rule, then the report."""

from __future__ import annotations

import asyncio
from collections import Counter

from temporalio.client import Client

from pizzeria.ledger import Ledger, LedgerSnapshot, runs_of
from pizzeria.models import order_number_of, split_order_ref
from pizzeria.ops.check.account import payment_figures, unclaimed_objects
from pizzeria.ops.check.money_rules import MONEY_RULES
from pizzeria.ops.check.provider import (
    ProviderBook,
    RunMoney,
    attach,
    check_gateway,
    money_rows,
    provider_refs,
    read_provider,
    run_of,
)
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
from pizzeria.ops.check.report import CheckReport, Violation
from pizzeria.ops.check.rules import RUN_RULES, RUN_TALLIES
from pizzeria.ops.check.stock import stock_conserved
from pizzeria.ops.check.views import Findings, RunView, run_views
from pizzeria.payments.port import MoneyState, Payment, PaymentGateway


def reconcile(
    records: list[OrderRecord],
    snapshot: LedgerSnapshot,
    *,
    require_closed: bool = False,
    provider: ProviderBook | None = None,
    whole_account: bool = False,
) -> CheckReport:
    """Every invariant between Temporal's records, one ledger snapshot and, when given,
    the payment provider's records (read after the snapshot)."""
    views = run_views(records, runs_of(snapshot.effects))
    found = Findings(require_closed=require_closed)
    unclaimed: list[Payment] = []
    if provider is not None:
        money = {view.ref: RunMoney() for view in views}
        unclaimed = attach(money, provider, money_rows(snapshot.effects))
        for view in views:
            view.money = money[view.ref]
    for rule in (*RUN_RULES, *MONEY_RULES):
        for view in views:
            rule(view, found)
    for tally in RUN_TALLIES:
        for view in views:
            tally(view, found)
    payments = None
    if provider is not None:
        foreign = unclaimed_objects(views, provider, unclaimed, found, whole_account=whole_account)
        payments = payment_figures(views, foreign)
        if foreign:
            found.warnings.append(other_orders_warning(foreign))
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
        payments=payments,
    )


def other_orders_warning(count: int) -> Violation:
    return Violation(
        "not judged",
        "-",
        "-",
        f"{count} payments and refunds at the payment provider name no order Temporal or "
        "the ledger knows (another deployment sharing the account, or runs Temporal no "
        "longer keeps); --whole-account judges them",
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
    # Given back past the bill: to an order no driver took, and by staff.
    after_bill = sum(v.ledger.refunded_after_bill + v.ledger.refunded_by_staff for v in views)
    return {
        "charged": charged,
        "refunded": refunded,
        "net": charged - refunded,
        "refunded_after_bill": after_bill,
        "kept": charged - refunded - after_bill,
        "billed_completed": sum(v.ledger.billed for v in views if v.status == "COMPLETED"),
        # per order: charged - refunded is the bill (completed) or 0 (undone)
        "completed_orders_settled": found.settled["completed"],
        "undone_orders_settled": found.settled["undone"],
    }


#: A verdict with violations is made again once, on a new read of the ledger and the
#: provider after this pause: a move of money in flight while the check read (a staff
#: refund, a late step undoing itself) shows as a difference between two books that only
#: one of them had yet. A real violation is there both times.
SECOND_LOOK_SECONDS = 0.5


async def check_orders(
    client: Client,
    ledger: Ledger,
    *,
    query: str = DEFAULT_QUERY,
    require_closed: bool = False,
    progress: Progress | None = None,
    payments: PaymentGateway | None = None,
    whole_account: bool = False,
) -> CheckReport:
    """Temporal first, then the ledger, then the payment provider (``payments``, else the
    one the workers use: `provider.check_gateway`): see the package docstring for why.

    Raises `CannotCheck` when a run that matters cannot be decrypted with this checker's
    keys (a verdict on it would be a guess), or the provider cannot be read.
    """
    gateway = payments or check_gateway()
    try:
        records = await temporal_records(client, query, progress=progress)
        for look in range(2):
            if look:
                await asyncio.sleep(SECOND_LOOK_SECONDS)
            snapshot = await asyncio.to_thread(ledger.snapshot)
            book = await read_provider(gateway)
            records += await missing_records(client, records, snapshot, book, whole_account)
            report = reconcile(
                records,
                snapshot,
                require_closed=require_closed,
                provider=book,
                whole_account=whole_account,
            )
            if report.ok:
                break
        return report
    finally:
        if payments is None:
            await gateway.close()


async def missing_records(
    client: Client,
    records: list[OrderRecord],
    snapshot: LedgerSnapshot,
    book: ProviderBook,
    whole_account: bool,
) -> list[OrderRecord]:
    """The runs the ledger or the provider names that Temporal's list lacked (visibility
    may lag behind a new run: ask for each directly), once `refuse_undecryptable` found
    every run that matters readable."""
    listed = {record.order_ref for record in records}
    ledger_refs = {effect["order_ref"] for effect in snapshot.effects}
    known = {record.workflow_id for record in records}
    known |= {split_order_ref(ref)[0] for ref in ledger_refs}
    judged = {
        ref for ref in provider_refs(book) if whole_account or split_order_ref(ref)[0] in known
    }
    missing = sorted((ledger_refs | judged) - listed)
    found = await describe_all(client, [split_order_ref(ref) for ref in missing if "/" in ref])
    wrote = {effect["order_ref"] for effect in snapshot.effects if not effect["tombstone"]}
    held = {
        ref
        for payment in book.payments.values()
        if payment.state != MoneyState.DECLINED
        and not payment.is_placeholder
        and (ref := run_of(payment)) in judged
    }
    refuse_undecryptable([*records, *found], wrote | held)
    return found


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
