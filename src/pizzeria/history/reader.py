"""One reader of a run's history: what each activity did, and how the run ended.

Every view of an order read back from Temporal (`pizzeria status`, the API's event
stream, `pizzeria check`, the outcome a client prints) asks this module, so an activity is
paired with the event that closed it, and a run's status is named, in one place.

`HistoryReader` walks the history once, event by event (the API feeds it a history as it
grows): each scheduled activity is paired with the event that closed it, each local
activity (the fast path) is read from its marker (`pizzeria.history.markers`), each timer
with its firing. It also keeps the workflow task that last failed and the event that
closed the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus

from pizzeria.history.markers import local_activity_of
from pizzeria.models import ASK_BILL_RECORDED, COMPENSATIONS

# What a span is: a step of the saga, a compensation, or a timer.
STEP = "step"
COMPENSATION = "compensation"
TIMER = "timer"

# How a span stands or ended.
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
TIMED_OUT = "timed out"
CANCELLED = "cancelled"
FIRED = "fired"
#: Still going when its run closed (terminated, timed out): it never ended, and never will.
ABANDONED = "abandoned"

#: The statuses of a run closed by Temporal or an operator, not by the order's own code.
ENDED_FROM_OUTSIDE = ("TERMINATED", "TIMED_OUT")

#: How we name a run's status (``CANCELLED``, as the order's own status spells it).
STATUS_NAMES = {
    WorkflowExecutionStatus.RUNNING: "RUNNING",
    WorkflowExecutionStatus.COMPLETED: "COMPLETED",
    WorkflowExecutionStatus.FAILED: "FAILED",
    WorkflowExecutionStatus.CANCELED: "CANCELLED",
    WorkflowExecutionStatus.TERMINATED: "TERMINATED",
    WorkflowExecutionStatus.TIMED_OUT: "TIMED_OUT",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "CONTINUED_AS_NEW",
}

#: The event that closes a run, and the status it closes it with.
STATUS_OF_CLOSE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: WorkflowExecutionStatus.COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: WorkflowExecutionStatus.FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: WorkflowExecutionStatus.CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: WorkflowExecutionStatus.TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: WorkflowExecutionStatus.TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: (
        WorkflowExecutionStatus.CONTINUED_AS_NEW
    ),
}


def status_name(status: WorkflowExecutionStatus | None) -> str:
    """How we name a run's status; ``UNKNOWN`` when there is none."""
    return STATUS_NAMES.get(status, "UNKNOWN") if status else "UNKNOWN"


def closed_status(event: HistoryEvent) -> str | None:
    """The status (named) the event closes its run with; None for any other event."""
    status = STATUS_OF_CLOSE.get(event.event_type)
    return status_name(status) if status is not None else None


def kind_of(name: str) -> str:
    """A compensation, or a step of the saga, by the activity's name."""
    return COMPENSATION if name in COMPENSATIONS else STEP


def failure_text(failure: Failure) -> str:
    """``<error type>: <message>`` of the first typed error in the chain, else the message."""
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


def when(event: HistoryEvent) -> datetime:
    """When the event was recorded, in UTC (a naive datetime)."""
    return event.event_time.ToDatetime().replace(tzinfo=None)


@dataclass
class Span:
    """Something the run started, paired with what ended it: an activity, a local activity
    (read from its marker, written once it is over), or a timer."""

    kind: str  # step, compensation or timer
    name: str
    opened: HistoryEvent  # scheduled, timer started, or the local activity's marker
    attempts: int
    outcome: str  # running, completed, failed, timed out, cancelled, fired, abandoned
    failure: Failure | None = None
    closed: HistoryEvent | None = None  # what ended it; a local activity's is its marker
    local: bool = False

    @property
    def started_at(self) -> datetime:
        return when(self.opened)

    @property
    def ended_at(self) -> datetime | None:
        """When it ended; None while running, and for a local activity (whose start the
        history does not record)."""
        return when(self.closed) if self.closed is not None and not self.local else None

    @property
    def error(self) -> str:
        return failure_text(self.failure) if self.failure is not None else ""

    @property
    def duration_ms(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds() * 1000

    @property
    def ended(self) -> bool:
        return self.outcome != RUNNING


@dataclass(frozen=True)
class Change:
    """What one history event did to an activity: started it (``running``) or ended it."""

    event_id: int
    at: datetime
    kind: str  # step or compensation
    name: str
    state: str
    error: str


# The events that close an activity: how, and where the event keeps its attributes.
ACTIVITY_CLOSES = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: (
        COMPLETED,
        "activity_task_completed_event_attributes",
    ),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: (FAILED, "activity_task_failed_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: (
        TIMED_OUT,
        "activity_task_timed_out_event_attributes",
    ),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: (
        CANCELLED,
        "activity_task_canceled_event_attributes",
    ),
}


