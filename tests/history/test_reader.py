"""The one reader of an order's history, against histories recorded on the dev server.

`pizzeria status`, the API's event stream, `pizzeria check` and the outcome `pizzeria
order` prints all read a run through `pizzeria.history.reader`: each activity (or local
activity, from its marker) paired with what ended it, and the run's status, named once.
"""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.history.v1 import HistoryEvent, WorkflowTaskFailedEventAttributes
from temporalio.client import WorkflowExecutionStatus

from pizzeria.history.reader import (
    COMPENSATION,
    STEP,
    HistoryReader,
    closed_status,
    read_history,
    status_name,
)
from tests.helpers.history import HISTORIES, recorded

CARD_REFUSED = "CreditCardProcessingError: Invalid credit card number"
SAGA = [
    (STEP, "get_distance"),
    (STEP, "update_inventory"),
    (STEP, "process_credit_card"),
    (STEP, "send_bill"),
    (STEP, "notify_delivery_driver"),
]


def activities(name: str) -> list[tuple[str, str, str]]:
    """(kind, name, outcome) of each activity of a recorded run, in the order they started."""
    return [(a.kind, a.name, a.outcome) for a in read_history(recorded(name)).activities()]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("good_order", "COMPLETED"),
        ("pickup", "COMPLETED"),
        ("fast_good_order", "COMPLETED"),
        ("bad_card", "FAILED"),
        ("fast_bad_card", "FAILED"),
        ("cancelled", "CANCELLED"),
        ("cancel_update", "CANCELLED"),
        ("repaired_by_retry", "FAILED"),
        ("resolved_manually", "FAILED"),
        ("declined", "FAILED"),
        ("early_declined", "FAILED"),
        ("early_hold", "COMPLETED"),
        ("fast_early_hold", "COMPLETED"),
        ("fast_pickup_hold", "COMPLETED"),
        ("delivery_refunded", "COMPLETED"),
        ("unspaced_size", "COMPLETED"),  # billed as it said, before its size was priced
        ("quiet_good_order", "COMPLETED"),  # no outcome memo: its status says it
    ],
)
def test_every_recorded_run_closes_with_its_status_named_as_everywhere(
    name: str, status: str
) -> None:
    reader = read_history(recorded(name))
    assert reader.status == status
    assert reader.close is not None and closed_status(reader.close) == status
    assert reader.failed_task is None  # every workflow task of these runs succeeded


def test_recorded_histories_are_all_read() -> None:
    assert len(list(HISTORIES.glob("*.json"))) == 17  # a new one gets its status above


def test_a_good_order_runs_every_step_once_and_undoes_nothing() -> None:
    reader = read_history(recorded("good_order"))
    assert activities("good_order") == [(kind, name, "completed") for kind, name in SAGA]
    assert all(a.attempts == 1 and a.error == "" for a in reader.activities())
    assert reader.compensations() == ([], [])
    # A pickup has no driver to find.
    assert activities("pickup") == [(kind, name, "completed") for kind, name in SAGA[:4]]


def test_the_bad_card_fails_the_charge_then_refunds_then_reverts_the_inventory() -> None:
    reader = read_history(recorded("bad_card"))
    assert activities("bad_card") == [
        (STEP, "get_distance", "completed"),
        (STEP, "update_inventory", "completed"),
        (STEP, "process_credit_card", "failed"),
        (COMPENSATION, "refund_customer", "completed"),
        (COMPENSATION, "revert_inventory", "completed"),
    ]
    charge = reader.activities()[2]
    assert charge.error == CARD_REFUSED and charge.attempts == 1  # never retried
    assert charge.duration_ms is not None and charge.duration_ms >= 0
    assert charge.ended_at is not None and charge.ended_at >= charge.started_at
    assert reader.compensations() == (["refund_customer", "revert_inventory"], [])


def test_local_activities_are_read_from_their_markers_as_activities_are() -> None:
    reader = read_history(recorded("fast_bad_card"))
    assert activities("fast_bad_card") == activities("bad_card")
    local = reader.activities()
    assert all(a.local for a in local)
    assert local[2].error == CARD_REFUSED
    assert all(a.duration_ms is None for a in local)  # a marker records no start
    assert reader.compensations() == (["refund_customer", "revert_inventory"], [])
    # The fast path runs the driver search as an ordinary activity.
    fast = read_history(recorded("fast_good_order")).activities()
    assert [(a.name, a.local) for a in fast][-2:] == [
        ("send_bill", True),
        ("notify_delivery_driver", False),
    ]


def test_compensations_are_listed_in_the_order_they_ended_with_those_that_failed() -> None:
    """The refund fails (an injected fault), the inventory is put back, the operator's
    retry refunds: what `pizzeria order` prints as done and as failed attempts."""
    reader = read_history(recorded("repaired_by_retry"))
    assert activities("repaired_by_retry")[3:] == [
        (COMPENSATION, "refund_customer", "failed"),
        (COMPENSATION, "revert_inventory", "completed"),
        (COMPENSATION, "refund_customer", "completed"),
    ]
    failed_refund = reader.activities()[3]
    assert failed_refund.attempts == 2
    assert failed_refund.error.startswith("InjectedFault: ")
    assert reader.compensations() == (
        ["revert_inventory", "refund_customer"],
        ["refund_customer"],
    )
    resolved = read_history(recorded("resolved_manually"))
    assert resolved.compensations() == (["revert_inventory"], ["refund_customer"])


