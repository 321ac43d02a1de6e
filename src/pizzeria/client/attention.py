"""Waiting for an order unless it comes to need an operator: a compensation failed for
good, and whatever waits on the order (its outcome, a cancel) would wait for that operator.
`before_attention` gives up at once instead, with the caller's own error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from pizzeria.models import ORDER_STATUS
from pizzeria.order_visibility import NEEDS_ATTENTION_STATUS

T = TypeVar("T")

#: How often a cancel that waits looks whether the order came to need an operator.
ATTENTION_POLL_SECONDS = 1.0


async def until_needs_attention(run: WorkflowHandle[Any, Any]) -> None:
    """Returns (never otherwise) once the run says it needs an operator: a compensation
    failed for good, and what waits on the compensations waits on them."""
    while True:
        await asyncio.sleep(ATTENTION_POLL_SECONDS)
        with contextlib.suppress(RPCError):
            described = await run.describe()
            if described.typed_search_attributes.get(ORDER_STATUS) == NEEDS_ATTENTION_STATUS:
                return


async def before_attention(
    waiting: Awaitable[T], run: WorkflowHandle[Any, Any], otherwise: Exception
) -> T:
    """What ``waiting`` gives, unless the run comes to need an operator first: then
    ``otherwise`` is raised at once (waiting on would only wait for the operator)."""
    answer = asyncio.ensure_future(waiting)
    stuck = asyncio.ensure_future(until_needs_attention(run))
    try:
        await asyncio.wait([answer, stuck], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stuck.cancel()
        if not answer.done():
            answer.cancel()
            # The SDK turns the cancelled wait into an error of its own: read, not logged
            # as "never retrieved" with its traceback.
            answer.add_done_callback(_read_its_error)
    if answer.done() and not answer.cancelled():
        return answer.result()
    raise otherwise


def _read_its_error(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
