"""The compensations of the steps before the pivot, and the fast path's blind spot.

Each compensation is registered before its step (a step can take effect and still time
out): `undo_stock` before the stock is taken, `undo_hold` before the card is held.

The blind spot: on the fast path the stock and the card hold are local activities that
run inside the workflow task that starts the order, and the history records them only
when that task completes. A worker killed inside it leaves their effects (ingredients
taken, a hold at the payment provider) with nothing in the history. Another worker runs
the order again from its start and repeats them under the same keys, which changes
nothing, unless the order ends first: cancelled before it gets that far again, or cancelled
or failed between the two. `undo_unrecorded` then registers and runs the compensations the
order has not registered yet: each undoes what its step may have left, or leaves a
tombstone, so that the order keeps nothing. Orders that ended this way before the patch
``undo-lost-first-task`` replay without it. This runs inside the workflow (the sandbox
passes it through): only the workflow's deterministic APIs.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import workflow

from pizzeria import menu
from pizzeria import order_visibility as shown
from pizzeria.activities import PizzaOrderActivities as Steps
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_GET_DISTANCE,
    PizzaOrder,
    RunRef,
    order_ref,
)
from pizzeria.order_steps import StepRunner
from pizzeria.saga import DONE, SKIPPED

#: A patch id: histories of orders already running record it. Never change the value.
UNDO_LOST_TASK_PATCH = "undo-lost-first-task"


def portions_of(order: PizzaOrder) -> str:
    """The order's ingredients as the Web UI shows them: "6 dough, 6 tomato sauce, ..."."""
    ingredients = menu.ingredients_for(order.items)
    return ", ".join(f"{count} {name}" for name, count in ingredients.items())


def undo_stock(steps: StepRunner, run: str, order: PizzaOrder) -> None:
    """Register putting back what the run took from stock (which may be nothing)."""
    steps.saga.add_compensation(
        Steps.revert_inventory,
        RunRef(run, order.order_number),
        summary=shown.said("Compensate: put back " + portions_of(order)),
        local=steps.fast_path,
    )


def undo_hold(steps: StepRunner, run: str, order: PizzaOrder) -> None:
    """Register releasing what the run held on the card (which may be nothing)."""
    steps.saga.add_compensation(
        Steps.refund_customer,
        RunRef(run, order.order_number),
        summary=shown.said("Compensate: release the card hold, if any"),
        local=steps.fast_path,
    )


async def undo_unrecorded(steps: StepRunner, order: PizzaOrder, cancelled: bool) -> None:
    """Fast path, an order ending before its pivot: undo what a lost first workflow task
    may have done that this run has not registered a compensation for. A failure before
    the distance was checked (or skipped) again needs nothing (the lost task failed there
    too)."""
    if not steps.fast_path:
        return
    saga = steps.saga
    checked = any(s.name == STEP_GET_DISTANCE and s.status in (DONE, SKIPPED) for s in saga.steps)
    if not (cancelled or checked):
        return
    registered = {outcome["name"] for outcome in saga.outcomes()}
    missing = [
        (name, register)
        for name, register in (
            (COMPENSATE_REVERT_INVENTORY, undo_stock),
            (COMPENSATE_REFUND_CUSTOMER, undo_hold),
        )
        if name not in registered
    ]
    if not missing or not workflow.patched(UNDO_LOST_TASK_PATCH):
        return
    run = order_ref(workflow.info().workflow_id, workflow.info().run_id)
    for _, register in missing:
        register(steps, run, order)
    # The order ends cancelled or failed all the same: a cancellation that arrives while
    # these run waits for them, then the caller ends the order.
    with contextlib.suppress(asyncio.CancelledError):
        await saga.compensate()
