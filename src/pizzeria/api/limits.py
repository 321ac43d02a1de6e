"""What the front door lets one client, one token and everybody hold at once.

Each limit is an option of ``pizzeria api`` and an environment variable (the option
wins). The defaults suit one API process on a small machine: a thousand connections, a
hundred from any one client address, of which up to 700 may be event streams, five per
order token; a request head must arrive
within 10 s and its body within 15 s, and a client must read what it is sent (its
buffers full for 30 s, it is cut off); a stream lasts at most 15 minutes (a browser's
``EventSource`` then reconnects by itself and resumes after the last event it got); an
order token opens its order for 24 hours; and, when set, each client address may place
so many orders a minute (off by default: pace.py).

Nothing here imports FastAPI or uvicorn: the CLI reads these without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ApiLimits:
    #: Open connections in all; over it a request is answered 503 with Retry-After.
    max_connections: int = 1000
    #: Open connections from one client address (429 over it); 0: no limit (behind a
    #: proxy every connection comes from the proxy's address).
    connections_per_client: int = 100
    #: Seconds a request head (request line and headers) may take to arrive.
    head_seconds: float = 10.0
    #: Seconds a request body may take to arrive once its head has.
    body_seconds: float = 15.0
    #: Seconds an answer may wait for the client to read it (a full send buffer).
    send_seconds: float = 30.0
    #: Event streams open at once in all (503 over it).
    max_streams: int = 700
    #: Event streams open at once with one credential (429 over it).
    streams_per_token: int = 5
    #: Seconds an event stream lasts before the server ends it (the client resumes).
    stream_seconds: float = 900.0
    #: Hours an order token opens its order.
    token_hours: float = 24.0
    #: Orders one client address may place in any minute (429 beyond); 0: no limit.
    orders_per_minute: int = 0

    @property
    def token_seconds(self) -> float:
        return self.token_hours * 3600


@dataclass(frozen=True)
class LimitOption:
    field: str
    flag: str
    env: str
    help: str
    maximum: float
    minimum: int = 1  # an integer limit's least value (0 where 0 turns it off)


#: The options of ``pizzeria api`` for the limits, in the order ``--help`` shows them.
LIMIT_OPTIONS = (
    LimitOption(
        "max_connections",
        "--max-connections",
        "PIZZERIA_API_MAX_CONNECTIONS",
        "Open connections in all (503 beyond)",
        1_000_000,
    ),
    LimitOption(
        "connections_per_client",
        "--connections-per-client",
        "PIZZERIA_API_CONNECTIONS_PER_CLIENT",
        "Open connections from one client address (429 beyond); 0: no limit (behind a proxy)",
        1_000_000,
        minimum=0,
    ),
    LimitOption(
        "head_seconds",
        "--head-timeout",
        "PIZZERIA_API_HEAD_TIMEOUT",
        "Seconds a request's head may take to arrive (then the connection is closed)",
        3600,
    ),
    LimitOption(
        "body_seconds",
        "--body-timeout",
        "PIZZERIA_API_BODY_TIMEOUT",
        "Seconds a request's body may take to arrive (408 beyond)",
        3600,
    ),
    LimitOption(
        "send_seconds",
        "--send-timeout",
        "PIZZERIA_API_SEND_TIMEOUT",
        "Seconds an answer may wait for the client to read it (then the connection is closed)",
        3600,
    ),
    LimitOption(
        "max_streams",
        "--max-streams",
        "PIZZERIA_API_MAX_STREAMS",
        "Event streams open at once in all (503 beyond)",
        1_000_000,
    ),
    LimitOption(
        "streams_per_token",
        "--streams-per-token",
        "PIZZERIA_API_STREAMS_PER_TOKEN",
        "Event streams open at once per token or key (429 beyond)",
        10_000,
    ),
    LimitOption(
        "stream_seconds",
        "--stream-lifetime",
        "PIZZERIA_API_STREAM_LIFETIME",
        "Seconds an event stream lasts; the client then reconnects and resumes",
        86_400,
    ),
    LimitOption(
        "token_hours",
        "--token-hours",
        "PIZZERIA_API_TOKEN_HOURS",
        "Hours an order token opens its order",
        24 * 366,
    ),
    LimitOption(
        "orders_per_minute",
        "--orders-per-minute",
        "PIZZERIA_API_ORDERS_PER_MINUTE",
        "Orders one client address may place a minute (429 beyond); 0: no limit",
        1_000_000,
        minimum=0,
    ),
)

assert {option.field for option in LIMIT_OPTIONS} == {field.name for field in fields(ApiLimits)}
