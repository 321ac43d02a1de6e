"""An order's timeline, read from its workflow history: the record the Web UI shows.

Each step and compensation with its start time, duration, attempts and outcome, so a
person can see in the terminal where the card failed and what was undone, in what order.
Reading history needs no worker, so it works for closed orders too.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflow.v1 import PendingActivityInfo, PendingWorkflowTaskInfo
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from pizzeria.client import status_name
from pizzeria.history.markers import local_activity_of
from pizzeria.models import COMPENSATIONS, order_number_of
from pizzeria.temporal.tracing import TRACE_MEMO
from pizzeria.workflows import PizzaOrderWorkflow

STEP = "step"
COMPENSATION = "compensation"
TIMER = "timer"


@dataclass
class TimelineEntry:
    kind: str
    name: str
    summary: str
    started_at: datetime
    duration_ms: float | None
    attempts: int
    outcome: str  # running, completed, failed, timed out, cancelled, fired
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data


async def _summary(client: Client, event: HistoryEvent) -> str:
    if not event.HasField("user_metadata") or not event.user_metadata.HasField("summary"):
        return ""
    payload: Payload = event.user_metadata.summary
    try:
        (value,) = await client.data_converter.decode([payload], [str])
    except Exception:
        return ""
    return str(value)


def failure_text(failure: Any) -> str:
    kind = (
        failure.application_failure_info.type
        if failure.HasField("application_failure_info")
        else ""
    )
    message = failure.message
    while not kind and failure.HasField("cause"):
        failure = failure.cause
        if failure.HasField("application_failure_info"):
            kind, message = failure.application_failure_info.type, failure.message
    return f"{kind}: {message}" if kind else message


async def order_timeline(client: Client, handle: WorkflowHandle[Any, Any]) -> list[TimelineEntry]:
    """Every activity and timer of the order's run, in the order they started."""
    return await timeline_of(client, [event async for event in handle.fetch_history_events()])


async def timeline_of(client: Client, events: list[HistoryEvent]) -> list[TimelineEntry]:
    """`order_timeline` of history events already read."""
    entries: dict[int, TimelineEntry] = {}
    timers: dict[str, int] = {}
    for event in events:
        when = event.event_time.ToDatetime().replace(tzinfo=None)
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            entries[event.event_id] = TimelineEntry(
                kind=COMPENSATION if name in COMPENSATIONS else STEP,
                name=name,
                summary=await _summary(client, event),
                started_at=when,
                duration_ms=None,
                attempts=0,
                outcome="running",
            )
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes = event.activity_task_started_event_attributes
            entries[attributes.scheduled_event_id].attempts = attributes.attempt
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            attributes_timer = event.timer_started_event_attributes
            timers[attributes_timer.timer_id] = event.event_id
            entries[event.event_id] = TimelineEntry(
                kind=TIMER,
                name="timer",
                summary=await _summary(client, event),
                started_at=when,
                duration_ms=None,
                attempts=1,
                outcome="running",
            )
        elif kind in (EventType.EVENT_TYPE_TIMER_FIRED, EventType.EVENT_TYPE_TIMER_CANCELED):
            attributes_end = (
                event.timer_fired_event_attributes
                if kind == EventType.EVENT_TYPE_TIMER_FIRED
                else event.timer_canceled_event_attributes
            )
            entry = entries[timers[attributes_end.timer_id]]
            entry.outcome = "fired" if kind == EventType.EVENT_TYPE_TIMER_FIRED else "cancelled"
            entry.duration_ms = (when - entry.started_at).total_seconds() * 1000
        elif (local := await _local_entry(client, event, when)) is not None:
            entries[event.event_id] = local
        else:
            _close_activity(entries, event, when)
    return sorted(entries.values(), key=lambda entry: entry.started_at)


async def _local_entry(client: Client, event: HistoryEvent, when: datetime) -> TimelineEntry | None:
    """A local activity (the fast path), from its marker: recorded once it is over, with
    its attempts; its duration is not in the history."""
    local = local_activity_of(event)
    if local is None:
        return None
    return TimelineEntry(
        kind=COMPENSATION if local.name in COMPENSATIONS else STEP,
        name=local.name,
        summary=await _summary(client, event),
        started_at=when,
        duration_ms=None,
        attempts=local.attempts,
        outcome=local.outcome,
        error=failure_text(local.failure) if local.failure is not None else "",
    )


