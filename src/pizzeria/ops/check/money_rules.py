"""The invariants of the third book: the payment provider's records against the ledger's
and Temporal's, one small function each, over the same `RunView` as the other rules.

A run's `RunView.money` (`provider.RunMoney`) holds the provider's payments and refunds of
the run and the ledger's rows that name a payment. Per run:

* every payment holds the charge amount, the bill with its discount
  (`held_the_charge_amount`), in dollars, on the card the ledger's hold names
  (`held_on_the_order_card`);
* a payment is captured iff the ledger billed it, for the bill's amount
  (`captured_as_billed`), and its charge says it captured what the payment says
  (`charge_as_its_payment`);
* an undone order's payments were released (voided) or expired, never kept; a completed
  order's never voided; each release the ledger records is one at the provider
  (`released_as_compensated`);
* refunds at the provider are those the ledger records (the refund of an order no driver
  took, staff refunds), never beyond what was captured (`refunds_as_recorded`), and a
  delivery that failed was refunded in full (`undelivered_order_refunded_in_full`, which
  reads only the ledger and Temporal); a staff refund claimed and never answered is a
  warning (`staff_refunds_answered`);
* every payment the ledger names exists at the provider, for this run
  (`payments_the_ledger_names_exist`); every payment of the run is one the ledger names
  (`payments_recorded_in_the_ledger`); the payment a bill captured is one a hold row
  records (`bills_capture_a_recorded_hold`);
* no hold is left uncaptured once its run ended (`no_orphan_hold`);
* a placeholder (a compensation spent the key of a hold that never reached the provider
  on it) holds nothing, and is voided once its run ended (`placeholders_hold_nothing`).

Moves in flight are not violations: a run still open is judged only on what the provider
must already show (see `provider`'s docstring). And across the provider's whole account,
`account.unclaimed_objects`: no payment or refund without a run.
"""

from __future__ import annotations

from pizzeria.ledger.records import REAUTHORIZE_HOLD
from pizzeria.models import (
    STATUS_DELIVERY_FAILURE,
    STEP_PROCESS_CREDIT_CARD,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    dollars,
)
from pizzeria.ops.check.provider import (
    UNDOING_STEPS,
    RunMoney,
    is_held,
    run_of,
)
from pizzeria.ops.check.records import COMPLETED, OPEN
from pizzeria.ops.check.report import Violation
from pizzeria.ops.check.views import Findings, RunRule, RunView
from pizzeria.order_refund import REFUND_UNDELIVERED_PATCH
from pizzeria.payments.port import CURRENCY, MoneyState, Payment

#: The rows that record a hold: the charge's, and the bill's renewal of an expired one.
HOLD_STEPS = (STEP_PROCESS_CREDIT_CARD, REAUTHORIZE_HOLD)
#: What the provider may say of a payment the ledger says was undone, by the ledger's word.
UNDONE_AS = {
    "released": (MoneyState.RELEASED, MoneyState.EXPIRED),
    "expired": (MoneyState.EXPIRED,),
    "refunded": (MoneyState.REFUNDED,),
}


def money_of(run: RunView) -> RunMoney | None:
    """The run's money in both books, when the provider was read and either names it."""
    return run.money if run.money is not None and run.money.touched else None


def ended(run: RunView) -> bool:
    """Closed, or a run Temporal does not know: no move of its money is still in flight."""
    return run.status != OPEN


def shown(payment: Payment, amount: bool = False) -> str:
    """A payment as a violation names it: its id and state (and the amount it was for)."""
    said = f"{payment.state}, {dollars(payment.amount)}" if amount else str(payment.state)
    return f"payment {payment.id} ({said})"


# -- rules: one invariant each ---------------------------------------------------------------


def held_the_charge_amount(run: RunView, found: Findings) -> None:
    money, asked = money_of(run), run.asked
    if money is None or asked is None:
        return
    for payment in money.all_payments.values():
        if payment.state != MoneyState.DECLINED and payment.amount != asked.amount:
            found.violation(
                "hold differs from the order",
                run,
                f"{shown(payment)} is for {dollars(payment.amount)}; its items come to "
                f"{dollars(asked.amount)}",
            )


def held_on_the_order_card(run: RunView, found: Findings) -> None:
    """Every payment is in dollars, on the card the ledger's hold names (its last four)."""
    money = money_of(run)
    if money is None:
        return
    cards = {card for card in run.ledger.cards if card}
    for payment in money.all_payments.values():
        if payment.currency != CURRENCY:
            found.violation(
                "payment in another currency",
                run,
                f"{shown(payment)} is in {payment.currency}; orders are paid in {CURRENCY}",
            )
        if cards and payment.card_last4 and payment.card_last4 not in cards:
            found.violation(
                "payment on another card",
                run,
                f"{shown(payment)} is on the card ending {payment.card_last4}; the ledger's "
                f"hold is on the card ending {', '.join(sorted(cards))}",
            )


