"""Open event streams: how many there may be, and one history reader per run for them all.

A stream is admitted only under two caps, one per credential (429 beyond it) and one in
all (503 beyond it), both answered with ``Retry-After``; it holds its place until it ends,
which it does by itself after the stream lifetime (a browser's ``EventSource`` then
reconnects with ``Last-Event-ID`` and misses nothing).

However many clients follow one order, the API long-polls its history once: the first
stream of a run starts a `Feed`, which reads the run's events (``events.order_events``)
into a list and wakes its followers at each new one; each follower sends the events after
its own ``Last-Event-ID`` from that list. A read that fails (Temporal did not answer) goes
on from its last event after a pause, a few times, before its streams end. When the last
follower leaves, the feed's poll is cancelled and the feed forgotten.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from pizzeria.api.problems import ApiProblem

log = logging.getLogger(__name__)

#: What a client is told to wait before trying again once a cap is reached.
RETRY_AFTER_SECONDS = 5

#: A run's events after an event id, as server-sent event texts each starting with
#: ``id: <event id>``: ``source(workflow_id, run_id, after)``.
Source = Callable[[str, str, int], AsyncIterator[str]]
#: A read that fails (Temporal did not answer) is tried again from where it was, after
#: these pauses; then the streams end (their clients reconnect).
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0)


def event_id_of(text: str) -> int:
    """The id of one event text of ``events.sse`` (its first line is ``id: N``)."""
    first = text.split("\n", 1)[0]
    return int(first.removeprefix("id: "))


@dataclass
class Slot:
    """One admitted stream's place under the caps; released once, when it ends."""

    streams: Streams
    holder: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.streams.leave(self.holder)


@dataclass
class Feed:
    """One run's events, read once, for every stream that follows the run."""

    events: list[tuple[int, str]] = field(default_factory=list)
    done: bool = False
    failed: bool = False
    followers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def read(self, source: Source, workflow_id: str, run_id: str) -> None:
        try:
            for pause in (*RETRY_PAUSES, None):
                try:
                    await self._read_on(source(workflow_id, run_id, self.last_id))
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # Temporal did not answer
                    if pause is None:
                        self.failed = True  # the followers end; their clients come back
                        log.warning("reading %s for its event streams failed: %r", run_id, error)
                        return
                    log.info("reading %s for its event streams: %r; again", run_id, error)
                    await asyncio.sleep(pause)
        finally:
            self.done = True
            self.wake()

    async def _read_on(self, events: AsyncIterator[str]) -> None:
        async for text in events:
            self.events.append((event_id_of(text), text))
            self.wake()

    @property
    def last_id(self) -> int:
        return self.events[-1][0] if self.events else 0

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Streams:
    """The caps on open streams, and the feeds they read."""

    def __init__(self, source: Source, *, total: int, per_holder: int, lifetime: float) -> None:
        self.source = source
        self.total = total
        self.per_holder = per_holder
        self.lifetime = lifetime
        self.open: Counter[str] = Counter()
        self.feeds: dict[tuple[str, str], Feed] = {}

    @property
    def open_streams(self) -> int:
        return sum(self.open.values())

    def admit(self, credential: str) -> Slot:
        """A place for one more stream with this credential, else a 429 or a 503."""
        holder = hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest()
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if self.open[holder] >= self.per_holder:
            raise ApiProblem(
                429,
                f"at most {self.per_holder} event streams at once per token: close one",
                slug="too-many-streams",
                headers=retry,
            )
        if self.open_streams >= self.total:
            raise ApiProblem(
                503,
                "the order API follows as many orders as it can: try again shortly",
                slug="streams-full",
                headers=retry,
            )
        self.open[holder] += 1
        return Slot(self, holder)

    def leave(self, holder: str) -> None:
        self.open[holder] -= 1
        if self.open[holder] <= 0:
            del self.open[holder]

    def follow(self, slot: Slot, workflow_id: str, run_id: str) -> Follower:
        """A follower of the run (its feed started if none reads it yet), in ``slot``."""
        key = (workflow_id, run_id)
        feed = self.feeds.get(key)
        if feed is None or feed.failed:
            feed = Feed()
            feed.task = asyncio.create_task(feed.read(self.source, workflow_id, run_id))
            self.feeds[key] = feed
        feed.followers += 1
        return Follower(self, key, feed, slot)

    def unfollow(self, key: tuple[str, str], feed: Feed) -> None:
        feed.followers -= 1
        if feed.followers == 0 and self.feeds.get(key) is feed:
            del self.feeds[key]
            if feed.task is not None:
                feed.task.cancel()  # its long poll on Temporal goes with it


class Follower:
    """One stream's view of a feed. ``close`` (once, whatever ended the stream) gives back
    its place and, if it was the feed's last follower, stops the feed."""

    def __init__(self, streams: Streams, key: tuple[str, str], feed: Feed, slot: Slot) -> None:
        self.streams = streams
        self.key = key
        self.feed = feed
        self.slot = slot
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.streams.unfollow(self.key, self.feed)
            self.slot.release()

    async def events(self, after: int, ends_at: float | None = None) -> AsyncIterator[str]:
        """The run's events after ``after`` as they come, until the run closes, the
        stream's lifetime is over or the wall clock reaches ``ends_at`` (Unix seconds:
        when the token that opened it expires)."""
        feed = self.feed
        loop = asyncio.get_running_loop()
        lasts = self.streams.lifetime
        if ends_at is not None:
            lasts = min(lasts, ends_at - time.time())
        deadline = loop.time() + lasts
        seen = 0
        while True:
            changed = feed.changed  # taken before looking: a wake after this is not missed
            while seen < len(feed.events):
                event_id, text = feed.events[seen]
                seen += 1
                if event_id > after:
                    yield text
            if feed.done:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return
