"""An order's timeline, read from its workflow history: the record the Web UI shows.

Each step and compensation with its start time, duration, attempts and outcome, so a
person can see in the terminal where the card failed and what was undone, in what order.
Reading history needs no worker, so it works for closed orders too. The history is read
by `pizzeria.history.reader`, as every other view of an order reads it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflow.v1 import PendingActivityInfo, PendingWorkflowTaskInfo
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from pizzeria.history.reader import COMPENSATION as COMPENSATION
from pizzeria.history.reader import STEP as STEP
from pizzeria.history.reader import HistoryReader, Span, failure_text, read_history, status_name
from pizzeria.models import order_number_of
from pizzeria.saga import Phase
from pizzeria.temporal.tracing import TRACE_MEMO
from pizzeria.workflows import PizzaOrderWorkflow


@dataclass
class TimelineEntry:
    kind: str
    name: str
    summary: str
    started_at: datetime
    duration_ms: float | None
    attempts: int
    outcome: str  # running, completed, failed, timed out, cancelled, fired, abandoned
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # The server's clock is UTC: said so, as `orders` says it (+00:00), to the microsecond.
        started = self.started_at
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        data["started_at"] = started.isoformat(timespec="microseconds")
        if self.duration_ms is not None:
            data["duration_ms"] = round(self.duration_ms, 3)
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


async def order_timeline(client: Client, handle: WorkflowHandle[Any, Any]) -> list[TimelineEntry]:
    """Every activity and timer of the order's run, in the order they started."""
    events = [event async for event in handle.fetch_history_events()]
    return await timeline_of(client, read_history(events))


async def timeline_of(client: Client, reader: HistoryReader) -> list[TimelineEntry]:
    """`order_timeline` of a history already read."""
    entries = [await _entry(client, span) for span in reader.spans.values()]
    return sorted(entries, key=lambda entry: entry.started_at)


async def _entry(client: Client, span: Span) -> TimelineEntry:
    """A local activity (the fast path) is recorded once it is over, by its marker: its
    duration is not in the history."""
    return TimelineEntry(
        kind=span.kind,
        name=span.name,
        summary=await _summary(client, span.opened),
        started_at=span.started_at,
        duration_ms=span.duration_ms,
        attempts=span.attempts,
        outcome=span.outcome,
        error=span.error,
    )


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
    reader: HistoryReader, pending: PendingWorkflowTaskInfo | None
) -> dict[str, Any] | None:
    """The workflow task that keeps failing, when the last one in the history failed.

    Temporal records only the first failure of a series (the retries are not written to
    the history until one succeeds); how many attempts were made is the pending task's.
    """
    failed = reader.failed_task
    if failed is None:
        return None
    attributes = failed.workflow_task_failed_event_attributes
    return {
        "attempts": max(1, pending.attempt if pending is not None else 1),
        "since": failed.event_time.ToDatetime().isoformat(),
        "error": failure_text(attributes.failure),
    }


def closing_error(reader: HistoryReader) -> str:
    """Why a run that did not complete ended: its failure, or who terminated it."""
    close = reader.close
    if close is None:
        return ""
    if close.HasField("workflow_execution_failed_event_attributes"):
        return failure_text(close.workflow_execution_failed_event_attributes.failure)
    if close.HasField("workflow_execution_terminated_event_attributes"):
        return "terminated: " + close.workflow_execution_terminated_event_attributes.reason
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
    reader = read_history([event async for event in run_handle.fetch_history_events()])
    entries = await timeline_of(client, reader)
    _show_pending(entries, list(description.raw_description.pending_activities))
    status = status_name(description.status)
    raw = description.raw_description
    pending = raw.pending_workflow_task if raw.HasField("pending_workflow_task") else None
    stuck = failing_workflow_task(reader, pending) if status == "RUNNING" else None
    state: dict[str, Any] = {}
    # The query needs a worker (and a workflow task that succeeds); an order without one
    # still has its history.
    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        if stuck is None and (query_closed or status == "RUNNING"):
            state = await run_handle.query(
                PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=3)
            )
    if status == "COMPLETED" and state.get("phase") == Phase.RUNNING:
        state = completed_state(state)
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
        "error": closing_error(reader),
        "timeline": [entry.to_json() for entry in entries],
        **{key: value for key, value in state.items() if key not in ("details", "needs_attention")},
    }


def completed_state(state: dict[str, Any]) -> dict[str, Any]:
    """The saga's state of an order that completed, as its reader means it: the saga knows
    only that nothing was undone ("running", compensations "pending"); the order is done,
    and its compensations are no longer needed."""
    compensations = [
        {**item, "status": "not needed"} if item.get("status") == "pending" else item
        for item in state.get("compensations", [])
    ]
    return {**state, "phase": "completed", "compensations": compensations}
