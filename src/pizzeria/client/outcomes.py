"""Reading orders back: how a run ended, which orders there are.

The outcome of a failed order includes the compensations that ran, read from the
workflow's history by `pizzeria.history.reader` (the same record the Web UI shows), so it
needs no worker. Waiting for it survives connection drops and server restarts
(`pizzeria.temporal.waiting`).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.service import RPCError

from pizzeria import config
from pizzeria.failures import error_message_of, error_type_of
from pizzeria.history.reader import read_history, status_name
from pizzeria.models import (
    ORDER_STATUS,
    REGISTER_ORDER_STATUS,
    STATUS_DELIVERY_FAILURE,
    STEP_NOTIFY_DELIVERY_DRIVER,
    WORKFLOW_TYPE,
    OrderConfirmation,
    order_number_of,
    workflow_id_for,
)
from pizzeria.order_visibility import NEEDS_ATTENTION_STATUS, NOTHING_UNDONE, OUTCOME_STATUS
from pizzeria.temporal.codec import CodecKeyError, NoCodecKey
from pizzeria.temporal.waiting import Unanswered, patiently

WEB_UI = "http://localhost:8233"


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
    delivery: bool | None = None  # for a completed order: delivered (else picked up)
    cancel_reason: str | None = None  # for a cancelled order: the reason its cancel gave

    def to_json(self) -> dict[str, Any]:
        """What clients are shown of an outcome: with the bill's confirmation (its number
        and the delivery's status, as the text shows them) once the order completed."""
        return {
            "order_number": self.order_number,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "status": self.status,
            "amount": self.amount,
            "error_type": self.error_type,
            "error": self.error,
            "cancel_reason": self.cancel_reason,
            "compensations": self.compensations,
            "confirmation": self.confirmation,
            "web_ui": self.web_ui,
        }


#: The Web UI's address, for links to an order, when it is not where the dev server puts it.
WEB_UI_VARIABLE = "PIZZERIA_WEB_UI"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def web_ui_of(target_host: str) -> str | None:
    """The Web UI of the Temporal server at ``target_host``: ``$PIZZERIA_WEB_UI`` if set;
    for a server on this machine, the one `pizzeria server` said it serves (its
    ``--ui-port``), else the dev server's usual one (its gRPC port + 1000: 8233 for 7233);
    None for any other server, whose Web UI cannot be guessed."""
    given = os.environ.get(WEB_UI_VARIABLE, "").strip().rstrip("/")
    if given:
        return given
    port = target_host.rpartition(":")[2]
    if on_this_machine(target_host) and port.isdigit():
        return config.local_web_ui(int(port)) or f"http://localhost:{int(port) + 1000}"
    return None


def on_this_machine(target_host: str) -> bool:
    """Whether a server's ``host:port`` is on this machine (localhost, 127.0.0.1, ::1)."""
    return target_host.rpartition(":")[0].lower() in LOCAL_HOSTS


def web_ui_link(
    workflow_id: str, run_id: str, namespace: str = "default", target_host: str = "localhost:7233"
) -> str:
    """The order's run in the Web UI; "" when the Web UI is not known (`web_ui_of`)."""
    base = web_ui_of(target_host)
    if base is None:
        return ""
    return f"{base}/namespaces/{namespace}/workflows/{workflow_id}/{run_id}/history"


def compensations_from_history(events: list[HistoryEvent]) -> tuple[list[str], list[str], bool]:
    """Compensations that completed, in the order they completed; those that failed; and
    whether the run looked for a driver (a delivery: a pickup never does). From the run's
    history."""
    reader = read_history(events)
    done, failed = reader.compensations()
    delivery = any(span.name == STEP_NOTIFY_DELIVERY_DRIVER for span in reader.activities())
    return done, failed, delivery


#: PizzaOrderWorkflow.cancel_order's name: what `pizzeria cancel` and the API's DELETE send.
CANCEL_UPDATE = "cancel_order"


async def cancel_reason_of(client: Client, events: list[HistoryEvent]) -> str | None:
    """The reason of the last ``cancel_order`` Update the run accepted, decrypted here;
    None without one (a cancellation request alone) or when it cannot be read."""
    for event in reversed(events):
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            continue
        asked = event.workflow_execution_update_accepted_event_attributes.accepted_request.input
        if asked.name != CANCEL_UPDATE:
            continue
        try:
            (reason,) = await client.data_converter.decode(asked.args.payloads[:1], [str])
        except Exception:  # a key this machine lacks, or bytes that are no text: not shown
            return None
        return str(reason) if reason else None
    return None


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
    run = client.get_workflow_handle(handle.id, run_id=run_id)
    events = [event async for event in run.fetch_history_events()]
    compensations, failed, delivery = compensations_from_history(events)
    outcome = OrderOutcome(
        order_number=order_number,
        workflow_id=handle.id,
        run_id=run_id,
        status=status_name(description.status),
        compensations=compensations,
        failed_compensations=failed,
        web_ui=web_ui_link(
            handle.id, run_id, client.namespace, client.service_client.config.target_host
        ),
    )
    if confirmation is not None:
        outcome.amount = confirmation.amount
        outcome.confirmation = asdict(confirmation)
        outcome.delivery = delivery
    else:
        outcome.error_type = error_type_of(failure)
        outcome.error = error_message_of(failure)
        if outcome.status == "CANCELLED":
            outcome.cancel_reason = await cancel_reason_of(client, events)
    return outcome


