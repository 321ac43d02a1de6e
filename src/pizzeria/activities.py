"""The order's steps and compensations, with real effects: stock in the ledger, money at
the payment provider (recorded in the ledger, money.py).

One class holds the ledger and the payment gateway (as the money-transfer template holds
its bank client), so tests hand it others. Every effect is keyed by ``order_ref`` + step,
which the workflow derives from its own workflow id and run id: retries share a key (the
provider's idempotency key too), a new run never does. Blocking database work runs in a
thread so the worker's event loop stays free. A step's answer or verdict from a retry says
which attempt gave it (attempts.py), so the order shows its real attempts.
Faults on demand are not in here: the worker injects them around every activity
(`pizzeria.temporal.faults.FaultInterceptor`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from pizzeria import menu, order_fields, tuning
from pizzeria.attempts import attempt_details, reported
from pizzeria.config import DriverSimulation
from pizzeria.ledger import LateStepRefused, Ledger, OutOfStock
from pizzeria.models import (
    CREDIT_CARD_PROCESSING_ERROR,
    INVALID_CHARGE_AMOUNT_ERROR,
    LATE_STEP_REFUSED_ERROR,
    OUT_OF_STOCK_ERROR,
    STATUS_SUCCESS,
    STEP_SEND_BILL,
    Address,
    Bill,
    CardCharge,
    CreditCardCharge,
    CreditCardConfirmation,
    Distance,
    OrderConfirmation,
    Refund,
    RunRef,
    StockChange,
    StockRequest,
    dollars,
)
from pizzeria.money import CardRefused, OrderMoney
from pizzeria.payments.blocking import seen_through
from pizzeria.payments.port import PaymentGateway

T = TypeVar("T")


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking ledger work in a thread, and see it through even when cancelled.

    Cancelling the activity cannot stop a thread that is writing. A local activity is
    cancelled at once on its worker (a cancelled order), and the workflow compensates as
    soon as the activity answers: answering only after the write ended keeps the
    compensation from overtaking it.
    """
    return await seen_through(asyncio.to_thread(function, *args))


def business_error(
    message: str, kind: str, details: dict[str, str | None] | None = None
) -> ApplicationError:
    """A verdict, not a fault: never retried, and logged by the SDK without a traceback.
    Given on a retry, it says which attempt gave it (attempts.py); ``details`` (a card's
    decline code) go in the same first detail."""
    said: list[dict[str, Any]] = list(attempt_details())
    if details:
        said = [{**details, **(said[0] if said else {})}]
    return ApplicationError(
        message,
        *said,
        type=kind,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )


def card_refused(refusal: CardRefused) -> ApplicationError:
    """The card's verdict as the order's CreditCardProcessingError: for the exercise's
    invalid number exactly what it always was."""
    return business_error(refusal.message, CREDIT_CARD_PROCESSING_ERROR, refusal.details)


def late_step_refused(error: LateStepRefused) -> ApplicationError:
    """Logged: usually nobody hears this answer (Temporal gave up on the attempt)."""
    activity.logger.warning("Late step refused: %s", error)
    return business_error(str(error), LATE_STEP_REFUSED_ERROR)


def lean_charge(charge: CardCharge | CreditCardCharge) -> CardCharge:
    """The charge as this code reads it, from either shape an order may have sent."""
    if isinstance(charge, CardCharge):
        return charge
    return CardCharge(charge.order_ref, charge.bill.order_number, charge.amount, charge.credit_card)


def run_of(request: RunRef | CreditCardCharge) -> RunRef:
    """The run to undo, from a compensation's input of either shape."""
    if isinstance(request, RunRef):
        return request
    return RunRef(request.order_ref, request.bill.order_number)


def confirmation_number(order_ref: str, prefix: str) -> str:
    return prefix + hashlib.sha256(order_ref.encode()).hexdigest()[:8].upper()


