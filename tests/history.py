"""Reading a workflow's history the way a person reads the Web UI: which activity ran when."""

from __future__ import annotations

import json
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

LOCAL_ACTIVITY_MARKER = "core_local_activity"


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
    return [(data["activity_type"], outcome) for data, outcome in await local_markers(handle)]


async def local_markers(handle: WorkflowHandle[Any, Any]) -> list[tuple[dict[str, Any], str]]:
    """Each local activity marker's data (activity_type, attempt, ...) and outcome."""
    markers: list[tuple[dict[str, Any], str]] = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != LOCAL_ACTIVITY_MARKER:
            continue
        if not marker.HasField("failure"):
            outcome = "completed"
        elif marker.failure.HasField("canceled_failure_info"):
            outcome = "cancelled"
        else:
            outcome = "failed"
        markers.append((json.loads(marker.details["data"].payloads[0].data), outcome))
    return markers
