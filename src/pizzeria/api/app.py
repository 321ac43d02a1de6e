"""The app factory: routes, error answers, the page's files, and what each request needs.

The app holds a Temporal client, the ledger and the keys, nothing else: every answer is
read from Temporal and the ledger when it is asked for.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from pizzeria import __version__, config
from pizzeria.api import orders, public, refunds
from pizzeria.api.auth import Keys
from pizzeria.api.document import describe
from pizzeria.api.events import order_events
from pizzeria.api.guard import PERMISSIONS_POLICY, BodyDeadline
from pizzeria.api.hosts import HostCheck, allowed_hosts
from pizzeria.api.idempotency import KeyTable
from pizzeria.api.limits import ApiLimits
from pizzeria.api.pace import OrderPace
from pizzeria.api.problems import PROBLEM_JSON, install_problem_handlers, problem_body
from pizzeria.api.schemas import CancelBody, OrderBody, Problem, RepairBody, StepChange
from pizzeria.api.streams import Streams
from pizzeria.api.views import LedgerReader
from pizzeria.temporal import tracing
from pizzeria.temporal.connection import connect

DESCRIPTION = """\
Order pizzas, follow them and cancel them over HTTP: the exercise's order saga behind a
front door. `POST /orders` takes the exercise's order JSON (without an order number: the
API chooses one) and answers with the order's number and token; reading, following
(server-sent events) and cancelling an order need that token (or the staff key), as
`Authorization: Bearer <token>`; only the event stream also takes `?token=<token>`, and
only an order token. A token opens one run of one order and expires. Every error is
`application/problem+json` (RFC 9457); past a limit (connections, event streams) the
answer is 429 or 503 with `Retry-After`.
"""

# The page and everything it loads come from this app: nothing from elsewhere may run.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def page_policy(provider_origin: str | None) -> str:
    """The page's policy; it may also connect to the payment provider's origin (and no
    other), where it trades the card number for a token (public.payments_config)."""
    if provider_origin is None:
        return PAGE_POLICY
    return PAGE_POLICY.replace("connect-src 'self'", f"connect-src 'self' {provider_origin}")


@dataclass
class ApiSettings:
    keys: Keys
    address: str | None = None
    ledger_location: str | None = None
    #: A client to share (the demo's); else the app connects when it starts.
    client: Client | None = None
    limits: ApiLimits = field(default_factory=ApiLimits)
    #: Host names answered besides 127.0.0.1, localhost and ::1 (see hosts.py): the
    #: bound address, --allowed-host; $PIZZERIA_API_ALLOWED_HOSTS is added to them.
    allowed_hosts: tuple[str, ...] = ()


class SecurityHeaders:
    """Headers on every answer (a 500 included, see PizzeriaApi): no sniffing, no
    caching of tokens, the page's policy, never in a frame, no powerful features."""

    def __init__(self, app: ASGIApp, policy: Callable[[], str] = lambda: PAGE_POLICY) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", self.policy().encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"permissions-policy", PERMISSIONS_POLICY.encode()),
                ]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


EVENT_STREAM = re.compile(orders.EVENTS_ROUTE.replace("{order_number}", "[^/]+"))


class HeadAsGet:
    """``HEAD`` answered as ``GET`` is, without the body (RFC 9110: what answers GET
    answers HEAD): a probe's ``curl -I`` gets the status and headers. The server (uvicorn)
    sends no body to a HEAD, reading its own copy of the request. Not an event stream:
    its answer never ends, so a HEAD of one stays a 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "HEAD"
            and not EVENT_STREAM.fullmatch(scope["path"])
        ):
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


class FullAllow:
    """A 405's ``Allow`` names every method its path answers (RFC 9110, 15.5.6): the
    router names only the first route of the path it tried (``POST`` for ``/orders``,
    whose ``GET`` is another route), and never ``HEAD``, which `HeadAsGet` answers
    wherever ``GET`` is, but on an event stream."""

    def __init__(self, app: ASGIApp, routes: Callable[[], list[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = allowed_methods(self.routes(), scope)
                if allowed:
                    headers = [(k, v) for k, v in message.get("headers", []) if k != b"allow"]
                    message["headers"] = [*headers, (b"allow", ", ".join(allowed).encode())]
            await send(message)

        await self.app(scope, receive, with_allow)


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """The methods the routes of ``scope``'s path answer, HEAD with GET (not on an event
    stream); none when the path is no route's (a mount's files say their own)."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.path_regex.fullmatch(scope["path"]):
            methods |= route.methods or set()
    if "GET" in methods and not EVENT_STREAM.fullmatch(scope["path"]):
        methods.add("HEAD")
    return sorted(methods)


#: Starlette's file answers (the page, /static/) refuse a Range header in plain text.
RANGE_REFUSALS = {
    400: (
        "malformed-range",
        "Range: not a range this server reads (bytes=FIRST-LAST, bytes=FIRST- or "
        "bytes=-LENGTH, within the file)",
    ),
    416: ("range-not-satisfiable", "Range: no byte of the file lies in the range asked for"),
}