async def order_handle(
    client: Client, order_number: str, run_id: str | None = None
) -> WorkflowHandle[Any, Any]:
    """The latest run of an order (or its run ``run_id``), or a clear error when there is
    none."""
    handle = client.get_workflow_handle(workflow_id_for(order_number), run_id=run_id)
    try:
        await handle.describe()
    except RPCError as error:
        said = str(error)
        if re.search(r"namespace \S+ is not found", said, re.IGNORECASE):  # not the order's
            raise ConnectionError(f"Temporal refused the request: {said}") from None
        if "not found" in said.lower():
            if run_id is not None:
                raise LookupError(f"order {order_number} has no run {run_id}") from None
            raise LookupError(f"no order {order_number} on this Temporal server") from None
        raise
    return handle


#: The OrderStatus values of a run still going: its workflow changes them until it closes.
OPEN_ORDER_STATUSES = ("IN_PROGRESS", "COMPENSATING", "NEEDS_ATTENTION")


def shown_order_status(order_status: str | None, run_status: str) -> str | None:
    """The OrderStatus to show: an open one left by a run that was ended from outside is
    that run's status (TERMINATED, TIMED_OUT)."""
    if order_status in OPEN_ORDER_STATUSES and run_status != "RUNNING":
        return run_status
    return order_status


async def _listed(client: Client, query: str, limit: int) -> AsyncIterator[WorkflowExecution]:
    """The runs ``query`` lists; a server that does not know OrderStatus says how to
    register it (`LookupError`), not only that the query is invalid."""
    try:
        async for execution in client.list_workflows(query, limit=limit):
            yield execution
    except RPCError as error:
        said = str(error)
        if "invalid search attribute" not in said.lower() or ORDER_STATUS.name not in said:
            raise
        raise LookupError(
            f"{ORDER_STATUS.name} is not registered in namespace {client.namespace}, so no "
            f"order can be listed by it: register it (`{REGISTER_ORDER_STATUS}`), or list "
            "them all without --status"
        ) from None


async def recent_orders(
    client: Client, order_status: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """Orders from Temporal's visibility, newest first; ``order_status`` filters on
    the OrderStatus search attribute. A run ended from outside (terminated: `repair
    --abandon`; timed out) could not update it: an open OrderStatus of a closed run is
    shown as the run's status, and not listed under the open one."""
    query = f"WorkflowType = '{WORKFLOW_TYPE}'"
    if order_status:
        query += f" AND {ORDER_STATUS.name} = '{order_status.upper()}'"
        if order_status.upper() in OPEN_ORDER_STATUSES:
            query += " AND ExecutionStatus = 'Running'"
    found: list[dict[str, Any]] = []
    async for execution in _listed(client, query, limit):
        try:
            memo = await execution.memo()
        except NoCodecKey:
            raise  # nothing encrypted can be read here: said once, for the whole list
        except CodecKeyError:  # this run's memo is under a key this machine lacks
            memo = {"compensation": "(unreadable: encrypted under another key)"}
        order_status = shown_order_status(
            execution.typed_search_attributes.get(ORDER_STATUS), status_name(execution.status)
        )
        compensation = memo.get("compensation")
        if compensation is None and order_status == NEEDS_ATTENTION_STATUS:  # no memo till closed
            compensation = "failed: waiting for an operator"
        elif compensation is None and execution.status == WorkflowExecutionStatus.COMPLETED:
            compensation = NOTHING_UNDONE  # a completed order with nothing undone writes no memo
        elif compensation == NOTHING_UNDONE and (
            order_status == OUTCOME_STATUS[STATUS_DELIVERY_FAILURE]
            # a client without OrderStatus (the exercise's, the temporal CLI): the memo says
            or memo.get("outcome") == STATUS_DELIVERY_FAILURE
        ):
            compensation = "none; refunded in full: no driver took it"  # a step, not undoing
        found.append(
            {
                "workflow_id": execution.id,
                "run_id": execution.run_id,
                "order_number": order_number_of(execution.id),
                "started": execution.start_time.isoformat(),
                "status": status_name(execution.status),
                "order_status": order_status,
                "amount": memo.get("amount"),
                "compensation": compensation,
            }
        )
    return found
