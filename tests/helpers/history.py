"""Reading a workflow's history the way a person reads the Web UI: which activity ran when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle, WorkflowHistory

from pizzeria.history.markers import LocalActivityRecord, local_activity_of

HISTORIES = Path(__file__).parents[1] / "histories"


def recorded(name: str) -> list[HistoryEvent]:
    """The events of a history recorded on the dev server (``tests/histories/<name>.json``,
    see ``tests/helpers/record_histories.py``)."""
    path = HISTORIES / f"{name}.json"
    return list(WorkflowHistory.from_json(f"pizza-workflow-order-{name}", path.read_text()).events)


async def activity_timeline(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """(activity name, outcome) in history order: scheduled / completed / failed / ..."""
    names: dict[int, str] = {}
    timeline: list[tuple[str, str]] = []
    outcomes = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: (
            "completed",
            "activity_task_completed_event_attributes",
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: (
            "failed",
            "activity_task_failed_event_attributes",
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: (
            "timed out",
            "activity_task_timed_out_event_attributes",
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: (
            "cancelled",
            "activity_task_canceled_event_attributes",
        ),
    }
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            names[event.event_id] = attributes.activity_type.name
            timeline.append((attributes.activity_type.name, "scheduled"))
        elif event.event_type in outcomes:
            outcome, field = outcomes[event.event_type]
            scheduled_id = getattr(event, field).scheduled_event_id
            timeline.append((names[scheduled_id], outcome))
    return timeline


def finished(timeline: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Only the final outcomes, in order (drops 'scheduled')."""
    return [entry for entry in timeline if entry[1] != "scheduled"]


async def local_timeline(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """(local activity name, outcome) in history order, read from the markers that stand
    for local activities: completed / failed / cancelled (one marker per activity, written
    when it is over, whatever number of attempts the worker made)."""
    return [(record.name, record.outcome) for record in await local_records(handle)]


async def local_records(handle: WorkflowHandle[Any, Any]) -> list[LocalActivityRecord]:
    records = [local_activity_of(event) async for event in handle.fetch_history_events()]
    return [record for record in records if record is not None]