def _close_activity(entries: dict[int, TimelineEntry], event: HistoryEvent, when: datetime) -> None:
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        scheduled, outcome, error = (
            event.activity_task_completed_event_attributes.scheduled_event_id,
            "completed",
            "",
        )
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        attributes = event.activity_task_failed_event_attributes
        scheduled, outcome = attributes.scheduled_event_id, "failed"
        error = failure_text(attributes.failure)
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        timed_out = event.activity_task_timed_out_event_attributes
        scheduled, outcome = timed_out.scheduled_event_id, "timed out"
        error = failure_text(timed_out.failure)
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
        scheduled = event.activity_task_canceled_event_attributes.scheduled_event_id
        outcome, error = "cancelled", ""
    else:
        return
    entry = entries[scheduled]
    entry.outcome = outcome
    entry.error = error
    entry.duration_ms = (when - entry.started_at).total_seconds() * 1000


def _show_pending(entries: list[TimelineEntry], pending: list[PendingActivityInfo]) -> None:
    """A running activity's attempts and last failure are not in the history yet."""
    by_name = {activity.activity_type.name: activity for activity in pending}
    for entry in entries:
        if entry.outcome == "running" and entry.name in by_name:
            activity = by_name[entry.name]
            entry.attempts = activity.attempt
            if activity.HasField("last_failure"):
                entry.error = f"last attempt: {activity.last_failure.message}"


def failing_workflow_task(
    events: list[HistoryEvent], pending: PendingWorkflowTaskInfo | None
) -> dict[str, Any] | None:
    """The workflow task that keeps failing, when the last one in the history failed.

    Temporal records only the first failure of a series (the retries are not written to
    the history until one succeeds); how many attempts were made is the pending task's.
    """
    failed: HistoryEvent | None = None
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failed = event
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            failed = None
    if failed is None:
        return None
    attributes = failed.workflow_task_failed_event_attributes
    return {
        "attempts": max(1, pending.attempt if pending is not None else 1),
        "since": failed.event_time.ToDatetime().isoformat(),
        "error": failure_text(attributes.failure),
    }


def closing_error(events: list[HistoryEvent]) -> str:
    """Why a run that did not complete ended: its failure, or who terminated it."""
    for event in reversed(events):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            return failure_text(event.workflow_execution_failed_event_attributes.failure)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            return "terminated: " + event.workflow_execution_terminated_event_attributes.reason
    return ""


async def order_report(
    client: Client, handle: WorkflowHandle[Any, Any], *, query_closed: bool = True
) -> dict[str, Any]:
    """The order's latest run: status, summary, timeline, and the saga's own state; for a
    run whose workflow task keeps failing, that task; for a closed one, why it ended.

    Querying a closed order makes a worker replay its whole history: with
    ``query_closed=False`` only a running order is asked (the API reads closed orders
    often, and shows nothing of a closed order that only the query knows).
    """
    description = await handle.describe()
    run_handle = client.get_workflow_handle(handle.id, run_id=description.run_id)
    events = [event async for event in run_handle.fetch_history_events()]
    entries = await timeline_of(client, events)
    _show_pending(entries, list(description.raw_description.pending_activities))
    status = status_name(description.status)
    raw = description.raw_description
    pending = raw.pending_workflow_task if raw.HasField("pending_workflow_task") else None
    stuck = failing_workflow_task(events, pending) if status == "RUNNING" else None
    state: dict[str, Any] = {}
    # The query needs a worker (and a workflow task that succeeds); an order without one
    # still has its history.
    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        if stuck is None and (query_closed or status == "RUNNING"):
            state = await run_handle.query(
                PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=3)
            )
    return {
        "order_number": order_number_of(handle.id),
        "workflow_id": handle.id,
        "run_id": description.run_id,
        "status": status,
        "summary": await description.static_summary(),
        "trace_id": await description.memo_value(TRACE_MEMO, None),  # when traced (OTEL_*)
        "details": state.get("details", ""),
        "needs_attention": bool(state.get("needs_attention")),
        "failing_workflow_task": stuck,
        "error": closing_error(events),
        "timeline": [entry.to_json() for entry in entries],
        **{key: value for key, value in state.items() if key not in ("details", "needs_attention")},
    }
