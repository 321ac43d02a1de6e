"""The front door under attack: `pizzeria api` with small limits, probed as a client would.

Each limit is set small through its option, so a test reaches it with a handful of
connections: the caps on event streams (429 per token, 503 in all, with Retry-After), the
cap on connections (503 with Retry-After, then closed), the head and body deadlines (a
slow loris is closed; a body that does not come gets 408), a stream's lifetime (it ends,
the client resumes where it left), and a token's expiry. Every wait is bounded and waits
on what it checks, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import eventually
from tests.helpers.api_stack import PLACED, Api, api_process, customer_body, order_body
from tests.helpers.stack import Stack

pytestmark = pytest.mark.timeout(240)
PROBLEM = "application/problem+json"
STREAMS_IN_ALL, STREAMS_PER_TOKEN, CONNECTIONS = 6, 2, 40
OVERFLOW = 64  # guard.OVERFLOW: connections past the cap still answered 503


@pytest.fixture(scope="module")
def capped(stack: Stack) -> Iterator[Api]:
    """Few streams and connections; deadlines long enough never to be what a test meets."""
    with api_process(
        stack,
        *("--max-streams", str(STREAMS_IN_ALL), "--streams-per-token", str(STREAMS_PER_TOKEN)),
        *("--max-connections", str(CONNECTIONS), "--head-timeout", "120"),
        log="api-capped.log",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def hasty(stack: Stack) -> Iterator[Api]:
    """Short deadlines and a short stream lifetime."""
    with api_process(
        stack,
        *("--head-timeout", "1", "--body-timeout", "1", "--stream-lifetime", "2"),
        log="api-hasty.log",
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        yield http


async def long_order(http: httpx.AsyncClient, api: Api) -> tuple[str, str]:
    """An order that stays RUNNING (an hour of preparation; staff may set it)."""
    number = f"LIMITS-{uuid.uuid4().hex[:8]}"
    answer = await http.post(
        "/orders", json=order_body(number, prep_seconds=3600), headers=api.staff
    )
    assert answer.status_code in PLACED, answer.text
    return number, answer.json()["order_token"]


async def cancel_all(http: httpx.AsyncClient, api: Api, numbers: list[str]) -> None:
    for number in numbers:
        await http.post(f"/orders/{number}/cancel", headers=api.staff)


@contextlib.asynccontextmanager
async def stream(
    http: httpx.AsyncClient, number: str, token: str, after: int | None = None
) -> AsyncIterator[httpx.Response]:
    """An event stream held open and read for the block (a refusal read whole)."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    async with http.stream(
        "GET", f"/orders/{number}/events?token={token}", headers=headers
    ) as answer:
        if answer.status_code != 200:
            await answer.aread()
            yield answer
            return
        lines = answer.aiter_lines()  # kept: an iterator dropped half-read closes the stream
        await anext(lines)  # admitted: its "retry:" line came
        reader = asyncio.create_task(drain(lines))
        try:
            yield answer
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def drain(lines: AsyncIterator[str]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        async for _ in lines:
            pass


def refused(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert int(answer.headers["retry-after"]) > 0


def host_of(api: Api) -> bytes:
    """The Host header a browser sends to this API (it answers only its own names)."""
    return urlsplit(api.url).netloc.encode()


async def raw_connection(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = urlsplit(api.url)
    return await asyncio.open_connection(address.hostname, address.port)


async def until_closed(reader: asyncio.StreamReader, seconds: float = 30) -> bytes:
    """All the server sends until it closes the connection (bounded: else the test fails)."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except ConnectionResetError:
        return b""


# -- event streams ------------------------------------------------------------------------


async def test_streams_per_token_and_in_all_are_capped_then_429_and_503_with_retry_after(
    capped,
):
    async with client(capped) as http, contextlib.AsyncExitStack() as held:
        orders = [await long_order(http, capped) for _ in range(4)]
        (first, first_token), *others = orders
        leaving = contextlib.AsyncExitStack()
        mine = [
            await leaving.enter_async_context(stream(http, first, first_token)),
            await held.enter_async_context(stream(http, first, first_token)),
        ]
        assert [answer.status_code for answer in mine] == [200, 200]
        async with stream(http, first, first_token) as third:
            refused(third, 429)
        for number, token in others[:2]:
            for _ in range(STREAMS_PER_TOKEN):
                answer = await held.enter_async_context(stream(http, number, token))
                assert answer.status_code == 200
        last_number, last_token = others[2]
        async with stream(http, last_number, last_token) as full:
            refused(full, 503)
            assert full.json()["type"].endswith("streams-full")
        await leaving.aclose()  # one leaves: its place is free again

        async def admitted() -> bool:
            async with stream(http, last_number, last_token) as answer:
                return answer.status_code == 200

        await eventually(admitted, "a stream admitted once another left", 30, 0.2)
        await held.aclose()
        await cancel_all(http, capped, [number for number, _ in orders])


async def test_past_the_connection_cap_a_request_gets_503_and_far_past_it_is_closed(capped):
    held = [await raw_connection(capped) for _ in range(CONNECTIONS + OVERFLOW + 5)]
    try:
        _, last_writer = held[-1]
        assert await until_closed(held[-1][0]) == b""  # far past the cap: closed at once
        last_writer.close()
        reader, writer = held[CONNECTIONS + 1]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % host_of(capped))
        answer = await until_closed(reader)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"retry-after: " in head.lower() and PROBLEM.encode() in head
        assert b"x-content-type-options: nosniff" in head.lower()  # as every other answer
        assert b"permissions-policy: camera=()" in head.lower()
        assert b"connections-full" in body
    finally:
        for _, writer in held:
            writer.close()

    async def answers() -> bool:
        async with client(capped) as http:
            return (await http.get("/healthz")).status_code == 200

    await eventually(answers, "the API to answer once the connections closed", 30, 0.2)


async def test_one_client_address_past_its_share_gets_429_and_the_others_are_answered(stack):
    """One client cannot take the connections every other client needs (a slow loris from
    one address): past its share it gets 429, while another address is still answered."""
    request = b"GET /menu HTTP/1.1\r\nHost: %s\r\n\r\n"
    with api_process(stack, "--connections-per-client", "3", log="api-per-client.log") as api:
        held = [await raw_connection(api) for _ in range(3)]
        try:
            for reader, writer in held:  # answered, and kept open (keep-alive)
                writer.write(request % host_of(api))
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            reader, writer = await raw_connection(api)
            writer.write(request % host_of(api))
            answer = await until_closed(reader)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 429"), answer[:200]
            assert b"retry-after: " in head.lower() and b"too-many-connections" in body
            address = urlsplit(api.url)  # the same machine, from another of its addresses
            reader, writer = await asyncio.open_connection(
                address.hostname, address.port, local_addr=("127.0.0.2", 0)
            )
            writer.write(
                b"GET /menu HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host_of(api)
            )
            assert (await until_closed(reader)).startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            for _, writer in held:
                writer.close()


# -- slow clients -------------------------------------------------------------------------


async def test_a_connection_that_sends_half_its_head_or_nothing_is_closed(hasty):
    silent, silent_writer = await raw_connection(hasty)
    half, half_writer = await raw_connection(hasty)
    half_writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    dribble, dribble_writer = await raw_connection(hasty)
    try:
        started = time.monotonic()
        assert await until_closed(silent) == b""
        assert await until_closed(half) == b""
        # One byte every 0.2 s keeps a connection busy, not its request coming: closed too.
        # A byte that reaches the server after it closed is answered with a reset.
        reset = False
        for _ in range(300):
            if dribble.at_eof():
                break
            with contextlib.suppress(ConnectionError):
                dribble_writer.write(b"X")
                await dribble_writer.drain()
            try:
                await asyncio.wait_for(dribble.read(1), 0.2)
            except TimeoutError:
                pass
            except ConnectionResetError:
                reset = True
                break
        assert reset or dribble.at_eof() or dribble_writer.is_closing()
        assert time.monotonic() - started < 60
    finally:
        for writer in (silent_writer, half_writer, dribble_writer):
            writer.close()
    async with client(hasty) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes(hasty):
    reader, writer = await raw_connection(hasty)
    try:
        writer.write(
            b"POST /orders HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"cust' % host_of(hasty)  # 7 of 1,000 bytes
        )
        answer = await until_closed(reader)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert PROBLEM.encode() in head and b"connection: close" in head.lower()
    assert b"body-timeout" in body


async def test_a_body_of_two_lengths_or_too_long_is_refused_and_the_connection_closes(hasty):
    """Content-Length and Transfer-Encoding both (a proxy in front may read the other one:
    request smuggling) is a 400; a body declared too long is a 413 at once: either way the
    connection closes, and the rest of the body is never read."""
    two_lengths = (
        b"POST /orders HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /menu HTTP/1.1\r\nHost: %s\r\n\r\n" % (host_of(hasty), host_of(hasty))
    )
    too_long = (
        b"POST /orders HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n{" % host_of(hasty)
    )
    for request, status, slug in (
        (two_lengths, b"400", b"ambiguous-length"),
        (too_long, b"413", b"body-too-large"),
    ):
        reader, writer = await raw_connection(hasty)
        try:
            writer.write(request)
            answer = await until_closed(reader)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + status), answer[:300]
        assert b"connection: close" in head.lower() and slug in body, answer[:500]
        assert answer.count(b"HTTP/1.1 ") == 1, answer  # nothing after it was answered


async def test_duplicate_keys_in_the_json_are_refused(hasty):
    body = b'{"customer": {"name": "Lisa", "name": "Mallory"}}'
    async with client(hasty) as http:
        answer = await http.post(
            "/orders", content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == 'the body\'s JSON names the key "name" twice in one object'


async def test_clients_that_never_read_their_answers_are_cut_off_and_free_the_cap(stack):
    with api_process(
        stack,
        *("--max-connections", "3", "--head-timeout", "120", "--send-timeout", "2"),
        log="api-unread.log",
    ) as api:
        address = urlsplit(api.url)
        hogs = []
        for _ in range(3):  # the whole cap, each with a small receive buffer
            hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.connect((address.hostname, address.port))
            hogs.append(hog)
        try:
            async with client(api) as http:
                refused((await http.get("/healthz")), 503)
                # Each asks for a large answer again and again and never reads one: the
                # server's buffers fill and stay full. It must not hold them for ever.
                ask = b"GET /openapi.json HTTP/1.1\r\nHost: %s\r\n\r\n" % host_of(api)
                for hog in hogs:
                    hog.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        for _ in range(300):
                            hog.send(ask)

                async def answered() -> bool:
                    return (await http.get("/healthz")).status_code == 200

                await eventually(answered, "the cap freed", seconds=60, interval=0.5)
        finally:
            for hog in hogs:
                hog.close()


async def test_a_stream_ends_after_its_lifetime_and_the_client_resumes_where_it_left(hasty):
    async with client(hasty) as http:
        number, token = await long_order(http, hasty)

        async def ids_until_the_end(after: int | None) -> list[int]:
            headers = {"Last-Event-ID": str(after)} if after is not None else {}
            url = f"/orders/{number}/events?token={token}"
            async with http.stream("GET", url, headers=headers) as answer:
                assert answer.status_code == 200
                lines = [line async for line in answer.aiter_lines()]
            return [int(line[4:]) for line in lines if line.startswith("id: ")]

        async def first_steps() -> list[int]:
            return await ids_until_the_end(None)  # ends by itself, or the test times out

        seen = await eventually(first_steps, "a stream with events that ends", 60, 0.2)
        again = await asyncio.wait_for(ids_until_the_end(seen[-1]), 60)
        assert not set(again) & set(seen)  # resumed after the last event: none twice
        await cancel_all(http, hasty, [number])


# -- tokens -------------------------------------------------------------------------------


async def test_a_token_stops_opening_its_order_once_it_expires(stack):
    with api_process(stack, "--token-hours", "0.005", log="api-expiry.log") as api:  # 18 s
        async with client(api) as http:
            answer = await http.post("/orders", json=customer_body())
            assert answer.status_code in PLACED, answer.text
            accepted = answer.json()
            expires = datetime.fromisoformat(accepted["token_expires_at"]).timestamp()
            assert 0 < expires - time.time() <= 18
            number, token = accepted["order_number"], accepted["order_token"]
            url, auth = f"/orders/{number}", {"Authorization": f"Bearer {token}"}
            assert (await http.get(url, headers=auth)).status_code == 200

            async def expired() -> bool:
                return (await http.get(url, headers=auth)).status_code == 401

            await eventually(expired, "the token to expire", 90, 0.5)
            assert time.time() >= expires
            # Its holder is told it expired, and when; a token it never was is not.
            refused = (await http.get(url, headers=auth)).json()
            assert refused["type"] == "urn:pizzeria:problem:token-expired", refused
            assert accepted["token_expires_at"][:19] in refused["detail"].replace("Z", "")
            stream = await http.get(f"{url}/events", params={"token": token})
            assert stream.json()["type"] == "urn:pizzeria:problem:token-expired"
            forged = {"Authorization": f"Bearer {token[:-4]}AAAA"}
            other = (await http.get(url, headers=forged)).json()
            assert other["type"] == "urn:pizzeria:problem:unauthorized"
            assert "expired" not in other["detail"]
            assert (await http.get(url, headers=api.staff)).status_code == 200


async def test_a_client_past_its_orders_a_minute_gets_429_and_staff_and_others_do_not(stack):
    """`--orders-per-minute 2`: a third order from the same address within the minute is
    refused before anything is held, saying when to try again; staff are not paced."""
    with api_process(stack, "--orders-per-minute", "2", log="api-pace.log") as api:
        async with client(api) as http:
            for _ in range(2):
                placed = await http.post("/orders", json=customer_body())
                assert placed.status_code in PLACED, placed.text
            third = await http.post("/orders", json=customer_body())
            assert third.status_code == 429 and third.headers["content-type"] == PROBLEM
            assert third.json()["type"] == "urn:pizzeria:problem:too-many-orders"
            assert 1 <= int(third.headers["Retry-After"]) <= 60
            assert "at most 2 orders a minute from one client" in third.json()["detail"]
            staff = await http.post(
                "/orders", json=order_body(f"PACE-{uuid.uuid4().hex[:8]}"), headers=api.staff
            )
            assert staff.status_code in PLACED, staff.text
            assert (await http.get("/healthz")).status_code == 200


# -- retries ------------------------------------------------------------------------------


async def test_a_retry_after_the_api_restarted_gets_the_same_order_and_token(stack):
    """The answer was lost, the API restarted: the retry with the key still finds the
    first order (the key table is beside the ledger, not in the process)."""
    body, key = customer_body(), str(uuid.uuid4())
    with api_process(stack, log="api-before.log") as before:
        async with client(before) as http:
            first = await http.post("/orders", json=body, headers={"Idempotency-Key": key})
    assert first.status_code in PLACED, first.text
    with api_process(stack, log="api-after.log") as after:
        async with client(after) as http:
            again = await http.post("/orders", json=body, headers={"Idempotency-Key": key})
            assert again.status_code in PLACED, again.text
            assert again.json()["order_number"] == first.json()["order_number"]
            assert again.json()["order_token"] == first.json()["order_token"]
            other = {**body, "is_delivery": not body["is_delivery"]}
            changed = await http.post("/orders", json=other, headers={"Idempotency-Key": key})
            assert changed.status_code == 422
            number = first.json()["order_number"]

            async def listed_once() -> bool:  # visibility may lag a moment behind
                listed = await http.get("/orders", params={"limit": 1000}, headers=after.staff)
                numbers = [row["order_number"] for row in listed.json()["orders"]]
                assert numbers.count(number) <= 1
                return numbers.count(number) == 1

            await eventually(listed_once, "the order in the list, once", 30, 0.2)