def captured_as_billed(run: RunView, found: Findings) -> None:
    """Captured iff billed, for the bill: a capture nobody billed is money taken without a
    sale (an undone order's is `released_as_compensated`'s)."""
    money = money_of(run)
    if money is None:
        return
    for payment_id, payment in money.all_payments.items():
        billed, captured = money.billed(payment_id), payment.amount_captured
        if billed and captured != billed:
            found.violation(
                "capture differs from the bill",
                run,
                f"{shown(payment)} captured {dollars(captured)}; the ledger billed "
                f"{dollars(billed)} on it",
            )
        elif not billed and captured and ended(run) and not run.undone:
            found.violation(
                "captured without a bill",
                run,
                f"{shown(payment)} captured {dollars(captured)}; the ledger billed nothing on it",
            )


def charge_as_its_payment(run: RunView, found: Findings) -> None:
    """The provider keeps what it took twice, on the payment and on its charge (refunds
    are measured against the charge's): the two agree."""
    money = money_of(run)
    if money is None:
        return
    for payment in money.all_payments.values():
        said = payment.charge_captured
        if said is not None and said != payment.amount_captured:
            found.violation(
                "charge differs from its payment",
                run,
                f"{shown(payment)} took {dollars(payment.amount_captured)}; its charge says "
                f"{dollars(said)} captured",
            )


def released_as_compensated(run: RunView, found: Findings) -> None:
    """Released (voided) iff compensated before the pivot."""
    money = money_of(run)
    if money is None or not ended(run):
        return
    for payment_id, payment in money.all_payments.items():
        if run.status == COMPLETED and payment.state == MoneyState.RELEASED:
            found.violation(
                "released by a completed order",
                run,
                f"{shown(payment)} was voided; a completed order undoes nothing",
            )
        if run.undone and payment.amount_captured and not money.undone_in_full(payment_id):
            assert run.record is not None
            found.violation(
                "captured by an undone order",
                run,
                f"{run.record.status.lower()} but {shown(payment)} captured "
                f"{dollars(payment.amount_captured)}",
            )
        for row in money.rows_of(payment_id, *UNDOING_STEPS):
            allowed = UNDONE_AS.get(row.state)
            if allowed is not None and payment.state not in allowed:
                found.violation(
                    "release differs from the ledger",
                    run,
                    f"the ledger's {row.step} left {payment.id} {row.state}; the provider "
                    f"says {payment.state}",
                )


def refunds_as_recorded(run: RunView, found: Findings) -> None:
    """The provider's refunds of each payment are the ledger's: all it captured when a
    compensation undid it, else the refunds the ledger records (a staff refund claimed
    and not yet answered may or may not be made); never beyond the capture."""
    money = money_of(run)
    if money is None or not ended(run):
        return
    for payment_id, payment in money.all_payments.items():
        given, recorded = money.provider_refunds(payment_id), money.ledger_refunds(payment_id)
        billed = money.billed(payment_id)
        pending = run.ledger.staff_refunds_pending if billed else 0
        if money.undone_in_full(payment_id):
            recorded = payment.amount_captured
        if not recorded <= given <= recorded + pending:
            also = f" (and {dollars(pending)} pending)" if pending else ""
            found.violation(
                "refunds differ from the ledger",
                run,
                f"{shown(payment)}: refunded {dollars(given)} at the provider; the ledger "
                f"says {dollars(recorded)}{also}",
            )
        limit, in_ledger = payment.amount_captured, money.ledger_refunds(payment_id) + pending
        if given > limit or in_ledger > billed:
            found.refunds_above_charges += 1
            # Each side against its own bill: the ledger's refunds may pass the ledger's
            # bill while both are within what the provider captured.
            found.violation(
                "refund above capture",
                run,
                f"{shown(payment)}: captured {dollars(limit)}, refunded {dollars(given)} at "
                f"the provider; billed {dollars(billed)}, refunded {dollars(in_ledger)} in "
                "the ledger",
            )


def staff_refunds_answered(run: RunView, found: Findings) -> None:
    """A staff refund claimed whose provider's answer was never recorded is a warning:
    the same `pizzeria refund` again (same key) finishes it, exactly once."""
    pending = run.ledger.staff_refunds_pending
    if pending:
        detail = (
            f"{dollars(pending)} of staff refunds claimed, the provider's answer not "
            "recorded: give the same refund again with the same key to finish it"
        )
        found.warnings.append(
            Violation("staff refund pending", run.order_number, run.run_id, detail)
        )


