"""Placing orders: one order number, one charge, unless asked again.

Our clients never charge a customer twice by accident: an order number whose last run
completed is not started again unless asked (``again``), while a failed or cancelled one
may be. The server's own policy is unchanged, so the exercise's clients keep theirs.

`start_with_answer` starts an order with its ``order_accepted`` Update in one round trip
(Update-with-Start): the caller hears that the card is held, or why the order was refused,
as soon as the order knows (`EarlyAnswer`), and follows the order on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, Unpack
from weakref import WeakKeyDictionary

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import menu
from pizzeria.client.early_answers import EarlyAnswer, answer_of, early_answer
from pizzeria.client.outcomes import OrderOutcome, outcome_of
from pizzeria.models import (
    ORDER_STATUS,
    TASK_QUEUE,
    OrderConfirmation,
    PizzaOrder,
    dollars,
    short_run,
    workflow_id_for,
)
from pizzeria.temporal.waiting import UNANSWERED, OrderStillRunning, Unanswered, patiently
from pizzeria.workflows import PizzaOrderWorkflow

#: How far the server's clock may be behind ours when telling our start from another's.
CLOCK_SKEW = timedelta(seconds=5)

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
            f"order {order_number} was already placed and completed (run {short_run(run_id)}): "
            "nothing new was started"
        )
        self.order_number = order_number
        self.run_id = run_id


def static_summary(order: PizzaOrder) -> str:
    amount = menu.billed_for(order.items)
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


class StartRules(TypedDict, total=False):
    """How every client starts an order, however it starts it (see `start_order`)."""

    again: bool
    memo: dict[str, Any] | None
    id_reuse_policy: WorkflowIDReusePolicy | None


async def start_order(
    client: Client, order: PizzaOrder, task_queue: str = TASK_QUEUE, **rules: Unpack[StartRules]
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """Start an order; refused (and nothing charged) while the same order number runs
    (`OrderAlreadyRunning`) and, unless ``again``, once its last run completed
    (`OrderAlreadyCompleted`). The server enforces it, so two clients racing cannot both
    start a second run.

    ``memo`` adds to the order's memo (the API records there which request started it);
    ``id_reuse_policy`` replaces the rule above (the API never reuses an order number).
    """
    options = await start_options(client, order, **rules)
    try:
        return await client.start_workflow(
            PizzaOrderWorkflow.order_pizza,
            order,
            id=workflow_id_for(order.order_number),
            task_queue=task_queue,
            **options,
        )
    except WorkflowAlreadyStartedError:
        raise await why_not_started(client, order.order_number) from None


async def start_options(
    client: Client,
    order: PizzaOrder,
    *,
    again: bool = False,
    memo: dict[str, Any] | None = None,
    id_reuse_policy: WorkflowIDReusePolicy | None = None,
) -> dict[str, Any]:
    """The start's options, by its `StartRules`."""
    search_attributes = None
    if await order_status_registered(client):
        search_attributes = TypedSearchAttributes(
            [SearchAttributePair(ORDER_STATUS, "IN_PROGRESS")]
        )
    return {
        "static_summary": static_summary(order),
        "search_attributes": search_attributes,
        "memo": {**(memo or {}), "amount": menu.billed_for(order.items)},
        "id_reuse_policy": id_reuse_policy
        or (
            WorkflowIDReusePolicy.ALLOW_DUPLICATE
            if again
            else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
        ),
    }


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


# -- the early answer: Update-with-Start ---------------------------------------------------


@dataclass(frozen=True)
class Started:
    """An order started with its Update: the run, and its early answer to come."""

    handle: WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]
    answer: asyncio.Future[EarlyAnswer]

    @property
    def run_id(self) -> str:
        run_id = self.handle.result_run_id
        assert run_id is not None  # a handle from a start always has it
        return run_id