class RangeProblems:
    """A Range header a file answer cannot serve is answered as every other error is, a
    problem: Starlette's own answer (400 for a malformed header, 416 for a range past the
    end of the file) is a line of plain text. A 416 keeps its Content-Range (the file's
    size)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(name == b"range" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        refused: Message | None = None

        async def as_problem(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and plain_refusal(message):
                refused = message
            elif refused is None:
                await send(message)
            elif not message.get("more_body", False):  # the plain text's end
                await send_range_problem(send, refused)

        await self.app(scope, receive, as_problem)


def plain_refusal(start: Message) -> bool:
    headers = dict(start.get("headers", []))
    plain = headers.get(b"content-type", b"").startswith(b"text/plain")
    return plain and start["status"] in RANGE_REFUSALS


async def send_range_problem(send: Send, refused: Message) -> None:
    status = refused["status"]
    body = problem_body(status, *RANGE_REFUSALS[status])
    headers = [
        *((k, v) for k, v in refused.get("headers", []) if k == b"content-range"),
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class OneLength:
    """A request that gives both ``Content-Length`` and ``Transfer-Encoding`` is refused
    (400) and its connection closed (RFC 9112, 6.3): a proxy in front that read the
    other length would take the rest of the body for another request (smuggling)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _ in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                body = problem_body(
                    400,
                    "ambiguous-length",
                    "send the body's length one way: Content-Length or Transfer-Encoding, not both",
                )
                headers = [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class PizzeriaApi(FastAPI):
    """FastAPI with our layers outermost: the security headers on every answer (those of
    Starlette's error middleware, a 500, included), then the Host check, then HEAD as
    GET, then every method a 405's path answers in its Allow, then Range refusals as
    problems."""

    allowed_hosts: frozenset[str] = frozenset()
    #: The page's policy now: it names the payment provider found last (public.PagePayments).
    policy: Callable[[], str] = staticmethod(lambda: PAGE_POLICY)

    #: The routers included (no prefix): their routes, as FastAPI's own list no longer shows them.
    included: tuple[APIRouter, ...] = ()

    def every_route(self) -> list[BaseRoute]:
        return [*self.router.routes, *(route for each in self.included for route in each.routes)]

    def build_middleware_stack(self) -> ASGIApp:
        files = RangeProblems(super().build_middleware_stack())
        allow = FullAllow(files, self.every_route)
        inner = OneLength(HostCheck(HeadAsGet(allow), self.allowed_hosts))
        return SecurityHeaders(inner, self.policy)


#: How long the API waits on one call to Temporal that should answer at once.
TEMPORAL_CALL_SECONDS = 5.0


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # lazy: the API starts (and /readyz says why it is not ready) while Temporal is down.
        # Each call that should answer at once is bounded: a hung server is a 503 within
        # the API's 10 s, not the connection's 30 s default, and not twice that.
        client = settings.client or await connect(
            settings.address, lazy=True, call_seconds=TEMPORAL_CALL_SECONDS
        )
        ledger = LedgerReader(settings.ledger_location or config.ledger_location())
        app.state.client = client
        app.state.ledger = ledger
        app.state.keys = settings.keys
        app.state.pace = OrderPace(settings.limits.orders_per_minute)
        app.state.key_table = keys = KeyTable(ledger.location)
        app.state.streams = Streams(
            lambda workflow_id, run_id, after: order_events(
                client, workflow_id, run_id, after, follow=True
            ),
            total=settings.limits.max_streams,
            per_holder=settings.limits.streams_per_token,
            lifetime=settings.limits.stream_seconds,
        )
        try:
            yield
        finally:
            ledger.close()
            keys.close()

    app = PizzeriaApi(
        title="pizzeria",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # The interactive docs load their scripts from a CDN; the page loads nothing.
        docs_url=None,
        redoc_url=None,
        # A trailing slash is a 404, not a redirect to an absolute http:// URL (which
        # would send a client behind a TLS proxy to plain http).
        redirect_slashes=False,
        # FastAPI's own request spans record the query string, which may hold an order
        # token: tracing.RequestSpans traces the requests instead.
        telemetry={"tracing": False},
    )
    install_problem_handlers(app)
    app.included = (public.router, orders.router, refunds.router)
    for router in app.included:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=public.STATIC), name="static")
    app.allowed_hosts = allowed_hosts(settings.allowed_hosts)
    app.state.payments = payments = public.PagePayments()
    app.policy = lambda: page_policy(payments.origin())
    app.add_middleware(BodyDeadline, seconds=settings.limits.body_seconds)
    if tracing.enabled():  # a span per request: the root of the trace of the order it places
        app.add_middleware(tracing.RequestSpans, trusted=settings.keys.is_staff)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the bodies the routes read themselves and the problem."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        models: tuple[type[BaseModel], ...] = (
            OrderBody,
            CancelBody,
            RepairBody,
            Problem,
            StepChange,
            refunds.RefundBody,
        )
        for model in models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        describe(document)
        app.openapi_schema = document
    return app.openapi_schema
