"""The payment provider's whole account, beyond what the rules of each run judge: no
object without a run (`unclaimed_objects`), and the figures the report shows of the
payments judged (`payment_figures`).
"""

from __future__ import annotations

from collections import Counter

from pizzeria.models import dollars, order_number_of, split_order_ref
from pizzeria.ops.check.money_rules import shown
from pizzeria.ops.check.provider import ProviderBook, RunMoney, is_held, run_of
from pizzeria.ops.check.records import COMPLETED
from pizzeria.ops.check.report import Violation
from pizzeria.ops.check.views import Findings, RunView
from pizzeria.payments.port import ORDER_NUMBER, RUN_ID, Payment


def unclaimed_objects(
    views: list[RunView],
    book: ProviderBook,
    unclaimed: list[Payment],
    found: Findings,
    *,
    whole_account: bool,
) -> int:
    """No provider object without a run: a payment naming no run, or a run that does not
    exist, of an order we know (of any order, with ``whole_account``); a refund of a
    payment the provider does not list. Returns how many objects were left unjudged:
    those of orders neither Temporal nor the ledger knows (another deployment sharing the
    account, or runs Temporal no longer keeps)."""
    known = {split_order_ref(view.ref)[0] for view in views}
    foreign: set[str] = set()
    for payment in unclaimed:
        ref = run_of(payment)
        workflow_id, run_id = split_order_ref(ref) if ref else ("", "-")
        if not whole_account and workflow_id not in known:
            foreign.add(payment.id)
            continue
        number = payment.metadata.get(ORDER_NUMBER) or order_number_of(workflow_id) or "-"
        if ref:
            detail = (
                f"names run {run_id} of order {number}, which neither Temporal nor the ledger knows"
            )
        else:
            detail = "names no run in its metadata"
        run_shown = run_id if ref else payment.metadata.get(RUN_ID) or "-"
        found.violations.append(
            Violation(
                "payment of no known run", number, run_shown, f"{shown(payment, True)} {detail}"
            )
        )
    for refund in book.refunds:
        if refund.payment_id in foreign:
            foreign.add(refund.id)
        elif refund.payment_id not in book.payments:
            detail = (
                f"refund {refund.id} of {dollars(refund.amount)} names payment "
                f"{refund.payment_id or '(none)'}, which the provider does not list"
            )
            found.violations.append(Violation("refund of no known payment", "-", "-", detail))
    return len(foreign)


FIGURES = (
    "payments",
    "refunds",
    "held",
    "captured",
    "refunded",
    "completed_orders_settled",
    "undone_orders_settled",
    "not_judged",
)


def payment_figures(views: list[RunView], foreign: int) -> dict[str, int]:
    """What the provider holds for the runs judged, and per order whether captured -
    refunded is as it must be (the bill less the refunds the ledger records, or 0)."""
    figures: Counter[str] = Counter(not_judged=foreign)
    for view in views:
        money = view.money or RunMoney()
        payments = money.all_payments
        captured = sum(p.amount_captured for p in payments.values())
        refunded = sum(money.provider_refunds(pid) for pid in payments)
        figures["payments"] += len(payments)
        figures["refunds"] += sum(len(money.refunds.get(pid, [])) for pid in payments)
        figures["held"] += sum(p.amount_capturable for p in payments.values() if is_held(p))
        figures["captured"] += captured
        figures["refunded"] += refunded
        kept = view.ledger.billed - sum(money.ledger_refunds(pid) for pid in payments)
        pending = view.ledger.staff_refunds_pending
        held = any(is_held(payment) for payment in payments.values())
        if view.status == COMPLETED:
            settled = kept - pending <= captured - refunded <= kept
            figures["completed_orders_settled"] += settled and not held
        elif view.undone:
            figures["undone_orders_settled"] += captured == refunded and not held
    return {key: figures[key] for key in FIGURES}
