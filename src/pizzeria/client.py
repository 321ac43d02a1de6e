"""Placing orders, reading their outcome, and acting on a running one, for every client.

The outcome of a failed order includes the compensations that ran, read from the
workflow's history (the same record the Web UI shows), so it needs no worker. Waiting for
it survives connection drops and server restarts (`pizzeria.temporal.waiting`).

Our clients never charge a customer twice by accident: an order number whose last run
completed is not started again unless asked (``again``), while a failed or cancelled one
may be. The server's own policy is unchanged, so the exercise's clients keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from pizzeria import menu
from pizzeria.failures import error_message_of, error_type_of
from pizzeria.history.markers import local_activity_of
from pizzeria.ledger import AlreadyBilled, Ledger
from pizzeria.models import (
    COMPENSATIONS,
    ORDER_STATUS,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    CancelResult,
    OrderConfirmation,
    PizzaOrder,
    RepairResult,
    dollars,
    order_number_of,
    order_ref,
    workflow_id_for,
)
from pizzeria.temporal.waiting import Unanswered, patiently
from pizzeria.workflows import PizzaOrderWorkflow

WEB_UI = "http://localhost:8233"

STATUS_NAMES = {
    WorkflowExecutionStatus.RUNNING: "RUNNING",
    WorkflowExecutionStatus.COMPLETED: "COMPLETED",
    WorkflowExecutionStatus.FAILED: "FAILED",
    WorkflowExecutionStatus.CANCELED: "CANCELLED",
    WorkflowExecutionStatus.TERMINATED: "TERMINATED",
    WorkflowExecutionStatus.TIMED_OUT: "TIMED_OUT",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "CONTINUED_AS_NEW",
}


def status_name(status: WorkflowExecutionStatus | None) -> str:
    """How we name a run's status (``CANCELLED``, as the order's own status spells it)."""
    return STATUS_NAMES.get(status, "UNKNOWN") if status else "UNKNOWN"


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


class OrderRefused(Exception):
    """The order said no to a cancel or a repair (or is closed): the reason is the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")


@dataclass
class OrderOutcome:
    order_number: str
    workflow_id: str
    run_id: str
    status: str
    amount: int | None = None
    error_type: str | None = None
    error: str | None = None
    compensations: list[str] = field(default_factory=list)
    failed_compensations: list[str] = field(default_factory=list)
    confirmation: dict[str, Any] | None = None
    web_ui: str = ""

    def to_json(self) -> dict[str, Any]:
        """What clients are shown of an outcome (the confirmation's own fields aside)."""
        return {
            "order_number": self.order_number,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "status": self.status,
            "amount": self.amount,
            "error_type": self.error_type,
            "error": self.error,
            "compensations": self.compensations,
            "web_ui": self.web_ui,
        }


def web_ui_link(workflow_id: str, run_id: str, namespace: str = "default") -> str:
    return f"{WEB_UI}/namespaces/{namespace}/workflows/{workflow_id}/{run_id}/history"


def static_summary(order: PizzaOrder) -> str:
    amount = menu.billed_amount(menu.order_total(order.items))
    count = len(order.items)
    kind = "delivery" if order.is_delivery else "pickup"
    return (
        f"Pizza order {order.order_number} for {order.customer.name}: "
        f"{count} pizza{'s' if count != 1 else ''}, {dollars(amount)}, {kind}"
    )


_order_status_registered: dict[str, bool] = {}


async def order_status_registered(client: Client) -> bool:
    """Whether the server knows the OrderStatus search attribute (asked once per namespace)."""
    if client.namespace not in _order_status_registered:
        try:
            response = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=client.namespace)
            )
            known = ORDER_STATUS.name in response.custom_attributes
        except RPCError:
            known = False  # e.g. the time-skipping test server, or no operator rights
        _order_status_registered[client.namespace] = known
    return _order_status_registered[client.namespace]


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


