"""How many orders one client may place a minute (``--orders-per-minute``; off by default).

Each order holds stock and a card at once, so a client that places them in a loop can
empty the kitchen for everybody (its holds are released only when its orders are undone).
With a limit set, each client address (the connection's peer: behind a proxy, the proxy,
which should then pace its own clients) may make that many ``POST /orders`` in any 60 s;
one more is a ``429`` with ``Retry-After``, the seconds until the oldest of them is a
minute old. A retry with the same ``Idempotency-Key`` counts as a request, as a client
cannot tell an answer lost from one refused. Only the addresses seen in the last minute
are kept, and at most `MAX_CLIENTS` of them.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque

from pizzeria.api.problems import ApiProblem

WINDOW_SECONDS = 60.0
#: Addresses remembered at most: past it, the one seen longest ago is forgotten first.
MAX_CLIENTS = 100_000


class OrderPace:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._placed: OrderedDict[str, deque[float]] = OrderedDict()

    def admit(self, client: str, now: float | None = None) -> None:
        """Count one ``POST /orders`` of ``client``, or refuse it with a 429."""
        if self.per_minute <= 0:
            return
        now = time.monotonic() if now is None else now
        times = self._placed.pop(client, None) or deque()
        while times and now - times[0] >= WINDOW_SECONDS:
            times.popleft()
        self._placed[client] = times  # the most recently seen last
        while len(self._placed) > MAX_CLIENTS:
            self._placed.popitem(last=False)
        if len(times) >= self.per_minute:
            wait = max(1, math.ceil(WINDOW_SECONDS - (now - times[0])))
            raise ApiProblem(
                429,
                f"at most {self.per_minute} orders a minute from one client: try again in {wait} s",
                slug="too-many-orders",
                headers={"Retry-After": str(wait)},
            )
        times.append(now)
