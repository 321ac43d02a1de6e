"""Blocking work on a thread, awaited so that a cancelled caller never overtakes it: the
ledger's writes (`pizzeria.activities.in_thread`) and the payment provider's requests
(`pizzeria.payments.stripe_gateway.StripeGateway`) alike."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def seen_through(work: Awaitable[T]) -> T:
    """Await ``work``, already under way on a thread. A thread cannot be stopped: when the
    caller is cancelled, the work is still waited for to its end (its failure dropped)
    before the cancellation goes on, so whatever the caller's caller does next (a
    compensation) comes after it, never while it still writes or is on the wire."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise
