"""The front door's headers and hosts, and its free text, under attack.

A page that rebinds its own name to 127.0.0.1 drives the API from the operator's browser:
the API answers only the Host names it is served under (421 otherwise). Every answer, a
500 included, says never to frame it and grants no powerful feature. Free text with
control or format characters is a 422 naming the field, before anything starts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.api.app import ApiSettings, create_app
from pizzeria.api.auth import Keys
from pizzeria.api.hosts import HOSTS_ENV, host_name, unusable_hosts
from pizzeria.api.schemas import EXERCISE_ORDER
from pizzeria.api.serve import bind
from pizzeria.api.serve import serving as serve_in_loop
from pizzeria.ops.processes import free_port
from tests.helpers.api_stack import STAFF_KEY, Api
from tests.helpers.orders import GOOD_SECRET

pytestmark = pytest.mark.timeout(120)

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

Serving = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Serving:
    """``async with serving(host=..., allowed=(...)) as http``: the app in this process
    (started as uvicorn starts it), asked under that Host; Temporal is never reached."""
    monkeypatch.delenv(HOSTS_ENV, raising=False)

    @asynccontextmanager
    async def served(
        host: str = "127.0.0.1:8000", allowed: tuple[str, ...] = (), extra: Any = None
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = ApiSettings(
            Keys(GOOD_SECRET.encode(), STAFF_KEY),
            address=f"127.0.0.1:{free_port()}",  # lazy: never connected to here
            ledger_location=str(tmp_path / "ledger.db"),
            allowed_hosts=allowed,
        )
        app = create_app(settings)
        if extra is not None:
            extra(app)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url=f"http://{host}", timeout=30) as http,
        ):
            yield http

    return served


# -- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "localhost."]
)
async def test_the_local_names_are_answered(serving, host):
    async with serving(host=host) as http:
        answer = await http.get("/healthz")
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "host", ["rebound.attacker.example", "rebound.attacker.example:8000", "127.0.0.1.nip.io"]
)
async def test_a_rebound_name_gets_a_421_problem_with_the_security_headers(serving, host):
    async with serving(host=host) as http:
        answer = await http.get("/menu")
        placed = await http.post("/orders", json=order_body())
    assert answer.status_code == 421 and placed.status_code == 421
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 421 and problem["type"].endswith("host-not-allowed")
    assert "attacker" not in answer.text
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value


async def test_names_given_on_the_command_line_or_in_the_environment_are_answered(
    serving, monkeypatch
):
    async with serving(host="pizza.example:8443", allowed=("pizza.example",)) as http:
        assert (await http.get("/healthz")).status_code == 200
    monkeypatch.setenv(HOSTS_ENV, "orders.example, api.example")
    async with serving(host="api.example") as http:
        assert (await http.get("/healthz")).status_code == 200
    async with serving(host="other.example") as http:
        assert (await http.get("/healthz")).status_code == 421


def test_host_names_are_read_as_a_browser_sends_them():
    assert host_name("Example.COM:8000") == "example.com"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("") is None and host_name("a:b:c") is None


def test_pizzeria_api_takes_allowed_hosts():
    from tests.helpers import run_pizzeria

    done = run_pizzeria("api", "--help")
    assert "--allowed-host" in done.stdout and HOSTS_ENV in done.stdout
    # A name no Host header could carry is a typo: said in one line, nothing served.
    assert (
        unusable_hosts(
            ["orders.example.com", "orders.example.com:8443", "[::1]:8000", "10.0.0.5", "*", ""]
        )
        == []
    )
    assert unusable_hosts(["bad host!", "a/b", "ok.example"]) == ["bad host!", "a/b"]
    env = {**os.environ, HOSTS_ENV: "ok.example,x/y"}
    for args, environment, said in (
        (("--allowed-host", "bad host!"), os.environ, "--allowed-host 'bad host!' is no host"),
        ((), env, f"${HOSTS_ENV} 'x/y' is no host name"),
    ):
        refused = run_pizzeria("api", "--port", "1", *args, env=dict(environment), timeout=60)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"error: {said}"), line


# -- headers --------------------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers(serving):
    async with serving() as http:
        answers = [
            await http.get("/"),
            await http.get("/healthz"),
            await http.get("/static/app.js"),
            await http.get("/no/such/page"),
            await http.post("/orders", content=b"{", headers={"content-type": "application/json"}),
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 404, 400]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, name)
        assert "camera=()" in answer.headers["permissions-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_a_500_carries_the_security_headers_too(serving):
    def breaking(app: FastAPI) -> None:
        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("a bug")

    async with serving(extra=breaking) as http:
        answer = await http.get("/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, name
    assert "camera=()" in answer.headers["permissions-policy"]
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("status", "answered"),
    [
        (RPCStatusCode.UNAVAILABLE, 503),  # Temporal down
        (RPCStatusCode.CANCELLED, 503),  # hung: the call ran out of time on our side
        (RPCStatusCode.DEADLINE_EXCEEDED, 503),
        (RPCStatusCode.INVALID_ARGUMENT, 502),  # Temporal answered, and refused
    ],
)
async def test_a_temporal_that_does_not_answer_is_a_503_and_one_that_refuses_a_502(
    serving, status, answered
):
    def temporal_says(app: FastAPI) -> None:
        @app.get("/temporal")
        async def temporal() -> None:
            raise RPCError("Timeout expired", status, b"")

    async with serving(extra=temporal_says) as http:
        answer = await http.get("/temporal")
    assert answer.status_code == answered
    assert answer.headers["content-type"] == "application/problem+json"
    assert ("retry-after" in answer.headers) == (answered == 503)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/orders", "GET, HEAD, POST"),  # GET /orders (staff) is another route
        ("DELETE", "/orders", "GET, HEAD, POST"),
        ("PUT", "/orders/X", "GET, HEAD"),  # HEAD answers wherever GET does
        ("GET", "/orders/X/cancel", "POST"),
        ("HEAD", "/orders/X/events", "GET"),  # but on an event stream, whose answer never ends
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/openapi.json", "GET, HEAD"),
    ],
)
async def test_a_405_allows_every_method_its_path_answers(serving, method, path, allow):
    async with serving() as http:
        answer = await http.request(method, path)
        assert answer.status_code == 405
        assert answer.headers["allow"] == allow
        assert answer.headers["content-type"] == "application/problem+json"
        for each in allow.split(", "):  # and each answers: never a 405 again
            assert (await http.request(each, path)).status_code != 405, each


# -- never plain text ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/app.js"])
async def test_a_range_the_file_cannot_serve_is_a_problem_and_a_good_one_is_served(serving, path):
    async with serving() as http:
        whole = await http.get(path)
        part = await http.get(path, headers={"Range": "bytes=0-9"})
        past = await http.get(path, headers={"Range": f"bytes={10 * len(whole.content)}-"})
        malformed = await http.get(path, headers={"Range": "pages=1-2"})
    assert part.status_code == 206 and part.content == whole.content[:10]
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(whole.content)}"
    assert malformed.status_code == 400
    for answer, slug in ((past, "range-not-satisfiable"), (malformed, "malformed-range")):
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == f"urn:pizzeria:problem:{slug}"
        assert problem["status"] == answer.status_code and problem["detail"].startswith("Range:")
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, name


async def test_a_request_http_cannot_read_gets_a_problem_then_the_connection_closes(tmp_path):
    settings = ApiSettings(
        Keys(GOOD_SECRET.encode(), STAFF_KEY),
        address=f"127.0.0.1:{free_port()}",  # lazy: never connected to here
        ledger_location=str(tmp_path / "ledger.db"),
    )
    sock = bind("127.0.0.1", 0)
    async with serve_in_loop(settings, sock):
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 30)  # all, until it closes
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
    assert headers["permissions-policy"].startswith("camera=()")  # as on every answer
    problem = json.loads(body)
    assert problem["type"] == "urn:pizzeria:problem:malformed-request"
    assert problem["status"] == 400 and "HTTP/1.1" in problem["detail"]


# -- free text ------------------------------------------------------------------------------


def order_body(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXERCISE_ORDER)
    body.pop("order_number", None)  # anonymous callers: the API chooses the number
    body.pop("settings", None)
    for path, value in changes.items():
        target: Any = body
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return body


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("customer__name", "customer.name"),
        ("customer__email", "customer.email"),
        ("address__line1", "address.line1"),
        ("credit_card_info__holderName", "credit_card_info.holderName"),
        ("items__0__description", "items[0].description"),
    ],
)
@pytest.mark.parametrize("hostile", ["Lisa \u202egnp.exe", "Lisa\x1b]0;pwned\x07", "a\u2028b"])
async def test_an_order_with_hostile_text_is_a_422_naming_the_field(serving, path, field, hostile):
    async with serving() as http:
        answer = await http.post("/orders", json=order_body(**{path: hostile}))
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert field in [error["field"] for error in problem["errors"]], problem
    assert problem["error_type"] == "InvalidOrderError"  # menu.py's verdict, as the workflow's
    assert "pwned" not in answer.text and "gnp" not in answer.text


async def test_a_hostile_repair_note_is_a_422_naming_the_note(serving):
    staff = {"Authorization": f"Bearer {STAFF_KEY}"}
    async with serving() as http:
        answer = await http.post(
            "/orders/X1/repair",
            json={"action": "resolve", "note": "done \x1b[2J\x1b]8;;http://evil.example\x07"},
            headers=staff,
        )
    assert answer.status_code == 422, answer.text
    assert [error["field"] for error in answer.json()["errors"]] == ["note"]


async def test_a_hostile_cancel_reason_is_a_422_and_the_order_goes_on(api: Api):
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        # Settings are staff's: a long preparation keeps the order cancellable.
        waiting = order_body(settings={"prep_seconds": 60})
        placed = await http.post("/orders", json=waiting, headers=api.staff)
        assert placed.status_code == 201, placed.text  # answered at the card hold
        number, token = placed.json()["order_number"], placed.json()["order_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        answer = await http.post(
            f"/orders/{number}/cancel", json={"reason": "\u202eevil\x1b[2J"}, headers=bearer
        )
        assert answer.status_code == 422, answer.text
        assert [error["field"] for error in answer.json()["errors"]] == ["reason"]
        order = (await http.get(f"/orders/{number}", headers=bearer)).json()
        assert order["status"] == "RUNNING" and order["cancellable"] is True
        done = await http.post(f"/orders/{number}/cancel", json={"reason": "ok"}, headers=bearer)
        assert done.status_code == 200, done.text
