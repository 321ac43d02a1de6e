"""Local activities (the order's fast path) as the history records them: one marker each.

A local activity has no activity events: when it is over, the SDK records a marker whose
details say which activity it was and after how many attempts, and whose failure, if
any, says how it ended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent

# The marker the SDK records for each local activity (the fast path's steps), when it ends.
LOCAL_ACTIVITY_MARKER = "core_local_activity"


@dataclass
class LocalActivityRecord:
    name: str
    attempts: int
    outcome: str  # completed, failed, cancelled
    failure: Failure | None


def local_activity_of(event: HistoryEvent) -> LocalActivityRecord | None:
    """The local activity a marker event records, or None for any other event."""
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    try:  # written by the SDK's core as plain JSON, never through our codec
        data = json.loads(marker.details["data"].payloads[0].data)
        name, attempts = str(data["activity_type"]), int(data["attempt"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    if not marker.HasField("failure"):
        return LocalActivityRecord(name, attempts, "completed", None)
    cancelled = marker.failure.HasField("canceled_failure_info")
    return LocalActivityRecord(
        name, attempts, "cancelled" if cancelled else "failed", marker.failure
    )
