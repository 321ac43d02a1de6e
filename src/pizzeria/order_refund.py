"""Past the pivot, the order's money goes only forward: a billed order no driver took is
refunded in full, as a step of the order (`refund_undelivered`), never as a compensation.

Orders started with the patch ``refund-undelivered`` take that step; orders billed before
it keep what they were billed (their histories replay without it). The patch is asked
only when no driver was found, so a delivered order records no marker. This runs inside
the workflow (the sandbox passes it through): only the workflow's deterministic APIs.
"""

from __future__ import annotations

from temporalio import workflow

from pizzeria import order_visibility as shown
from pizzeria.activities import PizzaOrderActivities as Steps
from pizzeria.models import (
    STEP_REFUND_UNDELIVERED,
    CreditCardInfo,
    OrderConfirmation,
    PizzaOrder,
    Refund,
    RunRef,
    dollars,
    order_ref,
)
from pizzeria.order_steps import StepRunner

#: A patch id: histories of orders already running record it. Never change the value.
REFUND_UNDELIVERED_PATCH = "refund-undelivered"


async def refund_undelivered(
    steps: StepRunner, order: PizzaOrder, billed: OrderConfirmation
) -> None:
    """No driver took the billed order: give the customer the whole amount back, retried
    until it answers (an order already billed before the patch keeps its path)."""
    if not workflow.patched(REFUND_UNDELIVERED_PATCH):
        return
    run = order_ref(workflow.info().workflow_id, workflow.info().run_id)
    shown.show_details("No driver: refunding the order")
    await steps.forward(
        STEP_REFUND_UNDELIVERED,
        Steps.refund_undelivered_order,
        RunRef(run, order.order_number),
        Refund,
        summary=f"No driver: refund {dollars(billed.amount)}",
    )
    shown.show_details(f"Delivery failed: refunded {dollars(billed.amount)}")


def hold_summary(amount: int, card: CreditCardInfo) -> str:
    """The card step as the Web UI shows it: a hold, on the card's last four digits."""
    on_card = f"card ending {card.last4}" if card.last4 else "the card"
    return f"Hold {dollars(amount)} on {on_card}"