async def start_with_answer(
    client: Client,
    order: PizzaOrder,
    task_queue: str = TASK_QUEUE,
    *,
    update_id: str | None = None,
    patience: float | None = None,
    on_unanswered: Unanswered | None = None,
    started_within: float | None = None,
    **rules: Unpack[StartRules],
) -> Started:
    """Start the order and send it ``order_accepted`` in one request (Update-with-Start):
    the run as soon as it is started, its answer when the card is held or the order refused.

    Temporal answers that request once the Update is answered, or after its own wait
    (about 20 s) when nothing answers it (no worker polling): given ``started_within``
    seconds, a request still unanswered then is not waited for. The run it started is
    looked up, and the answer still comes (or not) from the request, which goes on.

    Refused as `start_order` refuses (a running or completed order number). The same
    ``update_id`` sent again to the run gets the same answer (`early_answer`). Given a
    ``patience``, when the server stops answering with the start in flight, this asks
    again (with backoff, up to ``patience`` seconds, telling ``on_unanswered``) whether
    the order started, and starts it if it did not; without one, that error is raised.
    """
    update_id = update_id or f"accepted-{uuid.uuid4()}"  # the answer can be asked again
    sent_at = datetime.now(UTC) - CLOCK_SKEW
    operation, update = await _send_with_start(client, order, task_queue, update_id, rules)
    answer = asyncio.ensure_future(answer_of(update))
    try:
        if started_within is None:
            handle = await operation.workflow_handle()
        else:
            handle = await _handle_or_run(client, operation, order, sent_at, started_within)
    except BaseException as error:
        await _drop(answer, update)
        if already_started(error):
            raise await why_not_started(client, order.order_number) from None
        if patience is None or not isinstance(error, RPCError) or error.status not in UNANSWERED:
            raise
        found = await started_meanwhile(client, order, sent_at, error, patience, on_unanswered)
        if found is None:  # it never did: start it now
            return await start_with_answer(
                client, order, task_queue, update_id=update_id, patience=patience,
                on_unanswered=on_unanswered, started_within=started_within, **rules,
            )  # fmt: skip
        handle = client.get_workflow_handle_for(
            PizzaOrderWorkflow.order_pizza, found.id, run_id=found.run_id
        )
        answer = asyncio.ensure_future(
            early_answer(client, order.order_number, found.run_id, update_id)
        )
    return Started(handle, answer)


async def _send_with_start(
    client: Client,
    order: PizzaOrder,
    task_queue: str,
    update_id: str,
    rules: StartRules,
) -> tuple[WithStartWorkflowOperation[PizzaOrderWorkflow, OrderConfirmation], Any]:
    """The start operation, and the Update-with-Start request carrying it (not awaited)."""
    options = await start_options(client, order, **rules)
    operation = WithStartWorkflowOperation(
        PizzaOrderWorkflow.order_pizza,
        order,
        id=workflow_id_for(order.order_number),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        **options,
    )
    update = client.execute_update_with_start_workflow(
        PizzaOrderWorkflow.order_accepted, start_workflow_operation=operation, id=update_id
    )
    return operation, update


async def _drop(answer: asyncio.Future[EarlyAnswer], update: Any) -> None:
    """Give up on a request whose start failed: nothing left unread, nothing never run."""
    answer.cancel()
    with contextlib.suppress(BaseException):
        await answer  # it failed with the start
    if inspect.getcoroutinestate(update) == inspect.CORO_CREATED:
        update.close()  # cancelled before it ever ran


async def _handle_or_run(
    client: Client,
    operation: WithStartWorkflowOperation[PizzaOrderWorkflow, OrderConfirmation],
    order: PizzaOrder,
    sent_at: datetime,
    seconds: float,
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """The started run's handle from the request's answer, or after ``seconds`` without
    one, from the server: the run of the order number started since ``sent_at``."""
    starting = asyncio.ensure_future(operation.workflow_handle())
    try:
        await asyncio.wait({starting}, timeout=seconds)
        while not starting.done():
            slow = await run_started_since(client, order.order_number, sent_at)
            if slow is not None:
                starting.add_done_callback(_outcome_read)  # the answer tells the rest
                return client.get_workflow_handle_for(
                    PizzaOrderWorkflow.order_pizza, slow.id, run_id=slow.run_id
                )
            await asyncio.wait({starting}, timeout=0.5)  # not started yet: ask again
        return starting.result()
    except BaseException:
        starting.cancel()
        raise


def _outcome_read(done: asyncio.Future[Any]) -> None:
    """Read the outcome of a future nobody awaits any more (no "never retrieved" warning)."""
    if not done.cancelled():
        done.exception()


async def started_meanwhile(
    client: Client,
    order: PizzaOrder,
    sent_at: datetime,
    error: RPCError,
    patience: float,
    on_unanswered: Unanswered | None,
) -> WorkflowExecutionDescription | None:
    """The server went away with the start in flight: the run it started, if it did,
    asked patiently; ``error`` again when it stays silent for the whole ``patience``."""
    try:
        return await patiently(
            lambda: run_started_since(client, order.order_number, sent_at),
            order.order_number,
            patience=patience,
            on_unanswered=on_unanswered,
        )
    except OrderStillRunning:
        raise error from None  # nothing known of the order: the server's silence says it


async def run_started_since(
    client: Client, order_number: str, since: datetime
) -> WorkflowExecutionDescription | None:
    """The order number's run if it started at ``since`` or later (a start of ours whose
    answer was lost), None when there is none."""
    try:
        description = await client.get_workflow_handle(workflow_id_for(order_number)).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return description if description.start_time >= since else None


def already_started(error: BaseException) -> bool:
    """The start was refused because the order number runs or ran (a time-skipping
    test server says so as a bare ALREADY_EXISTS)."""
    return isinstance(error, WorkflowAlreadyStartedError) or (
        isinstance(error, RPCError) and error.status == RPCStatusCode.ALREADY_EXISTS
    )
