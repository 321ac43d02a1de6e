"""The card is held before the kitchen starts, and whoever placed the order hears it at once.

**The early answer.** An order placed with its ``order_accepted`` Update
(Update-with-Start: `pizzeria.client.placing.start_with_answer`) gets an answer as soon as
its charge step has held the card: a `CardHold`, while the kitchen still has the order to
prepare. An order refused before that (the card declined, out of stock, too far for a
delivery, cancelled) fails the Update with the order's own error type and message, once
what the order did is undone (its details say what was). An order started without the
Update runs as before: nothing waits for it and nothing of it is in the history.

**The kitchen's wait** (``settings.prep_seconds``) comes once the card is held, for orders
started with the patch ``hold-before-kitchen``; orders started before keep their path and
wait before the stock is taken. The patch is asked only of an order with a wait (without
one both paths are the same) and on its first workflow task, with its other markers.

`HoldFirst` is a base of `PizzaOrderWorkflow` (workflows.py): the workflow chooses the path
on its first task (`choose_kitchen`), sets ``hold`` from what its charge step answered
(`hold_of`), and calls `prepare` where the wait may come. This runs inside the workflow
(passed through the sandbox) and in clients, which read `CardHold` and `REFUSED`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from pizzeria import order_visibility as shown
from pizzeria.failures import error_message_of, error_type_of
from pizzeria.models import (
    INVALID_ORDER_ERROR,
    ORDER_CANCELLED_ERROR,
    CreditCardConfirmation,
    OrderSettings,
)
from pizzeria.saga import Saga

#: A patch id: histories of orders already running record it. Never change the value.
HOLD_BEFORE_KITCHEN_PATCH = "hold-before-kitchen"
ORDER_ACCEPTED_UPDATE = "order_accepted"
HELD = "held"
#: The key of a refusal's details that says it is the order's refusal (a worker that does
#: not know the Update refuses it too, without it).
REFUSED = "refused"


@dataclass
class CardHold:
    """The card held for the order, as its customer may see it (never the card number)."""

    amount: int  # cents held, the discount included
    card_last4: str
    state: str = HELD
    payment_id: str | None = None  # the payment provider's, when a provider holds it
    confirmation_number: str | None = None


def hold_of(charged: CreditCardConfirmation) -> CardHold:
    """The hold from what the charge step answered; a payment id and a state when the
    answer carries them (a payment provider's authorization)."""
    payment_id = getattr(charged, "payment_id", None)
    state = getattr(charged, "state", None)
    return CardHold(
        amount=charged.amount,
        card_last4=charged.card_last4[-4:],
        state=str(state) if state else HELD,
        payment_id=str(payment_id) if payment_id else None,
        confirmation_number=charged.confirmation_number or None,
    )


class HoldFirst:
    """The early answer and the kitchen's place, for `PizzaOrderWorkflow`."""

    # Set by PizzaOrderWorkflow; read here.
    saga: Saga
    finished: bool
    outcome: str
    _order_task: asyncio.Task[Any] | None
    #: The card held by this run (None until its charge step answered).
    hold: CardHold | None = None
    _kitchen_after_hold = False
    #: Started with the workflow's newest patch, which implies this module's.
    _current: bool

    def choose_kitchen(self, settings: OrderSettings) -> None:
        """On the order's first workflow task: does the kitchen wait once the card is held
        (orders started with the patch) or before the stock (orders started before)?"""
        self._kitchen_after_hold = settings.prep_seconds > 0 and (
            self._current or workflow.patched(HOLD_BEFORE_KITCHEN_PATCH)
        )

    async def prepare(self, settings: OrderSettings, *, held: bool) -> None:
        """The kitchen prepares the order, a timer with no effect, if this is its place:
        before the stock (``held`` False) or once the card is held (True)."""
        if settings.prep_seconds > 0 and held == self._kitchen_after_hold:
            shown.show_details("Preparing the order")
            await workflow.sleep(settings.prep_seconds, summary=shown.said("Preparing the order"))

    @workflow.update
    async def order_accepted(self) -> CardHold:
        """The early answer: the card held, or the order's refusal once what it did is
        undone (or waits for an operator)."""
        await workflow.wait_condition(self._answer_known)
        if self.hold is not None:
            return self.hold
        raise self._refusal()

    def _answer_known(self) -> bool:
        task = self._order_task
        return (
            self.hold is not None
            or self.finished
            or self.saga.needs_attention
            or (task is not None and task.done())
        )

    def _refusal(self) -> ApplicationError:
        """Why the card was never held: the order's error type and message."""
        task = self._order_task
        failure = task.exception() if task and task.done() and not task.cancelled() else None
        if (task is not None and task.cancelled()) or self.outcome == "cancelled":
            kind, message = ORDER_CANCELLED_ERROR, "the order was cancelled before the card hold"
        elif failure is not None and not isinstance(failure, asyncio.CancelledError):
            kind = error_type_of(failure) or type(failure).__name__
            message = error_message_of(failure) or str(failure)
        elif self.saga.original_error:  # a compensation failed: an operator is asked
            kind, _, message = self.saga.original_error.partition(": ")
        else:  # refused before its first step: the order's outcome says why
            kind, message = INVALID_ORDER_ERROR, "the order was refused before its first step"
        undone = {
            REFUSED: True,
            "compensations": list(self.saga.completed),
            "needs_attention": self.saga.needs_attention,
        }
        return ApplicationError(message, undone, type=kind, non_retryable=True)
