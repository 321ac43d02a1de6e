"""Placing orders: one order number, one charge, unless asked again.

Our clients never charge a customer twice by accident: an order number whose last run
completed is not started again unless asked (``again``), while a failed or cancelled one
may be. The server's own policy is unchanged, so the exercise's clients keep theirs.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import menu
from pizzeria.client.outcomes import OrderOutcome, outcome_of
from pizzeria.models import (
    ORDER_STATUS,
    TASK_QUEUE,
    OrderConfirmation,
    PizzaOrder,
    dollars,
    workflow_id_for,
)
from pizzeria.temporal.waiting import Unanswered
from pizzeria.workflows import PizzaOrderWorkflow

# A server that can never say (no operator service, as the time-skipping test server; a
# client without operator rights): a definite "not registered".
CANNOT_SAY = (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED)


class OrderAlreadyRunning(Exception):
    def __init__(self, order_number: str) -> None:
        super().__init__(
            f"order {order_number} is already being processed: a second submission is refused"
        )


class OrderAlreadyCompleted(Exception):
    """The order number's last run completed: starting it again would charge again."""

    def __init__(self, order_number: str, run_id: str) -> None:
        super().__init__(
            f"order {order_number} was already placed and completed (run {run_id[:8]}): "
            "nothing new was started"
        )
        self.order_number = order_number
        self.run_id = run_id


def static_summary(order: PizzaOrder) -> str:
    amount = menu.billed_amount(menu.order_total(order.items))
    count = len(order.items)
    kind = "delivery" if order.is_delivery else "pickup"
    return (
        f"Pizza order {order.order_number} for {order.customer.name}: "
        f"{count} pizza{'s' if count != 1 else ''}, {dollars(amount)}, {kind}"
    )


# What each client's server answered (a client is one connection to one namespace).
_order_status_registered: WeakKeyDictionary[Client, bool] = WeakKeyDictionary()


async def order_status_registered(client: Client) -> bool:
    """Whether the client's server knows the OrderStatus search attribute.

    Asked once per client, and only an answer is kept: a server that does not answer (down,
    restarting) is asked again by the next order, and its error ends this one before
    anything starts (started without the attribute, `pizzeria orders --status` would never
    find it).
    """
    known = _order_status_registered.get(client)
    if known is None:
        try:
            response = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace), retry=True
            )
            known = ORDER_STATUS.name in response.custom_attributes
        except RPCError as error:
            if error.status not in CANNOT_SAY:
                raise
            known = False
        _order_status_registered[client] = known
    return known


async def start_order(
    client: Client,
    order: PizzaOrder,
    task_queue: str = TASK_QUEUE,
    *,
    again: bool = False,
    memo: dict[str, Any] | None = None,
    id_reuse_policy: WorkflowIDReusePolicy | None = None,
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """Start an order; refused (and nothing charged) while the same order number runs
    (`OrderAlreadyRunning`) and, unless ``again``, once its last run completed
    (`OrderAlreadyCompleted`). The server enforces it, so two clients racing cannot both
    start a second run.

    ``memo`` adds to the order's memo (the API records there which request started it);
    ``id_reuse_policy`` replaces the rule above (the API never reuses an order number).
    """
    search_attributes = None
    if await order_status_registered(client):
        search_attributes = TypedSearchAttributes(
            [SearchAttributePair(ORDER_STATUS, "IN_PROGRESS")]
        )
    try:
        return await client.start_workflow(
            PizzaOrderWorkflow.order_pizza,
            order,
            id=workflow_id_for(order.order_number),
            task_queue=task_queue,
            static_summary=static_summary(order),
            search_attributes=search_attributes,
            memo={**(memo or {}), "amount": menu.billed_amount(menu.order_total(order.items))},
            id_reuse_policy=id_reuse_policy
            or (
                WorkflowIDReusePolicy.ALLOW_DUPLICATE
                if again
                else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
            ),
        )
    except WorkflowAlreadyStartedError:
        raise await why_not_started(client, order.order_number) from None


async def why_not_started(client: Client, order_number: str) -> Exception:
    """The order number's last run: still running, or completed."""
    description = await client.get_workflow_handle(workflow_id_for(order_number)).describe()
    if description.status == WorkflowExecutionStatus.COMPLETED:
        return OrderAlreadyCompleted(order_number, description.run_id)
    return OrderAlreadyRunning(order_number)


async def place_order(
    client: Client,
    order: PizzaOrder,
    task_queue: str = TASK_QUEUE,
    *,
    again: bool = False,
    patience: float | None = None,
    on_unanswered: Unanswered | None = None,
) -> OrderOutcome:
    """Start the order and wait for the outcome of the run started (see `start_order`
    and `outcome_of`)."""
    handle = await start_order(client, order, task_queue, again=again)
    return await outcome_of(
        client,
        handle.id,
        order.order_number,
        run_id=handle.result_run_id,
        patience=patience,
        on_unanswered=on_unanswered,
    )