class PizzaOrderActivities:
    def __init__(
        self,
        ledger: Ledger,
        driver: DriverSimulation | None = None,
        *,
        payments: PaymentGateway,
    ) -> None:
        self.ledger = ledger
        self.driver = driver or DriverSimulation()
        self.ledger_in_thread = tuning.is_on("thread")
        self.payments = payments
        self.money = OrderMoney(ledger, payments, self._ledger_call)

    async def _ledger_call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A ledger call, on a thread (`in_thread`) so that a slow database never stalls the
        worker's event loop (a benchmark can switch the hop off to weigh it)."""
        if kwargs:
            return await self._ledger_call(functools.partial(call, *args, **kwargs))
        if self.ledger_in_thread:
            return await in_thread(call, *args)
        return call(*args)

    @activity.defn
    async def get_distance(self, address: Address) -> Distance:
        """The exercise's simulated distance: consistent for an address, no effect."""
        kilometers = len(address.line1) + len(address.line2) - 10
        return reported(Distance(kilometers=kilometers if kilometers >= 1 else 5))

    @activity.defn
    async def update_inventory(self, request: StockRequest) -> StockChange:
        try:
            ingredients = menu.ingredients_for(request.items)
            effect = await self._ledger_call(
                self.ledger.take_stock, request.order_ref, request.order_number, ingredients
            )
        except order_fields.OrderRejected as error:
            raise business_error(str(error), error.kind) from None
        except OutOfStock as error:
            raise business_error(str(error), OUT_OF_STOCK_ERROR) from None
        except LateStepRefused as error:
            raise late_step_refused(error) from None
        activity.logger.info("Took %s for order %s", effect.ingredients, request.order_number)
        return reported(StockChange(ingredients=effect.ingredients, applied=effect.applied))

    @activity.defn
    async def revert_inventory(self, request: RunRef | StockRequest) -> StockChange:
        """Put back what this run took; a no-op (and a tombstone) when it took nothing."""
        effect = await self._ledger_call(
            self.ledger.put_back_stock, request.order_ref, request.order_number
        )
        activity.logger.info("Put back %s for order %s", effect.ingredients, request.order_number)
        return StockChange(
            ingredients=effect.ingredients, applied=effect.applied and not effect.tombstone
        )

    @activity.defn
    async def process_credit_card(
        self, requested: CardCharge | CreditCardCharge
    ) -> CreditCardConfirmation:
        """Hold the billed amount on the card at the payment provider (the card number is
        sent there, once, and kept nowhere: the ledger keeps its last four digits)."""
        charge = lean_charge(requested)
        if charge.amount < 0:
            raise business_error(
                f"Invalid charge amount: {charge.amount}", INVALID_CHARGE_AMOUNT_ERROR
            )
        try:
            effect = await self.money.hold(charge)
        except CardRefused as refusal:
            # A verdict: the SDK logs it at debug level only (a benign error), so it is
            # said here, for the operator who wonders why an order was refused.
            activity.logger.info(
                "Card %s refused for order %s: %s",
                charge.credit_card.masked,
                charge.order_number,
                refusal.message,
            )
            raise card_refused(refusal) from None
        except LateStepRefused as error:
            raise late_step_refused(error) from None
        activity.logger.info(
            "Held %s on card %s for order %s (%s)",
            dollars(effect.amount),
            charge.credit_card.masked,
            charge.order_number,
            effect.payment_id or "ledger only",
        )
        return reported(
            CreditCardConfirmation(
                card_last4=effect.reference,
                confirmation_number=confirmation_number(charge.order_ref, "PAYME-"),
                amount=effect.amount,
                billing_timestamp=int(effect.created_at),
                payment_id=effect.payment_id,
                state=effect.money_state,
            )
        )

    @activity.defn
    async def refund_customer(self, requested: RunRef | CreditCardCharge) -> Refund:
        """Before the pivot: release what this run holds (void the hold; a refund only if
        money was captured), never more; a tombstone when nothing was held."""
        run = run_of(requested)
        effect = await self.money.release(run, since=activity.info().scheduled_time.timestamp())
        if effect.tombstone:  # no hold to release, and none may come late
            activity.logger.info("Nothing held for order %s: nothing to release", run.order_number)
        else:
            activity.logger.info(
                "Released %s for order %s (%s)",
                dollars(effect.amount),
                run.order_number,
                effect.money_state,
            )
        return Refund(amount=effect.amount, applied=effect.applied and not effect.tombstone)

    @activity.defn
    async def send_bill(self, bill: Bill) -> OrderConfirmation:
        """The pivot: capture the hold and bill the order (a hold that expired is held
        again once; when the card then refuses, nothing is billed and the order fails)."""
        amount = menu.billed_amount(bill.amount)
        if amount < 0:
            raise business_error(f"Invalid charge amount: {amount}", INVALID_CHARGE_AMOUNT_ERROR)
        confirmation = confirmation_number(bill.order_ref, "P")
        try:
            effect = await self.money.capture(bill, amount, confirmation)
        except CardRefused as refusal:
            raise card_refused(refusal) from None
        except LateStepRefused as error:
            raise late_step_refused(error) from None
        return reported(
            OrderConfirmation(
                order_number=bill.order_number,
                status=STATUS_SUCCESS,
                confirmation_number=effect.reference,
                billing_timestamp=int(effect.created_at),
                amount=effect.amount,
            )
        )

    @activity.defn
    async def bill_recorded(self, run: RunRef) -> bool:
        """Whether the ledger holds this run's bill: on the fast path a worker lost in the
        middle of a workflow task may have billed the order with nothing in its history,
        and a cancel must not undo a billed order. Only reads."""
        rows = await self._ledger_call(self.ledger.run_rows, run.order_ref)
        bill = rows.get(STEP_SEND_BILL)
        return bill is not None and not bill.tombstone

    @activity.defn
    async def refund_undelivered_order(self, run: RunRef) -> Refund:
        """Past the pivot: a billed order no driver took gets all its money back (a step
        forward of the order, not a compensation)."""
        try:
            effect = await self.money.refund_after_bill(run)
        except LateStepRefused as error:
            raise late_step_refused(error) from None
        activity.logger.info(
            "Refunded %s: order %s undelivered", dollars(effect.amount), run.order_number
        )
        return reported(Refund(amount=effect.amount, applied=effect.applied))

    @activity.defn
    async def notify_delivery_driver(self, confirmation: OrderConfirmation) -> bool:
        """Look for a driver, heartbeating each round so a stuck search is noticed."""
        simulation = self.driver
        found = random.random() < simulation.found_probability
        answering_round = random.randrange(simulation.rounds) if found else -1
        for round_number in range(simulation.rounds):
            if round_number == answering_round:
                activity.logger.info("Driver found for order %s", confirmation.order_number)
                return True
            activity.heartbeat(f"looking for a driver: round {round_number + 1}")
            await asyncio.sleep(simulation.seconds_per_round)
        activity.logger.info("No driver for order %s", confirmation.order_number)
        return False
