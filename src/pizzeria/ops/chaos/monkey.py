"""The monkey: kills workers, restarts the server and kills the payment provider while the
orders run, as scheduled."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable

from pizzeria.ops.chaos.fleet import ChaosFleet
from pizzeria.ops.chaos.plan import ChaosSettings

KILL = "kill"
RESTART = "restart"
ROLLING = "rolling restart"
PROVIDER = "provider restart"
MAX_UNEXPECTED_EXITS = 20


def breakdown_schedule(settings: ChaosSettings) -> list[tuple[int, str]]:
    """(orders started, what to break): spread over the run, the server restart mid-way,
    the rolling restart of the workers three quarters of the way; the payment provider's
    restarts on a schedule of their own (the first a quarter of the way), so that the
    others keep their places with or without them."""
    kinds = [KILL] * settings.worker_kills
    kinds[len(kinds) // 2 : len(kinds) // 2] = [RESTART] * settings.server_restarts
    late = (3 * len(kinds) + 3) // 4
    kinds[late:late] = [ROLLING] * settings.rolling_restarts
    count = len(kinds)
    schedule = [
        (max(1, round(settings.orders * (n + 1) / (count + 1))), kind)
        for n, kind in enumerate(kinds)
    ]
    restarts = settings.provider_restarts
    schedule += [
        (max(1, round(settings.orders * (4 * n + 1) / (4 * restarts))), PROVIDER)
        for n in range(restarts)
    ]
    return sorted(schedule, key=lambda breakdown: breakdown[0])


async def pause(rng: random.Random) -> None:
    """How long something broken stays down before it is started again."""
    await asyncio.sleep(rng.uniform(0.5, 2.0))


@contextlib.asynccontextmanager
async def down_meanwhile(down: asyncio.Event) -> AsyncIterator[None]:
    """``down`` set while the block runs: the supervisor leaves what is down on purpose."""
    down.set()
    try:
        yield
    finally:
        down.clear()


class Monkey:
    """Breaks what the fleet runs once enough orders started; keeps the workers up between.

    Args:
        deadline: `time.monotonic` after which it breaks nothing more.
        say: tells the user what it broke.
        changed: called after each breakdown (the progress bar shows the counts).
    """

    def __init__(
        self,
        settings: ChaosSettings,
        fleet: ChaosFleet,
        deadline: float,
        say: Callable[[str], None],
        changed: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.fleet = fleet
        self.deadline = deadline
        self.say = say
        self.changed = changed
        self.started = 0
        self.worker_kills = 0
        self.server_restarts = 0
        self.rolling_restarts = 0
        self.provider_restarts = 0
        self.server_down = asyncio.Event()
        self.provider_down = asyncio.Event()
        self._started_more = asyncio.Event()

    def order_started(self) -> None:
        self.started += 1
        self._started_more.set()

    async def run(self) -> None:
        rng = random.Random(self.settings.seed + 1)
        for threshold, kind in breakdown_schedule(self.settings):
            if not await self._orders_started(threshold):
                return
            await asyncio.sleep(rng.uniform(0, 1.0))  # not always at a tidy moment
            if kind == KILL:
                await self._kill_a_worker(rng)
            elif kind == ROLLING:
                await self._restart_every_worker_in_turn()
            elif kind == PROVIDER:
                await self._restart_the_provider(rng)
            else:
                await self._restart_the_server(rng)
            self.changed()

    async def _orders_started(self, threshold: int) -> bool:
        """Wait until ``threshold`` orders started; False at the deadline."""
        while self.started < threshold:
            self._started_more.clear()
            left = self.deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._started_more.wait(), timeout=left)
        return True

    async def _kill_a_worker(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.fleet.workers))
        pid = self.fleet.kill_worker(index)
        self.worker_kills += 1
        self.say(f"killed worker {index} (pid {pid}) with SIGKILL")
        await pause(rng)
        self.fleet.start_worker(index)

    async def _restart_every_worker_in_turn(self) -> None:
        """SIGTERM one worker at a time, as a deployment does: each finishes its steps in
        flight, exits, and polls again before the next one stops."""
        for index in range(len(self.fleet.workers)):
            pid = await asyncio.to_thread(self.fleet.restart_worker_gracefully, index)
            self.say(f"rolling restart: worker {index} (pid {pid}) stopped with SIGTERM, back")
        self.rolling_restarts += 1

    async def _restart_the_server(self, rng: random.Random) -> None:
        async with down_meanwhile(self.server_down):
            await asyncio.to_thread(self.fleet.server.stop)
            self.say("stopped the Temporal dev server")
            await pause(rng)
            await asyncio.to_thread(self.fleet.start_server)
        self.server_restarts += 1
        self.say("restarted the Temporal dev server on the same history file")

    async def _restart_the_provider(self, rng: random.Random) -> None:
        """SIGKILL the payment provider mid-request (its answers in flight are lost, its
        work committed or not), then start it again on the same port and data file."""
        async with down_meanwhile(self.provider_down):
            pid = self.fleet.kill_provider()
            self.say(f"killed the payment provider (pid {pid}) with SIGKILL")
            await pause(rng)
            await asyncio.to_thread(self.fleet.restart_provider)
        self.provider_restarts += 1
        self.say("restarted the payment provider on the same port and data file")

    async def supervise(self) -> None:
        """A worker or a payment provider that died without being killed (it should not)
        is started again; the Temporal dev server dying so ends the run at once (the
        orders would wait for it until the deadline)."""
        while time.monotonic() < self.deadline:
            if not self.server_down.is_set() and self.fleet.server_died():
                raise RuntimeError(
                    "the Temporal dev server exited on its own, not restarted by the run: "
                    f"see {self.fleet.server.log_file}"
                )
            if not self.provider_down.is_set() and self.fleet.provider_died():
                self.fleet.unexpected_exits += 1
                await asyncio.to_thread(self.fleet.restart_provider)
            if not self.server_down.is_set():
                self.fleet.restart_dead_workers()
                if self.fleet.unexpected_exits > MAX_UNEXPECTED_EXITS:
                    raise RuntimeError("workers keep exiting on their own: see worker-*.log")
            await asyncio.sleep(0.5)