async def compensations_from_history(
    handle: WorkflowHandle[Any, Any],
) -> tuple[list[str], list[str]]:
    """Compensations that completed, in the order they completed; and those that failed."""
    scheduled: dict[int, str] = {}
    completed: list[str] = []
    failed: list[str] = []
    async for event in handle.fetch_history_events():
        local = local_activity_of(event)
        if local is not None and local.name in COMPENSATIONS:
            (completed if local.outcome == "completed" else failed).append(local.name)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            name = scheduled.get(
                event.activity_task_completed_event_attributes.scheduled_event_id, ""
            )
            if name in COMPENSATIONS:
                completed.append(name)
        elif event.event_type in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        ):
            attributes = (
                event.activity_task_failed_event_attributes
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                else event.activity_task_timed_out_event_attributes
            )
            name = scheduled.get(attributes.scheduled_event_id, "")
            if name in COMPENSATIONS:
                failed.append(name)
    return completed, failed


async def outcome_of(
    client: Client,
    workflow_id: str,
    order_number: str,
    *,
    run_id: str | None = None,
    patience: float | None = None,
    on_unanswered: Unanswered | None = None,
) -> OrderOutcome:
    """Wait for an order's run (``run_id``, else the latest) to close; how it ended.

    Keeps waiting across connection drops and server restarts, with backoff. After
    ``patience`` seconds (None: no limit) without an outcome: `OrderStillRunning`.
    """
    return await patiently(
        lambda: read_outcome(client, workflow_id, order_number, run_id),
        order_number,
        patience=patience,
        on_unanswered=on_unanswered,
    )


async def read_outcome(
    client: Client, workflow_id: str, order_number: str, run_id: str | None = None
) -> OrderOutcome:
    """Wait for the run to close and describe how it ended: one try, no retry."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id, result_type=OrderConfirmation)
    confirmation: OrderConfirmation | None = None
    failure: BaseException | None = None
    try:
        confirmation = await handle.result()
    except WorkflowFailureError as error:
        failure = error.cause
    description = await handle.describe()
    run_id = description.run_id
    compensations, failed = await compensations_from_history(
        client.get_workflow_handle(handle.id, run_id=run_id)
    )
    outcome = OrderOutcome(
        order_number=order_number,
        workflow_id=handle.id,
        run_id=run_id,
        status=status_name(description.status),
        compensations=compensations,
        failed_compensations=failed,
        web_ui=web_ui_link(handle.id, run_id, client.namespace),
    )
    if confirmation is not None:
        outcome.amount = confirmation.amount
        outcome.confirmation = asdict(confirmation)
    else:
        outcome.error_type = error_type_of(failure)
        outcome.error = error_message_of(failure)
    return outcome


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


async def order_handle(client: Client, order_number: str) -> WorkflowHandle[Any, Any]:
    """The latest run of an order, or a clear error when there is none."""
    handle = client.get_workflow_handle(workflow_id_for(order_number))
    try:
        await handle.describe()
    except RPCError as error:
        if "not found" in str(error).lower():
            raise LookupError(f"no order {order_number} on this Temporal server") from None
        raise
    return handle


# -- acting on a running order -----------------------------------------------------------


async def running_order(
    client: Client, order_number: str
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """The order's latest run, refused when it is already closed."""
    await order_handle(client, order_number)
    handle = client.get_workflow_handle_for(
        PizzaOrderWorkflow.order_pizza, workflow_id_for(order_number)
    )
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = description.status.name if description.status else "closed"
        raise OrderRefused(f"order {order_number} is already closed ({state})")
    return handle


def stuck_advice(order_number: str) -> str:
    return (
        f"order {order_number} is stuck: its workflow task keeps failing (see `pizzeria "
        f"status {order_number}`); fix the workers, or end it with `pizzeria repair "
        f"{order_number} --abandon`"
    )


async def _ask(client: Client, order_number: str, update: Any, *args: Any) -> Any:
    """Run an Update on the order's latest run; a refusal, or an order that cannot answer
    because its workflow task keeps failing, is an `OrderRefused` saying what to do."""
    handle = await running_order(client, order_number)
    try:
        return await handle.execute_update(update, *args)
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        raise OrderRefused(str(getattr(cause, "message", None) or cause or error)) from None
    except RPCError as error:
        if "workflow task in failed state" not in str(error).lower():
            raise
        raise OrderRefused(stuck_advice(order_number)) from None