def test_a_cancel_shows_the_charge_that_timed_out_and_the_cancelled_timer() -> None:
    reader = read_history(recorded("cancel_update"))
    charge = next(a for a in reader.activities() if a.name == "process_credit_card")
    assert (charge.outcome, charge.error) == ("timed out", "activity StartToClose timeout")
    timers = [(s.name, s.outcome) for s in reader.spans.values() if s.kind == "timer"]
    assert timers == [("timer", "fired"), ("timer", "cancelled")]
    assert reader.compensations() == (["refund_customer", "revert_inventory"], [])


def test_read_event_by_event_each_activity_starts_then_ends_in_history_order() -> None:
    """What the API streams: the events' own ids (a reconnect resumes after one), each
    activity running before it ends, the outcome last."""
    reader = HistoryReader()
    changes = [change for event in recorded("bad_card") if (change := reader.read(event))]
    ids = [change.event_id for change in changes]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [(c.name, c.state) for c in changes][:4] == [
        ("get_distance", "running"),
        ("get_distance", "completed"),
        ("update_inventory", "running"),
        ("update_inventory", "completed"),
    ]
    assert [(c.kind, c.name, c.state, c.error) for c in changes if c.state == "failed"] == [
        (STEP, "process_credit_card", "failed", CARD_REFUSED)
    ]
    assert reader.status == "FAILED" and reader.close is not None
    assert all(change.event_id < reader.close.event_id for change in changes)


def read_each(reader: HistoryReader, events: list[HistoryEvent]) -> list[tuple[int, str, str]]:
    return [(c.event_id, c.name, c.state) for e in events if (c := reader.read(e))]


def test_a_history_read_in_pages_reads_as_one_read_at_once() -> None:
    events = recorded("repaired_by_retry")
    middle = len(events) // 2
    paged = HistoryReader()
    first = read_each(paged, events[:middle])
    assert paged.status is None  # still running, as far as it was read
    rest = read_each(paged, events[middle:])
    assert first + rest == read_each(HistoryReader(), events)
    assert rest[-1][1:] == ("refund_customer", "completed")  # paired across the pages
    assert paged.compensations() == read_history(events).compensations()


def workflow_task_event(event_id: int, kind: EventType.ValueType) -> HistoryEvent:
    event = HistoryEvent(event_id=event_id, event_type=kind, event_time=Timestamp(seconds=1))
    if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
        failure = Failure(
            message="boom",
            application_failure_info=ApplicationFailureInfo(type="NondeterminismError"),
        )
        event.workflow_task_failed_event_attributes.CopyFrom(
            WorkflowTaskFailedEventAttributes(failure=failure)
        )
    return event


def test_the_failing_workflow_task_is_the_last_one_and_a_success_clears_it() -> None:
    events = recorded("good_order")[:4]  # started, then a workflow task that completed
    failed = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    reader = read_history([*events, workflow_task_event(5, failed)])
    assert reader.failed_task is not None and reader.failed_task.event_id == 5
    assert reader.status is None
    completed = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    reader.read(workflow_task_event(6, completed))
    assert reader.failed_task is None


def test_statuses_are_spelled_as_the_order_spells_them() -> None:
    assert status_name(WorkflowExecutionStatus.CANCELED) == "CANCELLED"
    assert status_name(WorkflowExecutionStatus.TIMED_OUT) == "TIMED_OUT"
    assert status_name(None) == "UNKNOWN"
    started = recorded("good_order")[0]
    assert closed_status(started) is None


def test_a_run_ended_from_outside_shows_the_step_or_timer_it_left_as_abandoned() -> None:
    """`repair --abandon` terminates the run while a step is under way, or while the
    kitchen timer runs: neither ends in the history, and neither is running any more."""
    events = recorded("good_order")
    assert events[5].event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    assert events[10].event_type == EventType.EVENT_TYPE_TIMER_STARTED

    def ended_90_s_after(last: HistoryEvent) -> list[HistoryEvent]:
        terminated = HistoryEvent(
            event_id=last.event_id + 1,
            event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        )
        terminated.event_time.CopyFrom(last.event_time)
        terminated.event_time.seconds += 90
        return [*events[: last.event_id], terminated]

    in_a_step = read_history(ended_90_s_after(events[5]))
    assert [(s.name, s.outcome) for s in in_a_step.spans.values()] == [
        ("get_distance", "abandoned")
    ]
    at_the_timer = read_history(ended_90_s_after(events[10]))
    assert [(s.name, s.outcome) for s in at_the_timer.spans.values()] == [
        ("get_distance", "completed"),
        ("timer", "abandoned"),
    ]
    timer = at_the_timer.spans[11]
    assert timer.ended and timer.duration_ms == 90_000
    assert at_the_timer.status == in_a_step.status == "TERMINATED"
    assert at_the_timer.compensations() == ([], [])
