"""Waiting for an order through a server that does not answer.

The order carries on without its client: a dropped connection or a restarting server says
nothing about it. So a client that stops hearing the server keeps asking, with backoff,
and never calls an order failed while it runs; after its patience it says the order is
still running and how to follow it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")

#: gRPC answers that mean the server is away or overloaded, not that it said no.
UNANSWERED = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.CANCELLED,
    }
)
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 5.0

#: ``on_unanswered(error, attempt)``: told each time the server did not answer.
Unanswered = Callable[[RPCError, int], None]


class OrderStillRunning(Exception):
    """No outcome within the time the client would wait: the order carries on."""

    def __init__(
        self, order_number: str, seconds: float, unreachable: str | None, hint: str = ""
    ) -> None:
        why = (
            f" as far as we know (Temporal did not answer at the end: {unreachable})"
            if unreachable
            else ""
        )
        super().__init__(
            f"order {order_number} has no outcome after {seconds:.0f} s and is still running"
            f"{why}: follow it with `pizzeria status {order_number} --watch`"
            + (f"; {hint}" if hint else "")
        )
        self.order_number = order_number
        self.unreachable = unreachable


class OrderNeedsAttention(OrderStillRunning):
    """The order waits for an operator (a compensation failed for good): waiting longer
    for its outcome would only wait for them."""

    def __init__(self, order_number: str) -> None:
        Exception.__init__(
            self,
            f"order {order_number} needs attention: a compensation failed for good, and it "
            f"waits for an operator; see `pizzeria status {order_number}`, then `pizzeria "
            f"repair {order_number} --retry` once the cause is fixed",
        )
        self.order_number = order_number
        self.unreachable = None


async def patiently(
    ask: Callable[[], Awaitable[T]],
    order_number: str,
    *,
    patience: float | None = None,
    on_unanswered: Unanswered | None = None,
) -> T:
    """``ask()`` until it answers, again and again while the server does not answer
    (`UNANSWERED`); any other error is the answer. After ``patience`` seconds (None: no
    limit) without one: `OrderStillRunning`."""
    deadline = None if patience is None else time.monotonic() + patience
    attempt, unreachable = 0, None
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(left):
                return await ask()
        except TimeoutError:
            raise OrderStillRunning(order_number, patience or 0, unreachable) from None
        except RPCError as error:
            if error.status not in UNANSWERED:
                raise
            attempt, unreachable = attempt + 1, str(error) or error.status.name
            if on_unanswered is not None:
                on_unanswered(error, attempt)
        pause = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempt - 1))
        pause *= random.uniform(0.5, 1.0)
        if deadline is not None and time.monotonic() + pause >= deadline:
            raise OrderStillRunning(order_number, patience or 0, unreachable)
        await asyncio.sleep(pause)