async def cancel_order(client: Client, order_number: str, reason: str) -> CancelResult:
    """Cancel an order before its pivot: its effects are undone and it ends Cancelled."""
    result: CancelResult = await _ask(client, order_number, PizzaOrderWorkflow.cancel_order, reason)
    if not result.accepted:
        raise OrderRefused(result.reason)
    # The order is already undone; the request makes it end Cancelled (not Failed).
    await client.get_workflow_handle(workflow_id_for(order_number)).cancel()
    return result


async def retry_compensations(client: Client, order_number: str) -> RepairResult:
    """Run the order's failed compensations again."""
    result: RepairResult = await _ask(client, order_number, PizzaOrderWorkflow.retry_compensations)
    return result


async def resolve_by_hand(client: Client, order_number: str, note: str) -> RepairResult:
    """Mark the order's failed compensations as handled outside the system, with a note."""
    result: RepairResult = await _ask(
        client, order_number, PizzaOrderWorkflow.resolve_manually, note
    )
    return result


@dataclass
class Abandoned:
    """What `abandon_order` did to one run of an order."""

    order_number: str
    workflow_id: str
    run_id: str
    status: str  # the run's status when it was abandoned
    put_back: dict[str, int]
    refunded: int


async def abandon_order(
    client: Client, ledger: Ledger, order_number: str, reason: str = "abandoned by an operator"
) -> Abandoned:
    """End an order that cannot finish (a workflow task failing for good: a bug, a bad
    deploy, a key no worker has) and undo what the ledger holds for its latest run.

    The ledger goes first, in one transaction with the compensations' own logic, and
    leaves tombstones: from then on no step of the run can take effect, even one already
    in flight. Then the run is terminated. A billed order is refused (it only goes
    forward), and so is one that closed by itself (its saga settled it).
    """
    description = await (await order_handle(client, order_number)).describe()
    status = status_name(description.status)
    if status not in ("RUNNING", "TERMINATED", "TIMED_OUT"):
        raise OrderRefused(
            f"order {order_number} is already closed ({status}): its saga settled it"
        )
    workflow_id, run_id = workflow_id_for(order_number), description.run_id
    try:
        put_back, refund = await asyncio.to_thread(
            ledger.abandon_run, order_ref(workflow_id, run_id), order_number
        )
    except AlreadyBilled as billed:
        raise OrderRefused(f"order {order_number} cannot be abandoned: {billed}") from None
    if status == "RUNNING":
        run = client.get_workflow_handle(workflow_id, run_id=run_id)
        # A run that closed meanwhile (its next step refused) needs no terminating.
        with contextlib.suppress(RPCError):
            await run.terminate(reason=reason)
    return Abandoned(
        order_number,
        workflow_id,
        run_id,
        status,
        put_back.ingredients if put_back.applied and not put_back.tombstone else {},
        refund.amount if refund.applied else 0,
    )


# -- the list of orders ------------------------------------------------------------------


async def recent_orders(
    client: Client, order_status: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Orders from Temporal's visibility, newest first; ``order_status`` filters on
    the OrderStatus search attribute."""
    query = f"WorkflowType = '{WORKFLOW_TYPE}'"
    if order_status:
        query += f" AND {ORDER_STATUS.name} = '{order_status.upper()}'"
    found: list[dict[str, Any]] = []
    async for execution in client.list_workflows(query, limit=limit):
        memo = await execution.memo()
        found.append(
            {
                "workflow_id": execution.id,
                "run_id": execution.run_id,
                "order_number": order_number_of(execution.id),
                "started": execution.start_time.isoformat(),
                "status": status_name(execution.status),
                "order_status": execution.typed_search_attributes.get(ORDER_STATUS),
                "amount": memo.get("amount"),
                "compensation": memo.get("compensation"),
            }
        )
    return found
