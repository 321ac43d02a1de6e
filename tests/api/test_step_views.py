"""The steps GET /orders/{n} shows for an order still running: a step the order will not
run (a pickup's distance on the fast path, a pickup's driver) is "not run", not pending."""

from __future__ import annotations

from typing import Any

from pizzeria.api.views import not_needed_steps, steps_of
from pizzeria.samples import sample_order


def completed(name: str) -> dict[str, Any]:
    return {
        "kind": "step",
        "name": name,
        "outcome": "completed",
        "attempts": 1,
        "started_at": None,
        "duration_ms": None,
        "error": "",
    }


def test_a_running_fast_path_pickup_shows_its_skipped_steps_not_run() -> None:
    order = sample_order("P1", is_delivery=False)
    report = {"steps": [{"name": "get_distance", "status": "skipped"}]}
    timeline = [completed("update_inventory"), completed("process_credit_card")]
    steps, _ = steps_of(timeline, False, not_needed_steps(report, order))
    states = {step.name: step.state for step in steps}
    assert states == {
        "get_distance": "not run",
        "update_inventory": "completed",
        "process_credit_card": "completed",
        "send_bill": "pending",
        "notify_delivery_driver": "not run",
    }


def test_a_running_delivery_keeps_its_steps_pending() -> None:
    order = sample_order("D1")
    steps, _ = steps_of([], False, not_needed_steps({}, order))
    assert {step.state for step in steps} == {"pending"}
