"""What the order workflow asks of Temporal, spelled once: how long a step may take and
how every activity is retried.

The workflow imports this module through the sandbox (passed through): plain values and
pure functions, nothing that reads a clock, a file or the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio.common import RetryPolicy

from pizzeria.models import (
    CREDIT_CARD_PROCESSING_ERROR,
    INVALID_CHARGE_AMOUNT_ERROR,
    OrderSettings,
)

STEP_TIMEOUT = timedelta(seconds=5)
# The driver search heartbeats each round, so a stuck search is noticed long before its
# start-to-close timeout.
DRIVER_TIMEOUT = timedelta(minutes=5)
DRIVER_HEARTBEAT = timedelta(seconds=10)
# How long an order cancelled by the cancel_order Update waits for the matching
# cancellation request (which `pizzeria cancel` sends right after) before it fails instead.
CANCEL_REQUEST_GRACE = timedelta(minutes=1)
UNLIMITED = 0  # maximum_attempts: retried until it answers
#: Verdicts, not faults: never retried. Anything else (a gateway hiccup, a crashed worker)
#: is retried with the backoff.
BUSINESS_ERRORS = (CREDIT_CARD_PROCESSING_ERROR, INVALID_CHARGE_AMOUNT_ERROR)


def backoff(maximum_attempts: int, non_retryable: Sequence[str] = ()) -> RetryPolicy:
    """The one backoff of every activity the order runs (the exercise's policy with
    shorter waits): 1 s, doubling, at most 30 s between attempts."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=maximum_attempts,
        non_retryable_error_types=list(non_retryable) or None,
    )


def step_retry(attempts: int) -> RetryPolicy:
    """A step before the pivot: at most ``attempts`` (the order's setting), verdicts once."""
    return backoff(max(1, attempts), BUSINESS_ERRORS)


def compensation_retry(attempts: int) -> RetryPolicy:
    """A compensation: at most ``attempts``, then the order asks an operator."""
    return backoff(max(1, attempts))


STEP_RETRY = step_retry(OrderSettings().step_attempts)
# The pivot (the bill) must finish once it may have taken effect: retried without limit
# rather than given up. A verdict (a negative amount) still fails it before any effect.
PIVOT_RETRY = backoff(UNLIMITED, BUSINESS_ERRORS)
# Past the pivot the order only goes forward: retried without limit.
FORWARD_RETRY = backoff(UNLIMITED)
