"""The event streams' caps and their shared history reader (streams.py), without a server.

The reader is a stand-in for ``events.order_events`` that counts how often a run's history
is read: however many streams follow a run, it is read once; when the last one leaves,
the read (a long poll on Temporal, in the API) is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from pizzeria.api import streams as streams_module
from pizzeria.api.events import sse
from pizzeria.api.problems import ApiProblem
from pizzeria.api.streams import Follower, Streams
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)


class History:
    """A run's history that grows when the test says so."""

    def __init__(self) -> None:
        self.reads: Counter[str] = Counter()
        self.asked_after: list[int] = []
        self.stopped: list[str] = []
        self.more = asyncio.Event()
        self.failures = 0  # how many reads fail once the history has grown

    def source(self, workflow_id: str, run_id: str, after: int) -> AsyncIterator[str]:
        self.reads[run_id] += 1
        self.asked_after.append(after)

        async def events() -> AsyncIterator[str]:
            try:
                if after < 5:
                    yield sse(5, "step", {"name": "get_distance", "state": "running"})
                await self.more.wait()
                if self.failures > 0:
                    self.failures -= 1
                    raise RuntimeError("Temporal did not answer")
                yield sse(7, "step", {"name": "get_distance", "state": "completed"})
                yield sse(9, "outcome", {"status": "COMPLETED"})
            finally:
                self.stopped.append(run_id)

        return events()


async def read_all(follower: Follower, after: int) -> list[int]:
    try:
        return [int(text.split("\n")[0][4:]) async for text in follower.events(after)]
    finally:
        follower.close()


async def test_fifty_streams_of_one_run_read_its_history_once_and_each_gets_its_part():
    history = History()
    streams = Streams(history.source, total=100, per_holder=100, lifetime=60)
    followers = [streams.follow(streams.admit(f"token-{i}"), "wf", "run-1") for i in range(50)]
    readers = [
        asyncio.create_task(read_all(follower, after=5 if i % 2 else 0))
        for i, follower in enumerate(followers)
    ]
    await eventually(lambda: streams.feeds["wf", "run-1"].events, "the first event", 10, 0.01)
    history.more.set()
    seen = await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert history.reads == {"run-1": 1}
    assert seen == [[5, 7, 9] if i % 2 == 0 else [7, 9] for i in range(50)]
    assert streams.feeds == {} and streams.open_streams == 0


async def test_when_the_last_stream_leaves_the_read_is_cancelled_and_a_new_one_starts_afresh():
    history = History()
    streams = Streams(history.source, total=10, per_holder=10, lifetime=60)
    first = streams.follow(streams.admit("a"), "wf", "run-2")
    second = streams.follow(streams.admit("b"), "wf", "run-2")
    await eventually(lambda: streams.feeds["wf", "run-2"].events, "the first event", 10, 0.01)
    first.close()
    await asyncio.sleep(0.1)
    assert history.stopped == []  # one stream still follows the run
    second.close()
    await eventually(lambda: history.stopped == ["run-2"], "the read to stop", 10, 0.01)
    assert streams.feeds == {} and streams.open_streams == 0
    third = streams.follow(streams.admit("c"), "wf", "run-2")
    await eventually(lambda: history.reads["run-2"] == 2, "a new read", 10, 0.01)
    third.close()


async def test_a_read_that_fails_goes_on_from_where_it_was(monkeypatch):
    monkeypatch.setattr(streams_module, "RETRY_PAUSES", (0.01, 0.01))
    history = History()
    history.failures = 2
    streams = Streams(history.source, total=10, per_holder=10, lifetime=60)
    follower = streams.follow(streams.admit("a"), "wf", "run-3")
    reader = asyncio.create_task(read_all(follower, after=0))
    await eventually(lambda: streams.feeds["wf", "run-3"].events, "the first event", 10, 0.01)
    history.more.set()
    assert await asyncio.wait_for(reader, 10) == [5, 7, 9]  # none missed, none twice
    assert history.asked_after == [0, 5, 5]


async def test_a_read_that_keeps_failing_ends_its_streams_and_the_next_stream_reads_again(
    monkeypatch,
):
    monkeypatch.setattr(streams_module, "RETRY_PAUSES", (0.01, 0.01))
    history = History()
    history.failures = 3
    streams = Streams(history.source, total=10, per_holder=10, lifetime=60)
    follower = streams.follow(streams.admit("a"), "wf", "run-4")
    reader = asyncio.create_task(read_all(follower, after=0))
    await eventually(lambda: streams.feeds["wf", "run-4"].events, "the first event", 10, 0.01)
    history.more.set()
    assert await asyncio.wait_for(reader, 10) == [5]  # ended: the client reconnects
    assert history.reads["run-4"] == 3
    again = streams.follow(streams.admit("a"), "wf", "run-4")
    await eventually(lambda: history.reads["run-4"] == 4, "a new read", 10, 0.01)
    again.close()


async def test_a_stream_ends_by_itself_after_its_lifetime():
    history = History()  # the run never moves past its first event
    streams = Streams(history.source, total=10, per_holder=10, lifetime=0.3)
    follower = streams.follow(streams.admit("a"), "wf", "run-5")
    assert await asyncio.wait_for(read_all(follower, after=0), 20) == [5]
    assert streams.open_streams == 0
    await eventually(lambda: history.stopped == ["run-5"], "the read to stop", 10, 0.01)


async def test_a_stream_ends_when_the_token_that_opened_it_expires():
    history = History()  # the run never moves past its first event
    streams = Streams(history.source, total=10, per_holder=10, lifetime=600)
    follower = streams.follow(streams.admit("a"), "wf", "run-6")
    started = time.monotonic()

    async def until_expiry() -> list[int]:
        try:
            events = follower.events(0, ends_at=time.time() + 0.3)
            return [int(text.split("\n")[0][4:]) async for text in events]
        finally:
            follower.close()

    assert await asyncio.wait_for(until_expiry(), 20) == [5]
    assert time.monotonic() - started < 300  # the token's end, not the stream's lifetime
    assert streams.open_streams == 0


def test_a_token_gets_a_few_streams_everybody_a_bounded_number_then_429_and_503():
    streams = Streams(History().source, total=3, per_holder=2, lifetime=60)
    first, _ = streams.admit("token-a"), streams.admit("token-a")
    with pytest.raises(ApiProblem) as per_token:
        streams.admit("token-a")
    assert per_token.value.status == 429
    assert per_token.value.headers is not None and int(per_token.value.headers["Retry-After"]) > 0
    streams.admit("token-b")
    with pytest.raises(ApiProblem) as in_all:
        streams.admit("token-c")
    assert in_all.value.status == 503 and in_all.value.headers is not None
    assert "Retry-After" in in_all.value.headers
    first.release()
    first.release()  # released once, however often it is called
    assert streams.open_streams == 2
    streams.admit("token-c")
    with pytest.raises(ApiProblem):
        streams.admit("token-a")
