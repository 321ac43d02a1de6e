"""Which attempt of an activity gave its answer, told to the workflow that ran it.

A workflow never sees an activity's attempts: the retries happen on the server (for a
local activity, on the worker), and only the last answer reaches the workflow, with no
count. So the activity says it, and only when its answer is not its first attempt's:

- a result (a dataclass) is returned as `with_attempt` of its class: the same fields
  plus ``attempt``, equal to the plain value (the attempt says how the answer came, not
  what it is). A first attempt's result is returned as it is, so an answer that needed
  no retry keeps its payload byte for byte, and a reader that decodes the plain class
  ignores the extra field (a worker of the previous release reads this one's answers);
- an `ApplicationError` verdict (a failure for good) carries ``{"attempt": n}`` as its
  details (`attempt_details`).

The workflow decodes a result as `with_attempt` of its class (an answer without
``attempt`` reads as attempt 1) and hands on the plain value (`split`); a step that ran
out of attempts made its retry policy's maximum (`attempts_of_failure`). A result that is
not a dataclass (a bare bool) cannot carry the count without breaking older readers: its
attempts stay unknown (None).

Nothing here knows about pizzas. The workflow sandbox imports this module (passed
through), so it stays deterministic: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.exceptions import TimeoutError as ActivityTimeout

T = TypeVar("T")

ATTEMPT = "attempt"
_EXTENDED: dict[type, type] = {}  # one class per base, made once per process


def with_attempt(base: type[T]) -> type[T]:
    """``base`` with one more field, ``attempt`` (1 when an answer does not say it).

    A class that is not a dataclass is returned as it is: it cannot carry the field.
    """
    if not dataclasses.is_dataclass(base):
        return base
    extended = _EXTENDED.get(base)
    if extended is None:
        plain = [f.name for f in dataclasses.fields(base)]

        def same_answer(self: Any, other: object) -> object:
            if not isinstance(other, base):
                return NotImplemented
            return all(getattr(self, name) == getattr(other, name) for name in plain)

        extended = dataclasses.make_dataclass(
            base.__name__,
            [(ATTEMPT, int, dataclasses.field(default=1))],
            bases=(base,),
            namespace={"__eq__": same_answer},
            eq=False,
        )
        extended.__module__ = base.__module__
        _EXTENDED[base] = extended
    return cast("type[T]", extended)


def _current_attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


def reported(result: T) -> T:
    """The activity's ``result`` as it returns it: saying its attempt when not the first."""
    attempt = _current_attempt()
    if attempt <= 1 or not dataclasses.is_dataclass(result) or isinstance(result, type):
        return result
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.init}
    extended: T = with_attempt(type(result))(**values, **{ATTEMPT: attempt})
    return extended


def attempt_details() -> list[dict[str, int]]:
    """Details for a verdict the activity raises: its attempt, when not the first."""
    attempt = _current_attempt()
    return [{ATTEMPT: attempt}] if attempt > 1 else []


def split(answer: Any, base: type[T]) -> tuple[T, int | None]:
    """An answer decoded as ``with_attempt(base)``: the plain ``base`` value, and the
    attempt that gave it (None when ``base`` cannot carry it)."""
    if not dataclasses.is_dataclass(base):
        return cast("T", answer), None
    values = {f.name: getattr(answer, f.name) for f in dataclasses.fields(base) if f.init}
    return base(**values), int(getattr(answer, ATTEMPT, 1))


def attempts_of_failure(error: BaseException, retry_policy: RetryPolicy) -> int | None:
    """How many attempts an activity that failed for good made, when its failure tells:
    all of them when it ran out (``retry_policy`` says how many), the verdict's own
    attempt when it refused (1 when the verdict says none), else None (a cancellation).

    A regular activity's failure is an `ActivityError` that says why retries stopped. A
    local activity's comes unwrapped: a verdict is non-retryable, and a retryable error or
    a timeout reaching the workflow means its attempts ran out.
    """
    if isinstance(error, ActivityError):
        ran_out = error.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
        refused = error.retry_state == RetryState.NON_RETRYABLE_FAILURE
        cause = error.__cause__
    else:
        refused = isinstance(error, ApplicationError) and error.non_retryable
        ran_out = not refused and isinstance(error, ApplicationError | ActivityTimeout)
        cause = error
    if ran_out:
        return retry_policy.maximum_attempts or None
    if not refused:
        return None
    details = cause.details if isinstance(cause, ApplicationError) else ()
    said = details[0] if details and isinstance(details[0], dict) else {}
    attempt = said.get(ATTEMPT)
    return attempt if isinstance(attempt, int) and attempt >= 1 else 1
