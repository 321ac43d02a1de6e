"""The connection guard: a cap on connections, and deadlines for a request's head and body.

uvicorn reads requests with h11 and waits as long as a client likes: a connection that
sends half its headers, or 7 bytes of a 1,000-byte body, is held open for ever, with no
token needed (slow loris). Here:

- ``GuardedH11`` (uvicorn's h11 protocol, subclassed) closes a connection whose request
  head is not complete within ``head_seconds`` of the connection being ready for it (when
  it opens, and after each answer), and one whose body is not complete within
  ``body_seconds`` plus a little (a backstop: normally the app has answered 408 by then).
  Past ``max_connections`` open connections, a new one is answered 503 with
  ``Retry-After`` and closed; far past it, closed at once. The same, with a 429, past
  ``connections_per_client`` from one client address. A client that stops reading
  what it is sent (its buffers full, the transport's writing paused) for ``send_seconds``
  is cut off: otherwise a few sockets that never read, each asking for a large answer
  again and again, would hold their connections for as long as they liked.
  A request h11 cannot read is answered 400 as a problem, as every other error is
  (uvicorn's own answer is a line of plain text), and the connection closes.
- ``BodyDeadline`` (ASGI middleware) gives ``receive`` a deadline, so a route reading a
  body that does not come in time answers 408 (and closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import h11
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pizzeria.api.limits import ApiLimits
from pizzeria.api.problems import PROBLEM_JSON, ApiProblem, problem_body
from pizzeria.api.streams import RETRY_AFTER_SECONDS

log = logging.getLogger(__name__)

#: Connections over the cap that still get a 503 answer; past these they are just closed.
OVERFLOW = 64
#: The protocol's body backstop comes this long after the app's own deadline.
BACKSTOP_SECONDS = 2.0

# No camera, microphone, location, payment... for the page or anything it could embed.
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

# As on every other answer (app.SecurityHeaders, which the answers made here never reach):
# a problem is data, nothing to run, frame or keep.
PROBLEM_HEADERS = (
    (b"content-type", PROBLEM_JSON.encode()),
    (b"connection", b"close"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"permissions-policy", PERMISSIONS_POLICY.encode()),
)


FULL = problem_body(
    503,
    "connections-full",
    "the order API holds as many connections as it can: try again shortly",
)
MINE_FULL = problem_body(
    429,
    "too-many-connections",
    "this client address holds as many connections to the order API as one may: close "
    "some (an event stream is one), or try again shortly",
)
NOT_HTTP = problem_body(
    400,
    "malformed-request",
    "the request is not one HTTP/1.1 can read (its request line, a header or its framing): "
    "the connection is closed",
)


async def connections_full(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer of a connection over the cap (then the connection closes)."""
    await _refuse(send, 503, FULL)


async def client_connections_full(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer of a connection over its client address's cap (then it closes)."""
    await _refuse(send, 429, MINE_FULL)


async def _refuse(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *PROBLEM_HEADERS,
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with the cap and the deadlines (``guarded_protocol``)."""

    limits: ClassVar[ApiLimits] = ApiLimits()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.guard_timer: asyncio.TimerHandle | None = None
        self.guard_phase: Any = None
        self.send_timer: asyncio.TimerHandle | None = None
        over = len(self.connections) - self.limits.max_connections
        mine = self.client_over()
        if over > OVERFLOW or mine > OVERFLOW:
            self.transport.close()
            return
        if over > 0:
            self.app = connections_full
        elif mine > 0:
            self.app = client_connections_full
        self.watch()

    def client_over(self) -> int:
        """How many connections past its cap the client address of this one holds (one
        client cannot take the connections every other client needs)."""
        cap = self.limits.connections_per_client
        if not cap or not self.client:
            return 0
        host = self.client[0]
        return sum(1 for other in self.connections if _host_of(other) == host) - cap

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch()

    def send_400_response(self, msg: str) -> None:
        """What h11 cannot read is answered as every other error, a problem (uvicorn's
        own answer is a line of plain text); then the connection closes."""
        headers = [*PROBLEM_HEADERS, (b"content-length", str(len(NOT_HTTP)).encode())]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=NOT_HTTP),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_timer()
        self.stop_send_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if getattr(self, "send_timer", None) is None:
            self.send_timer = self.loop.call_later(self.limits.send_seconds, self.not_reading)

    def resume_writing(self) -> None:
        self.stop_send_timer()
        super().resume_writing()

    def stop_send_timer(self) -> None:
        timer = getattr(self, "send_timer", None)
        if timer is not None:
            timer.cancel()
        self.send_timer = None

    def not_reading(self) -> None:
        """Cut off: ``close`` would wait for the unread answer to be sent, for ever."""
        self.send_timer = None
        log.info("cutting off a connection whose client has not read its answer in time")
        self.transport.abort()

    def watch(self) -> None:
        """Arm the deadline of what the connection waits for from the client, if anything."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            phase, seconds = "head", self.limits.head_seconds
        elif state is h11.SEND_BODY:
            phase, seconds = "body", self.limits.body_seconds + BACKSTOP_SECONDS
        else:
            phase, seconds = None, 0.0
        if phase == self.guard_phase:
            return
        self.stop_timer()
        self.guard_phase = phase
        if phase is not None:
            self.guard_timer = self.loop.call_later(seconds, self.too_slow, phase)

    def stop_timer(self) -> None:
        timer = getattr(self, "guard_timer", None)
        if timer is not None:
            timer.cancel()
        self.guard_timer = None

    def too_slow(self, phase: str) -> None:
        self.guard_timer = None
        if not self.transport.is_closing():
            log.info("closing a connection whose request %s did not arrive in time", phase)
            self.transport.close()


def _host_of(connection: object) -> str | None:
    client = getattr(connection, "client", None)
    return client[0] if client else None


def guarded_protocol(limits: ApiLimits) -> type[GuardedH11]:
    """The protocol class for uvicorn's ``http`` setting, with these limits."""
    return type("GuardedH11", (GuardedH11,), {"limits": limits})


class BodyTooSlow(ApiProblem):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"the request body did not arrive within {seconds:g} s",
            slug="body-timeout",
            headers={"Connection": "close"},
        )


class BodyDeadline:
    """``receive`` with a deadline until the request body is complete: a route reading a
    body that does not come in time answers 408 and the connection closes."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        complete = answering = False

        async def receive_in_time() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                if answering:  # a stream that never read its body: it ends here
                    return {"type": "http.disconnect"}
                raise BodyTooSlow(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def send_noting_start(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        # A client that went away while sending its body: nobody is left to answer.
        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, receive_in_time, send_noting_start)