@dataclass
class HistoryReader:
    """One run's history, read once, in order; `read` takes each event as it comes."""

    spans: dict[int, Span] = field(default_factory=dict)  # by the id of the opening event
    failed_task: HistoryEvent | None = None  # the last workflow task, when it failed
    close: HistoryEvent | None = None  # the event that closed the run
    _timers: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        """The status the run closed with (named); None while it runs."""
        return closed_status(self.close) if self.close is not None else None

    def activities(self) -> list[Span]:
        """Steps and compensations, local or not, in the order they started."""
        return [span for span in self.spans.values() if span.kind != TIMER]

    def compensations(self) -> tuple[list[str], list[str]]:
        """Compensations that completed, in the order they completed; and those that failed
        (failed or timed out), in the order they failed."""
        ended = sorted(
            (span for span in self.activities() if span.kind == COMPENSATION and span.ended),
            key=ended_order,
        )
        completed = [span.name for span in ended if span.outcome == COMPLETED]
        failed = [span.name for span in ended if span.outcome in (FAILED, TIMED_OUT)]
        return completed, failed

    def read_all(self, events: Iterable[HistoryEvent]) -> HistoryReader:
        for event in events:
            self.read(event)
        return self

    def read(self, event: HistoryEvent) -> Change | None:
        """Take the next event; what it did to an activity, if anything."""
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            span = Span(kind_of(name), name, event, attempts=0, outcome=RUNNING)
            self.spans[event.event_id] = span
            return self._change(event, span)
        if kind in ACTIVITY_CLOSES:
            return self._close_activity(event)
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if (opened := self.spans.get(started.scheduled_event_id)) is not None:
                opened.attempts = started.attempt
        elif (local := local_activity_of(event)) is not None:
            if local.name == ASK_BILL_RECORDED:  # a question to the ledger: no step's
                return None
            span = Span(
                kind_of(local.name),
                local.name,
                event,
                local.attempts,
                local.outcome,
                local.failure,
                closed=event,
                local=True,
            )
            self.spans[event.event_id] = span
            return self._change(event, span)
        else:
            self._read_workflow(event)
        return None

    def _close_activity(self, event: HistoryEvent) -> Change | None:
        outcome, where = ACTIVITY_CLOSES[event.event_type]
        attributes = getattr(event, where)
        span = self.spans.get(attributes.scheduled_event_id)
        if span is None:  # a history read from its middle: nothing to pair it with
            return None
        span.outcome, span.closed = outcome, event
        has_failure = outcome in (FAILED, TIMED_OUT) and attributes.HasField("failure")
        span.failure = attributes.failure if has_failure else None
        return self._change(event, span)

    def _read_workflow(self, event: HistoryEvent) -> None:
        """Timers, workflow tasks and the close of the run."""
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_TIMER_STARTED:
            self._timers[event.timer_started_event_attributes.timer_id] = event.event_id
            self.spans[event.event_id] = Span(TIMER, "timer", event, attempts=1, outcome=RUNNING)
        elif kind in (EventType.EVENT_TYPE_TIMER_FIRED, EventType.EVENT_TYPE_TIMER_CANCELED):
            fired = kind == EventType.EVENT_TYPE_TIMER_FIRED
            attributes = (
                event.timer_fired_event_attributes
                if fired
                else event.timer_canceled_event_attributes
            )
            timer = self.spans.get(self._timers.get(attributes.timer_id, -1))
            if timer is not None:
                timer.outcome, timer.closed = (FIRED if fired else CANCELLED), event
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            self.failed_task = event
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            self.failed_task = None
        elif kind in STATUS_OF_CLOSE:
            self.close = event
            for span in self.spans.values():  # a run ended from outside left them so
                if span.outcome == RUNNING:
                    span.outcome, span.closed = ABANDONED, event

    @staticmethod
    def _change(event: HistoryEvent, span: Span) -> Change:
        return Change(
            event.event_id,
            when(event),
            span.kind,
            span.name,
            span.outcome,
            span.error,
        )


def read_history(events: Iterable[HistoryEvent]) -> HistoryReader:
    """A whole history (or the part of it read so far), read."""
    return HistoryReader().read_all(events)


def ended_order(span: Span) -> int:
    """Where in the history the span ended (-1: it has not)."""
    return span.closed.event_id if span.closed is not None else -1