def undelivered_order_refunded_in_full(run: RunView, found: Findings) -> None:
    """A billed order no driver took is refunded its whole bill (orders started before
    the refund step existed keep theirs); a delivered one gets no such refund."""
    if run.status != COMPLETED or run.record is None or run.record.confirmation is None:
        return
    undelivered = run.record.confirmation.status == STATUS_DELIVERY_FAILURE
    rows, billed = run.ledger, run.ledger.billed
    refunded = rows.refunded_after_bill
    if not undelivered and rows.rows[STEP_REFUND_UNDELIVERED]:
        detail = f"refunded {dollars(refunded)} as undelivered; the order was delivered"
        found.violation("undelivered refund of a delivered order", run, detail)
    elif undelivered and REFUND_UNDELIVERED_PATCH in run.record.patches and refunded != billed:
        found.violation(
            "undelivered order not refunded in full",
            run,
            f"no driver took it: refunded {dollars(refunded)} of its bill {dollars(billed)}",
        )


def payments_the_ledger_names_exist(run: RunView, found: Findings) -> None:
    """No run's money without its provider object (the provider moves first, and is read
    last: this holds for open runs too)."""
    money = run.money
    if money is None:
        return
    for row in {row.payment_id: row for row in money.rows}.values():
        payment = money.named[row.payment_id]
        if payment is None:
            found.violation(
                "payment missing at the provider",
                run,
                f"the ledger's {row.step} names {row.payment_id} ({row.state}, "
                f"{dollars(row.amount)}); the provider has no such payment",
            )
        elif run_of(payment) != run.ref:
            found.violation(
                "payment of another run",
                run,
                f"the ledger's {row.step} names {shown(payment)}, which belongs to "
                f"{run_of(payment) or 'no run'}",
            )


def payments_recorded_in_the_ledger(run: RunView, found: Findings) -> None:
    """Every payment naming a run that ended is one its ledger rows name (a declined
    card held nothing: the ledger has no row for it)."""
    money = money_of(run)
    if money is None or not ended(run):
        return
    for payment_id, payment in money.payments.items():
        if payment.state != MoneyState.DECLINED and payment_id not in money.named:
            found.violation(
                "payment the ledger does not record",
                run,
                f"{shown(payment, amount=True)} names this run; no ledger row names it",
            )


def bills_capture_a_recorded_hold(run: RunView, found: Findings) -> None:
    """The payment a bill captured is one a hold row records: the charge's, or the
    bill's renewal of an expired hold (``reauthorize_hold``). Both are written before the
    bill captures, so this holds for open runs too; a hold row deleted from the ledger
    leaves the bill naming a hold nobody recorded."""
    money = run.money
    if money is None:
        return
    held = {row.payment_id for row in money.rows if row.step in HOLD_STEPS}
    for row in money.rows:
        if row.step == STEP_SEND_BILL and row.payment_id not in held:
            found.violation(
                "bill of a hold the ledger does not record",
                run,
                f"the ledger's {row.step} captured {row.payment_id}; no "
                f"{' or '.join(HOLD_STEPS)} row names it",
            )


def no_orphan_hold(run: RunView, found: Findings) -> None:
    """A hold still waiting for its capture (``requires_capture``) once its run ended."""
    money = money_of(run)
    if money is None or not ended(run):
        return
    how = run.record.status.lower() if run.record is not None else "unknown to Temporal"
    for payment in money.all_payments.values():
        if is_held(payment):
            found.violation(
                "orphan hold",
                run,
                f"{shown(payment)} still holds {dollars(payment.amount_capturable)} "
                f"uncaptured; the order is {how}",
            )


def placeholders_hold_nothing(run: RunView, found: Findings) -> None:
    """A placeholder never holds or takes money, and is voided before its run ends (the
    compensation that made it voids it before it records the release)."""
    money = run.money
    if money is None:
        return
    for payment in money.placeholders.values():
        if payment.amount_capturable or payment.amount_captured:
            found.violation(
                "placeholder holds money",
                run,
                f"{shown(payment)} holds {dollars(payment.amount_capturable)} and captured "
                f"{dollars(payment.amount_captured)}; it was made to hold nothing",
            )
        elif ended(run) and payment.state != MoneyState.RELEASED:
            found.violation("placeholder left open", run, f"{shown(payment)} was never voided")


MONEY_RULES: tuple[RunRule, ...] = (
    held_the_charge_amount,
    held_on_the_order_card,
    captured_as_billed,
    charge_as_its_payment,
    released_as_compensated,
    refunds_as_recorded,
    undelivered_order_refunded_in_full,
    staff_refunds_answered,
    payments_the_ledger_names_exist,
    payments_recorded_in_the_ledger,
    bills_capture_a_recorded_hold,
    no_orphan_hold,
    placeholders_hold_nothing,
)
