"""What `pizzeria status --json` says of a step and of a completed order's saga."""

from __future__ import annotations

from datetime import datetime

from pizzeria.history.timeline import TimelineEntry, completed_state


def test_a_step_says_its_time_in_utc_and_its_duration_in_whole_microseconds() -> None:
    entry = TimelineEntry(
        kind="step",
        name="get_distance",
        summary="",
        started_at=datetime(2026, 12, 4, 22, 49, 30),  # the server's UTC, no fraction
        duration_ms=19.182000000000002,
        attempts=1,
        outcome="completed",
        error="",
    )
    shown = entry.to_json()
    assert shown["started_at"] == "2026-12-04T22:49:30.000000+00:00"  # as `orders` says it
    assert shown["started_at"][11:23] == "22:49:30.000"  # the column `status` prints
    assert shown["duration_ms"] == 19.182


def test_a_completed_orders_saga_is_completed_and_its_compensations_not_needed() -> None:
    state = {
        "phase": "running",
        "compensations": [
            {"name": "refund_customer", "status": "pending"},
            {"name": "revert_inventory", "status": "pending"},
        ],
        "steps": [{"name": "send_bill", "status": "done"}],
    }
    shown = completed_state(state)
    assert shown["phase"] == "completed"
    assert [c["status"] for c in shown["compensations"]] == ["not needed", "not needed"]
    assert shown["steps"] == state["steps"] and state["phase"] == "running"  # a copy
