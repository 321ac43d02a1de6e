"""What a saga says about itself: its phase, each step's and compensation's state, and
the error it raises when a compensation fails for good (`pizzeria.saga`).

Plain data and pure functions, read by the saga inside the workflow and by whoever shows
an order (the timeline, the API, the outcome memo): nothing here waits or calls out.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError, FailureError

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
RESOLVED = "resolved manually"


class Phase(enum.StrEnum):
    """Where a saga is: what code reads to decide (never the text of `on_progress`)."""

    RUNNING = "running"  # the steps run; nothing undone
    COMPENSATING = "compensating"  # a step failed, or the workflow was cancelled
    NEEDS_ATTENTION = "needs attention"  # waiting for retry_failed or resolve_manually
    COMPENSATED = "compensated"  # every compensation done, or resolved by hand
    COMPENSATION_FAILED = "compensation failed"  # for good, with no repair (SagaError)


class SagaError(ApplicationError):
    """Raised only when a compensation failed for good.

    Its ``__cause__`` is the failure that started the compensation (never lost), and its
    ``details[0]`` lists every compensation with its outcome.
    """

    def __init__(self, message: str, outcomes: list[dict[str, Any]]) -> None:
        super().__init__(message, outcomes, type="SagaError", non_retryable=True)
        self.outcomes = outcomes


@dataclass
class StepState:
    name: str
    status: str = RUNNING
    attempts: int | None = None  # None until the caller says (a saga cannot see retries)
    last_error: str | None = None


@dataclass
class CompensationState:
    name: str
    summary: str | None = None
    status: str = PENDING
    attempts: int = 0
    last_error: str | None = None


def describe_error(error: BaseException) -> str:
    """A one-line reason, digging through ActivityError to the activity's own message."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    cause = error.__cause__ if isinstance(error, ActivityError) else None
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'ApplicationError'}: {cause.message}"
    if isinstance(cause, FailureError):
        return f"{type(cause).__name__}: {cause.message}"
    if isinstance(error, FailureError):
        return f"{type(error).__name__}: {error.message}"
    return f"{type(error).__name__}: {error}"


def repair_words(repaired_by: str | None, note: str | None = None) -> str:
    """How an operator ended a needs-attention saga, in words: retried, or resolved by hand
    (with ``note`` when given); "" when nobody had to."""
    if repaired_by is None:
        return ""
    if repaired_by == "retry":
        return "retried by an operator"
    return f"resolved by hand: {note}" if note else "resolved by hand"


def shown(state: StepState | CompensationState) -> dict[str, Any]:
    return {
        "name": state.name,
        "status": state.status,
        "attempts": state.attempts,
        "last_error": state.last_error,
    }
