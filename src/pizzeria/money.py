"""The order's money at the payment provider, each move exactly once and in the ledger.

The activities (activities.py) call these; the provider is reached only through the
payment port (`pizzeria.payments.port.PaymentGateway`), the ledger records each move with
the provider's payment id, under the run's key ``<workflow id>/<run id>/<step>``:

- the card step **holds** the amount (`OrderMoney.hold`);
- the bill, the pivot, **captures** the hold (`OrderMoney.capture`); a hold that expired
  before the bill is authorized again, once, under a key of its own;
- the card step's compensation **releases** the hold, or refunds what was captured
  (`OrderMoney.release`); for a run whose hold the ledger never heard of it *settles* the
  hold's key at the provider (no request with it can hold anything afterwards) and
  releases the hold that key made, if any;
- a billed order no driver took is **refunded** in full (`OrderMoney.refund_after_bill`).

Every provider call carries an idempotency key derived from the run and the step
(`payment_key`): a retry after a lost answer, a timeout or a dead worker gets the stored
answer, never a second hold, capture or refund. A step that reaches the provider after its
compensation ran (a late attempt) undoes its own payment at once, so no run leaves a hold
behind. `PaymentUnavailable` and the other provider failures are left to Temporal's
retries; a card's verdict is a `CardRefused`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pizzeria.ledger import (
    REAUTHORIZE_HOLD,
    Effect,
    LateStepRefused,
    Ledger,
    idempotency_key,
)
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    MONEY_CAPTURED,
    MONEY_HELD,
    MONEY_REFUNDED,
    MONEY_RELEASED,
    STEP_PROCESS_CREDIT_CARD,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    Bill,
    CardCharge,
    RunRef,
)
from pizzeria.payments.errors import IdempotencyKeyReused, PaymentDeclined, PaymentStateError
from pizzeria.payments.port import MoneyState, Payment, PaymentGateway, order_metadata

log = logging.getLogger(__name__)
T = TypeVar("T")
LedgerCall = Callable[..., Awaitable[Any]]

#: The provider's code for a number that is no card number, and what the exercise's
#: clients have always been told for it.
INCORRECT_NUMBER = "incorrect_number"
INVALID_CARD_MESSAGE = "Invalid credit card number"
REAUTHORIZE = "reauthorize"
CAPTURE_REAUTHORIZED = "capture-reauthorized"
REFUND_CAPTURED = "refund"
UNDO_LATE = "undo-late"
UNDELIVERED_REASON = "not delivered: no driver took the order"


def payment_key(order_ref: str, step: str, operation: str = "") -> str:
    """The provider's idempotency key of one move of one run: the ledger's key of the
    step, with the operation when the step makes more than one."""
    key = idempotency_key(order_ref, step)
    return f"{key}/{operation}" if operation else key


@dataclass
class CardRefused(Exception):
    """The card's verdict, for the order's ``CreditCardProcessingError``: the message the
    client sees and the provider's codes (none for the exercise's invalid number, whose
    failure stays exactly as it always was)."""

    message: str
    details: dict[str, str | None]

    def __str__(self) -> str:
        return self.message


def refused(declined: PaymentDeclined, doing: str = "") -> CardRefused:
    if declined.code == INCORRECT_NUMBER and not doing:
        return CardRefused(INVALID_CARD_MESSAGE, {})
    details = {"code": declined.code, "decline_code": declined.decline_code}
    message = declined.message or "The card was declined"
    return CardRefused(f"{doing}{message}", details)


class OrderMoney:
    """The money moves of every run, through ``gateway``, recorded in ``ledger``.
    ``call(function, *args)`` runs a blocking ledger call (the activities' thread hop)."""

    def __init__(self, ledger: Ledger, gateway: PaymentGateway, call: LedgerCall) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.call = call

    async def _rows(self, order_ref: str) -> dict[str, Effect]:
        rows: dict[str, Effect] = await self.call(self.ledger.run_rows, order_ref)
        return rows

    # -- process_credit_card ---------------------------------------------------------------

    async def hold(self, charge: CardCharge) -> Effect:
        """Hold the charge's amount on its card, once per run; the ledger row of the hold.

        Raises `CardRefused` for the card's verdict, `LateStepRefused` when the run's
        refund already ran (before the provider is asked, or after: the hold is then
        released at once)."""
        ref, number = charge.order_ref, charge.order_number
        rows = await self._rows(ref)
        held = rows.get(STEP_PROCESS_CREDIT_CARD)
        if held is not None or COMPENSATE_REFUND_CUSTOMER in rows:
            # A repeat finds the hold's row; a step after its refund is refused: both by
            # the ledger itself, and neither asks the provider anything.
            return await self._rewrite(self.ledger.charge, ref, number, charge.amount, held)
        card = charge.credit_card
        try:
            payment = await self.gateway.authorize(
                charge.amount,
                idempotency_key=payment_key(ref, STEP_PROCESS_CREDIT_CARD),
                metadata=order_metadata(ref, number),
                card_number=None if card.payment_method else card.number,
                payment_method=card.payment_method,
            )
        except PaymentDeclined as declined:
            raise refused(declined) from None
        except IdempotencyKeyReused:
            await self._refuse_if_key_spent(ref)
            raise
        last4 = card.last4 or payment.card_last4 or ""
        return await self._record(
            STEP_PROCESS_CREDIT_CARD,
            payment,
            self.ledger.charge,
            ref,
            number,
            charge.amount,
            last4,
            payment_id=payment.id,
            money_state=MONEY_HELD,
        )

    async def _refuse_if_key_spent(self, ref: str) -> None:
        """`LateStepRefused` once the compensation ran: it spent the hold's key."""
        if COMPENSATE_REFUND_CUSTOMER in await self._rows(ref):
            raise LateStepRefused(f"{ref} was already refunded; its hold's key is spent")

    async def _rewrite(
        self,
        write: Callable[..., Effect],
        ref: str,
        number: str,
        amount: int,
        found: Effect | None,
        reference: str = "",
    ) -> Effect:
        """The step's row written again as it is (the ledger answers the row: a repeat),
        or, when there is none yet, refused by the ledger (the run's refund already ran)."""
        if found is None:
            await self.call(write, ref, number, amount, reference)  # raises LateStepRefused
            raise LateStepRefused(f"{ref} was already refunded")
        effect: Effect = await self.call(
            write,
            ref,
            number,
            found.amount,
            found.reference,
            payment_id=found.payment_id,
            money_state=found.money_state,
        )
        return effect

    async def _record(
        self, step: str, payment: Payment, write: Callable[..., Effect], *args: Any, **kw: Any
    ) -> Effect:
        """Write the ledger row of a payment just made; when the ledger refuses it (the
        step's compensation ran meanwhile), undo the payment before saying so."""
        try:
            effect: Effect = await self.call(write, *args, **kw)
        except LateStepRefused:
            await self._undo_late(args[0], args[1], step, payment)
            raise
        return effect

    async def _undo_late(self, ref: str, number: str, step: str, payment: Payment) -> None:
        key = payment_key(ref, step, UNDO_LATE)
        current = await self.gateway.get(payment.id)
        if current.state == MoneyState.HELD:
            current = await self.gateway.void(payment.id, idempotency_key=key)
        elif current.state == MoneyState.CAPTURED:
            await self.gateway.refund(payment.id, reason="a late step", idempotency_key=key)
            current = await self.gateway.get(payment.id)
        log.warning("Late %s for %s: payment %s undone (%s)", step, ref, payment.id, current.state)
        await self.call(
            self.ledger.late_payment_undone, ref, number, payment.amount, payment.id, current.state
        )

    # -- send_bill -------------------------------------------------------------------------

    async def capture(self, bill: Bill, amount: int, confirmation: str) -> Effect:
        """Capture the run's hold and record the bill, once; the bill's ledger row.

        A hold that expired is authorized again once (`CardRefused` when the card then
        says no: nothing is billed), and so is a run that holds nothing. A run charged
        before payments went through a provider is billed in the ledger alone, as it was
        charged."""
        ref, number = bill.order_ref, bill.order_number
        rows = await self._rows(ref)
        billed = rows.get(STEP_SEND_BILL)
        if billed is not None or COMPENSATE_REFUND_CUSTOMER in rows:
            return await self._rewrite(self.ledger.bill, ref, number, amount, billed, confirmation)
        held = rows.get(STEP_PROCESS_CREDIT_CARD)
        if held is None:
            raise CardRefused(
                "No card hold to capture: nothing was billed",
                {"code": "no_hold", "decline_code": None},
            )
        if not held.payment_id:  # charged in the ledger alone, before the provider
            effect: Effect = await self.call(self.ledger.bill, ref, number, amount, confirmation)
            return effect
        payment = await self._capture_hold(bill, amount, held, rows.get(REAUTHORIZE_HOLD))
        return await self._record(
            STEP_SEND_BILL,
            payment,
            self.ledger.bill,
            ref,
            number,
            amount,
            confirmation,
            payment_id=payment.id,
            money_state=MONEY_CAPTURED,
        )

    async def _capture_hold(
        self, bill: Bill, amount: int, held: Effect, renewed: Effect | None
    ) -> Payment:
        ref = bill.order_ref
        if renewed is not None:
            return await self._capture_renewed(ref, renewed.payment_id, amount)
        try:
            return await self.gateway.capture(
                held.payment_id, amount, idempotency_key=payment_key(ref, STEP_SEND_BILL)
            )
        except PaymentStateError:
            current = await self.gateway.get(held.payment_id)
        if current.state == MoneyState.CAPTURED and current.amount_captured == amount:
            return current
        if current.state != MoneyState.EXPIRED:
            raise CardRefused(
                f"The card hold is {current.state}, not held: nothing was billed",
                {"code": "hold_" + str(current.state), "decline_code": None},
            )
        new = await self._hold_again(bill, amount, current)
        return await self._capture_renewed(ref, new.id, amount)

    async def _capture_renewed(self, ref: str, payment_id: str, amount: int) -> Payment:
        key = payment_key(ref, STEP_SEND_BILL, CAPTURE_REAUTHORIZED)
        try:
            return await self.gateway.capture(payment_id, amount, idempotency_key=key)
        except PaymentStateError as error:  # authorized again once, never twice
            raise CardRefused(
                f"The renewed card hold could not be captured ({error.code}): nothing was billed",
                {"code": error.code, "decline_code": None},
            ) from None

    async def _hold_again(self, bill: Bill, amount: int, expired: Payment) -> Payment:
        """The expired hold's card held again, once (its own key), and recorded."""
        ref, number = bill.order_ref, bill.order_number
        if not expired.payment_method:
            raise CardRefused(
                "The card hold expired before the bill and cannot be renewed: nothing was billed",
                {"code": "hold_expired", "decline_code": None},
            )
        try:
            new = await self.gateway.authorize(
                amount,
                idempotency_key=payment_key(ref, STEP_SEND_BILL, REAUTHORIZE),
                metadata=order_metadata(ref, number),
                payment_method=expired.payment_method,
            )
        except PaymentDeclined as declined:
            doing = "The card hold expired before the bill and the card refused a new one: "
            raise refused(declined, doing) from None
        log.info("Hold %s of %s expired before the bill; held again as %s", expired.id, ref, new.id)
        await self._record(
            REAUTHORIZE_HOLD, new, self.ledger.reauthorized, ref, number, amount, new.id, expired.id
        )
        return new

    # -- refund_customer -------------------------------------------------------------------

    async def release(self, run: RunRef, since: float | None = None) -> Effect:
        """Let go of what the run holds, once: void the hold (or refund what was captured);
        the refund row, a tombstone when nothing was held. An expired hold is recorded as
        it is, never voided. ``since``: when the compensation was first asked for (a
        provider whose search lags is given that long to show a hold)."""
        ref, number = run.order_ref, run.order_number
        rows = await self._rows(ref)
        if COMPENSATE_REFUND_CUSTOMER in rows:
            return rows[COMPENSATE_REFUND_CUSTOMER]
        held = rows.get(STEP_PROCESS_CREDIT_CARD)
        if held is not None and not held.payment_id:  # charged in the ledger alone
            effect: Effect = await self.call(self.ledger.refund, ref, number)
            return effect
        if held is None:
            held = await self._adopt_unrecorded_hold(ref, number, since or time.time())
        if held is None:
            return await self._released(run, None, None, "", "")
        renewed = rows.get(REAUTHORIZE_HOLD)
        renewed_id = renewed.payment_id if renewed else None
        current = renewed_id or held.payment_id
        state = await self._let_go(ref, current)
        return await self._released(run, held.payment_id, renewed_id, current, state)

    async def _released(
        self, run: RunRef, hold: str | None, renewed: str | None, payment_id: str, state: str
    ) -> Effect:
        effect: Effect = await self.call(
            self.ledger.release,
            run.order_ref,
            run.order_number,
            seen_hold=(hold, renewed),
            payment_id=payment_id,
            money_state=state,
        )
        return effect

    async def _adopt_unrecorded_hold(self, ref: str, number: str, since: float) -> Effect | None:
        """A hold the provider made for this run whose ledger row was never written (the
        step gave up on the provider's answer, or its worker died first): recorded now, so
        that it is released like any other. Looking is not enough, the request may still
        be on its way: the hold's key is settled (`PaymentGateway.settle_key`)."""
        key = payment_key(ref, STEP_PROCESS_CREDIT_CARD)
        metadata = order_metadata(ref, number)
        found = await self.gateway.settle_key(key, metadata=metadata, since=since)
        if found is None or found.state not in (MoneyState.HELD, MoneyState.CAPTURED):
            return None  # nothing held, a decline, or nothing held any more
        log.info("Found hold %s of %s at the provider, not in the ledger", found.id, ref)
        effect: Effect = await self.call(
            self.ledger.charge,
            ref,
            number,
            found.amount,
            found.card_last4 or "",
            payment_id=found.id,
            money_state=MONEY_HELD,
        )
        return effect

    async def _let_go(self, ref: str, payment_id: str) -> str:
        """Void a hold, refund a capture; a hold already free is left as it is."""
        payment = await self.gateway.get(payment_id)
        if payment.state == MoneyState.HELD:
            key = payment_key(ref, COMPENSATE_REFUND_CUSTOMER)
            payment = await self.gateway.void(payment_id, idempotency_key=key)
        elif payment.state == MoneyState.CAPTURED:
            key = payment_key(ref, COMPENSATE_REFUND_CUSTOMER, REFUND_CAPTURED)
            await self.gateway.refund(payment_id, reason="order undone", idempotency_key=key)
            return MONEY_REFUNDED
        return MONEY_RELEASED if payment.state == MoneyState.RELEASED else str(payment.state)

    # -- refund_undelivered_order ----------------------------------------------------------

    async def refund_after_bill(self, run: RunRef, reason: str = UNDELIVERED_REASON) -> Effect:
        """Give a billed order all its money back, once; the refund's ledger row."""
        ref, number = run.order_ref, run.order_number
        rows = await self._rows(ref)
        if STEP_REFUND_UNDELIVERED in rows:
            return rows[STEP_REFUND_UNDELIVERED]
        billed = rows.get(STEP_SEND_BILL)
        if billed is None:
            raise LateStepRefused(f"{ref} was never billed: nothing to refund")
        refund_id = ""
        if billed.payment_id:
            key = payment_key(ref, STEP_REFUND_UNDELIVERED)
            try:
                record = await self.gateway.refund(
                    billed.payment_id, billed.amount, reason=reason, idempotency_key=key
                )
                refund_id = record.id
            except PaymentStateError:  # all given back already (by hand?): say so
                current = await self.gateway.get(billed.payment_id)
                if current.state != MoneyState.REFUNDED:
                    raise
        effect: Effect = await self.call(
            self.ledger.refund_after_bill, ref, number, billed.amount, billed.payment_id, refund_id
        )
        return effect
