"""What one order costs, pinned: history events, payload bytes as stored, billable actions.

`pizzeria bench --costs` runs each shape once on its own dev server and worker, with fixed
inputs, so every figure is exact. A change that adds an event, an action or a payload byte
fails here with the difference shown: update COSTS on purpose, and BENCHMARKS.md with it.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import DataConverter

from pizzeria.activities import PizzaOrderActivities, lean_charge, run_of
from pizzeria.models import (
    Bill,
    CardCharge,
    CreditCardCharge,
    CreditCardInfo,
    Pizza,
    RunRef,
    StockRequest,
)
from pizzeria.ops.bench.costs import SHAPES, billable_actions
from pizzeria.samples import GOOD_CARD
from tests.helpers import run_pizzeria

# shape: (events, payload bytes, actions)
# Real money (docs/payments.md) added bytes, no event and no action: the order's optional
# card token (payment_method: null, in the start input and the card step's input, 44), the
# hold's payment id and state in the card step's answer (59), the summaries saying hold and
# capture (+16 for a good order; +2 for a bad card, whose release is scheduled). The
# cancelled shape waits in its kitchen timer, which now comes after the card hold
# (hold-before-kitchen, order_hold.py): the cancel finds stock taken and a card held, and
# undoes both (the stock, the hold and the two compensations: 26 events, 4 actions more).
# The patch order-2026-12 (workflows.py) stands for lean-order and hold-before-kitchen:
# its id is 3 bytes longer, in the marker and in TemporalChangeVersion (+6), and the
# cancelled shape, which waits, records one marker and one upsert where it recorded two
# (2 events, 128 bytes fewer; the same workflow task, so the same actions).
# The patch order-2026-12-quiet-close stands for order-2026-12 (its id 12 bytes longer, in
# the marker and in TemporalChangeVersion: +24): an order that completes with nothing
# undone writes no outcome memo at its close (one event and its 229 bytes fewer; a memo
# is not billed, so the same actions).
COSTS = {
    "good": (38, 4668, 8),
    "bad": (39, 4399, 8),
    "cancelled": (52, 5589, 11),
    "pickup": (32, 4191, 7),
    "baseline-good": (35, 1610, 6),
    "baseline-bad": (35, 1363, 6),
}


def test_each_shape_costs_exactly_what_is_pinned_and_the_order_within_two_actions():
    done = run_pizzeria("bench", "--costs", "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    measured = {
        shape["shape"]: (shape["events"], shape["payload_bytes"], shape["actions"])
        for shape in report["shapes"]
    }
    assert tuple(measured) == SHAPES
    differences = {
        shape: {"pinned": COSTS[shape], "measured": figures}
        for shape, figures in measured.items()
        if figures != COSTS[shape]
    }
    assert not differences, f"(events, payload bytes, actions) changed: {differences}"
    for order, bare in (("good", "baseline-good"), ("bad", "baseline-bad")):
        assert measured[order][2] - measured[bare][2] <= 2


def event(kind: EventType.ValueType, **attributes: Any) -> HistoryEvent:
    return HistoryEvent(event_type=kind, **attributes)


def test_actions_count_retries_and_markers_per_task_but_not_patch_versions_or_memos():
    started = {"activity_task_started_event_attributes": {"attempt": 3}}
    events = [
        event(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED),
        event(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
        event(EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED, **started),  # two retries
        event(
            EventType.EVENT_TYPE_MARKER_RECORDED,
            marker_recorded_event_attributes={"workflow_task_completed_event_id": 4},
        ),
        event(
            EventType.EVENT_TYPE_MARKER_RECORDED,
            marker_recorded_event_attributes={"workflow_task_completed_event_id": 4},
        ),
        event(
            EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
            upsert_workflow_search_attributes_event_attributes={
                "search_attributes": {"indexed_fields": {"TemporalChangeVersion": {}}}
            },
        ),
        event(
            EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
            upsert_workflow_search_attributes_event_attributes={
                "search_attributes": {"indexed_fields": {"OrderStatus": {}}}
            },
        ),
        event(EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED),
        event(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED),
    ]
    # start 1, activity 1 + 2 retries, one task's markers 1, the OrderStatus upsert 1
    assert billable_actions(events) == 6


def input_hint(method: Any) -> Any:
    return typing.get_type_hints(method)[next(iter(method.__annotations__))]


@pytest.mark.parametrize(
    ("method", "old", "lean"),
    [
        (
            "process_credit_card",
            "charge",
            CardCharge("ref/run", "A1", 3500, CreditCardInfo("L", GOOD_CARD)),
        ),
        ("refund_customer", "charge", RunRef("ref/run", "A1")),
        ("revert_inventory", "stock", RunRef("ref/run", "A1")),
    ],
)
def test_activities_still_read_the_inputs_orders_sent_before_the_lean_shapes(
    method: str, old: str, lean: Any
):
    """An order started before a deploy sends the old, larger input to the new worker."""
    sent = {
        "charge": CreditCardCharge(
            Bill(1, "A1", "Pizza order", 4000, "ref/run"),
            CreditCardInfo("L", GOOD_CARD),
            3500,
            "ref/run",
        ),
        "stock": StockRequest("ref/run", "A1", [Pizza("Small, with pepperoni", 1200)]),
    }[old]
    converter = DataConverter.default.payload_converter
    hint = input_hint(getattr(PizzaOrderActivities, method))
    for value in (sent, lean):
        decoded = converter.from_payload(converter.to_payload(value), hint)
        # What the activity then reads: the run and the order number, from either shape.
        read = lean_charge(decoded) if method == "process_credit_card" else run_of(decoded)
        assert (read.order_ref, read.order_number) == ("ref/run", "A1")
