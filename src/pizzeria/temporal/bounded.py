"""A bound on every call a client makes to Temporal that is not a wait by design.

The SDK gives most calls no deadline of their own: against a Temporal server that is hung
(stopped, swapping, its database locked) rather than down, a call waits for the
connection's default, about 30 s, and a request that makes two such calls waits twice.
`pizzeria api` answers within its own bounds (10 s, then 503), so its client bounds each
call that should answer at once (describe, start, signal, cancel, list, a page of
history...) to ``seconds``, unless the caller set a deadline of its own. What waits on
purpose is left alone: a history poll for new events (the event streams), and the Updates
and Update-with-Start, which wait for a worker to accept them and are bounded by their
callers.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

from temporalio.client import Interceptor, OutboundInterceptor

#: The calls bounded: each answers at once unless the server is in trouble.
BOUNDED = (
    "cancel_workflow",
    "count_workflows",
    "describe_workflow",
    "fetch_workflow_history_events",
    "list_workflows",
    "query_workflow",
    "signal_workflow",
    "start_workflow",
    "terminate_workflow",
)


class BoundedCalls(Interceptor):
    def __init__(self, seconds: float) -> None:
        self.timeout = timedelta(seconds=seconds)

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Bounded(next, self.timeout)


class _Bounded(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, timeout: timedelta) -> None:
        super().__init__(next)
        for name in BOUNDED:
            call = getattr(next, name)
            bounded = _bounding_async if inspect.iscoroutinefunction(call) else _bounding
            setattr(self, name, bounded(call, timeout))


def _bound(input: Any, timeout: timedelta) -> Any:
    if input.rpc_timeout is None and not getattr(input, "wait_new_event", False):
        input.rpc_timeout = timeout
    return input


def _bounding_async(call: Any, timeout: timedelta) -> Any:
    async def bounded(input: Any) -> Any:
        return await call(_bound(input, timeout))

    return bounded


def _bounding(call: Any, timeout: timedelta) -> Any:
    """The listing calls hand back an iterator; each page it asks for has the bound."""

    def bounded(input: Any) -> Any:
        return call(_bound(input, timeout))

    return bounded
