"""Server-sent events of one order, read from its workflow history as it grows.

Each event's id is the id of the history event it comes from. History only ever grows
and its ids never change, so a client that reconnects with ``Last-Event-ID: N`` gets
exactly the events after N: none missed, none twice. The stream ends with the outcome;
a reconnect after that gets 204, which tells an EventSource to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle

from pizzeria.api.schemas import OrderOutcomeView, StepChange
from pizzeria.api.views import closed_outcome, run_handle
from pizzeria.history.reader import Change, HistoryReader

KEEP_ALIVE_SECONDS = 15.0
FOLLOW_PAUSE_SECONDS = 0.25
# A bound on the polls of one stream: a day of long polls (about 20 s each) and more.
MAX_PAGES = 10_000
EVENT_KINDS = ("step", "compensation", "outcome")
RECONNECT_MILLISECONDS = 1000


def step_change(change: Change) -> StepChange:
    """A step or compensation that started or ended (`pizzeria.history.reader` pairs each
    activity, local or not, with the event that ended it)."""
    return StepChange(
        kind=change.kind,
        name=change.name,
        state=change.state,
        error=change.error,
        at=change.at.isoformat() + "Z",
    )


def event_schema() -> dict[str, Any]:
    """One event of the stream, for the OpenAPI document."""
    data = {"oneOf": [_ref(StepChange), _ref(OrderOutcomeView)]}
    return {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Resume after it"},
            "event": {"enum": list(EVENT_KINDS)},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


def _ref(model: type[Any]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def sse(event_id: int, event: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n"


async def order_events(
    client: Client, workflow_id: str, run_id: str, after: int, *, follow: bool
) -> AsyncIterator[str]:
    """The run's events after ``after``, then its outcome; ``follow`` waits for new ones."""
    handle = run_handle(client, workflow_id, run_id)
    reader = HistoryReader()
    async for event in history(handle, follow):
        change = reader.read(event)
        if change is not None and event.event_id > after:
            yield sse(event.event_id, change.kind, step_change(change).model_dump())
        if reader.status is not None:
            if event.event_id > after:
                outcome = await closed_outcome(handle, reader.status)
                yield sse(event.event_id, "outcome", outcome.model_dump())
            return


async def history(handle: WorkflowHandle[Any, Any], follow: bool) -> AsyncIterator[HistoryEvent]:
    """The run's history events; ``follow`` long-polls for new ones until it closes.

    Between two polls it pauses a little, so that the events of a busy moment come in one
    answer: a follower then costs the server a few calls per order, not one per event.
    """
    pages = handle.fetch_history_events(wait_new_event=follow)
    for _ in range(MAX_PAGES):
        await pages.fetch_next_page()
        for event in pages.current_page or ():
            yield event
        if pages.next_page_token is None:
            return
        if follow:
            await asyncio.sleep(FOLLOW_PAUSE_SECONDS)


async def with_keep_alive(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """The events, with a comment line whenever none came for a while: proxies and
    browsers close a connection that stays silent."""
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
    iterator = aiter(events)
    pending: asyncio.Future[str] = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=KEEP_ALIVE_SECONDS)
            if not done:
                yield ": still cooking\n\n"
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(anext(iterator))
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending
