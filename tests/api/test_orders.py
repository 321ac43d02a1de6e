"""The order API as a client uses it: `pizzeria api` in front of a real dev server and a
`pizzeria worker` process, checked against what the ledger holds.

It starts its own dev server (the `stack` fixture), so it runs once, in the default pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from pizzeria import menu
from pizzeria.api.auth import Keys
from pizzeria.api.idempotency import KeyTable, KeyUse, beside
from pizzeria.api.orders import order_errors
from pizzeria.api.problems import ApiProblem
from pizzeria.client.acting import (
    OrderDidNotAnswer,
    OrderRefused,
    OrderWaitsForOperator,
    stuck_advice,
)
from pizzeria.models import STEPS
from pizzeria.ops.processes import free_port
from pizzeria.samples import BAD_CARD, GOOD_CARD
from tests.helpers import eventually, run_pizzeria
from tests.helpers.api_stack import PLACED, STAFF_KEY, Api, api_process, customer_body, order_body
from tests.helpers.stack import Stack

pytestmark = pytest.mark.timeout(180)
PROBLEM = "application/problem+json"
# What the API gives anyone who does not choose: 80 random bits in base32.
CHOSEN_NUMBER = re.compile(r"WEB-[A-Z2-7]{16}")
AT_ONCE = {"Prefer": "respond-async"}  # 202 once the order started, not 201 once held


@pytest.fixture
async def http(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        yield client


def number(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def place(
    http: httpx.AsyncClient,
    body: dict[str, Any],
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {**(headers or {}), **({"Idempotency-Key": key} if key else {})}
    return await http.post("/orders", json=body, headers=sent)


async def customer_order(http: httpx.AsyncClient, card: str = GOOD_CARD) -> tuple[str, str]:
    """An order placed as anyone places it: (the number the API chose, its token). It
    asks for the answer at once (202), so a declined card is followed like any order
    rather than refused in the answer."""
    answer = await place(http, customer_body(card), headers=AT_ONCE)
    assert answer.status_code == 202, answer.text
    return answer.json()["order_number"], answer.json()["order_token"]


async def staff_order(http: httpx.AsyncClient, api: Api, body: dict[str, Any]) -> str:
    """An order staff place with their own number and settings: its token."""
    answer = await place(http, body, headers={**api.staff, **AT_ONCE})
    assert answer.status_code == 202, answer.text
    token: str = answer.json()["order_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def closed(http: httpx.AsyncClient, order_number: str, token: str) -> dict[str, Any]:
    async def view() -> dict[str, Any] | None:
        answer = await http.get(f"/orders/{order_number}", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found if found["status"] != "RUNNING" else None

    result: dict[str, Any] = await eventually(view, f"order {order_number} to close", 60, 0.2)
    return result


def ledger_rows(api: Api, order_number: str) -> list[dict[str, Any]]:
    ledger = api.ledger()
    try:
        return [row for row in ledger.effects() if row["order_number"] == order_number]
    finally:
        ledger.close()


async def events_of(
    http: httpx.AsyncClient, order_number: str, token: str, after: int | None = None
) -> tuple[int, list[tuple[int, str, dict[str, Any]]]]:
    """(status, [(id, event, data)...]) of one connection, read until the server ends it."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    url = f"/orders/{order_number}/events?token={token}"
    async with http.stream("GET", url, headers=headers) as answer:
        if answer.status_code != 200:
            return answer.status_code, []
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in answer.aiter_text()])
    return 200, parse_events(text)


def parse_events(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "data" in fields:
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return events


# -- the exercise's two orders ------------------------------------------------------------


async def test_the_good_order_completes_with_its_amount_and_a_masked_card(http, api):
    answer = await place(http, customer_body())
    assert answer.status_code in PLACED, answer.text
    accepted = answer.json()
    order_number = accepted["order_number"]
    assert CHOSEN_NUMBER.fullmatch(order_number), order_number
    assert answer.headers["location"] == f"/orders/{order_number}"
    assert len(accepted["order_token"]) >= 40
    expires = datetime.fromisoformat(accepted["token_expires_at"]).timestamp()
    assert 23.9 * 3600 < expires - time.time() <= 24 * 3600  # the default lifetime
    view = await closed(http, order_number, accepted["order_token"])
    assert view["status"] == "COMPLETED"
    assert view["amount"] == 3500 and view["card"] == "**** 4242"
    # Every step ran; the refund of an order no driver took is listed only when it comes.
    assert [(s["name"], s["state"]) for s in view["steps"]] == [
        (s, "completed") for s in STEPS if s != "refund_undelivered_order"
    ]
    assert view["compensations"] == [] and not view["cancellable"]
    assert view["outcome"]["delivery"] == "SUCCESS" and view["outcome"]["confirmation_number"]
    assert view["ledger"] == {
        "charged": 3500,
        "refunded": 0,
        "billed": 3500,
        "money": "captured",  # the hold, captured at the bill
        "statement": "hold $35.00, captured $35.00",
        "refunded_after_bill": 0,
        "refunded_by_staff": 0,
    }
    charges = [r for r in ledger_rows(api, order_number) if r["step"] == "process_credit_card"]
    assert [r["amount"] for r in charges] == [3500]
    assert GOOD_CARD not in answer.text + json.dumps(view)


async def test_a_pickup_needs_no_address_and_a_delivery_is_told_each_part_it_lacks(http, api):
    body = {**customer_body(), "is_delivery": False}
    del body["address"]
    answer = await place(http, body)
    assert answer.status_code == 201, answer.text
    accepted = answer.json()
    assert accepted["hold"]["state"] == "held" and accepted["hold"]["amount"] == 3500
    view = await closed(http, accepted["order_number"], accepted["order_token"])
    assert view["status"] == "COMPLETED" and view["ledger"]["money"] == "captured"
    assert view["outcome"]["delivery"] == "SUCCESS"
    addresses: tuple[dict[str, str] | None, ...] = (None, {})
    for address in addresses:
        sent = {**customer_body(), "address": address}
        answer = await place(http, sent)
        assert answer.status_code == 422, answer.text
        assert [error["field"] for error in answer.json()["errors"]] == [
            "address.line1",
            "address.city",
            "address.state",
            "address.postal_code",
        ], address


async def test_an_order_paid_with_a_token_shows_the_last_four_its_hold_recorded(http, api):
    """The order page sends the provider's token, never the number: the order's view
    shows the card's last four digits all the same, as the hold recorded them."""
    config = (await http.get("/payments/config")).json()
    async with httpx.AsyncClient() as browser:
        method = await browser.post(
            f"{config['provider_url']}/v1/payment_methods",
            data={"type": "card", "card[number]": GOOD_CARD},
            headers={"Authorization": f"Bearer {config['publishable_key']}"},
        )
    assert method.status_code == 200, method.text
    body = customer_body()
    body["credit_card_info"] = {
        "holderName": "Lisa Anderson",
        "payment_method": method.json()["id"],
    }
    answer = await place(http, body)
    assert answer.status_code in PLACED, answer.text
    accepted = answer.json()
    view = await closed(http, accepted["order_number"], accepted["order_token"])
    assert view["status"] == "COMPLETED" and view["card"] == "**** 4242"
    # A token pays for one order, as at Stripe: a second order with it holds nothing.
    second = await place(http, body)
    assert second.status_code >= 400 and second.headers["content-type"] == PROBLEM, second.text
    refused_number, refused_token = second.json()["order_number"], second.json()["order_token"]
    refused_view = await closed(http, refused_number, refused_token)
    assert refused_view["status"] == "FAILED" and refused_view["ledger"]["charged"] == 0


async def test_the_bad_card_fails_then_refunds_and_puts_the_stock_back_in_that_order(http, api):
    order_number, token = await customer_order(http, card=BAD_CARD)
    view = await closed(http, order_number, token)
    assert view["status"] == "FAILED"
    assert view["outcome"]["error_type"] == "CreditCardProcessingError"
    assert [(c["name"], c["state"]) for c in view["compensations"]] == [
        ("refund_customer", "completed"),
        ("revert_inventory", "completed"),
    ]
    states = {s["name"]: s["state"] for s in view["steps"]}
    assert states["process_credit_card"] == "failed" and states["send_bill"] == "not run"
    # The bad number never became a hold: no money moved.
    assert view["ledger"] == {
        "charged": 0,
        "refunded": 0,
        "billed": 0,
        "money": "",
        "statement": "nothing held",
        "refunded_after_bill": 0,
        "refunded_by_staff": 0,
    }
    rows = {r["step"]: r for r in ledger_rows(api, order_number)}
    assert rows["revert_inventory"]["ingredients"] == rows["update_inventory"]["ingredients"]
    assert not rows["revert_inventory"]["tombstone"]
    assert BAD_CARD not in json.dumps(view)


# -- idempotency --------------------------------------------------------------------------


async def test_ten_posts_at_once_with_one_key_make_one_order_and_one_charge(http, api):
    body, key = customer_body(), str(uuid.uuid4())
    answers = await asyncio.gather(*(place(http, body, key) for _ in range(10)))
    assert all(a.status_code in PLACED for a in answers), [a.text for a in answers]
    # The API chose the number once: every answer has it, and the same token.
    assert len({a.json()["order_number"] for a in answers}) == 1
    assert len({a.json()["order_token"] for a in answers}) == 1
    order_number = answers[0].json()["order_number"]
    view = await closed(http, order_number, answers[0].json()["order_token"])
    assert view["status"] == "COMPLETED"
    rows = ledger_rows(api, order_number)
    assert [r["amount"] for r in rows if r["step"] == "process_credit_card"] == [3500]
    assert len({r["order_ref"] for r in rows}) == 1  # one run took every effect
    again = await place(http, body, key)  # a retry long after: the same answer
    assert again.status_code in PLACED
    assert again.json()["order_token"] == answers[0].json()["order_token"]
    listed = await http.get("/orders", params={"limit": 1000}, headers=api.staff)
    assert [r["order_number"] for r in listed.json()["orders"]].count(order_number) == 1


async def test_one_key_with_another_body_is_refused_and_changes_nothing(http, api):
    body, key = customer_body(), str(uuid.uuid4())
    first = await place(http, body, key)
    assert first.status_code in PLACED
    order_number = first.json()["order_number"]
    changed = customer_body()
    changed["items"] = [{"description": "Large, with ham", "price": 1500}]
    refused = await place(http, changed, key)
    assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM
    assert refused.json()["errors"][0]["field"] == "Idempotency-Key"
    # A key is the caller's: staff sending a customer's key and body get no order, no token.
    as_staff = await place(http, body, key, api.staff)
    assert as_staff.status_code == 422 and "order_token" not in as_staff.json()
    assert "another kind of caller" in as_staff.json()["detail"]
    # The key table keeps a keyed hash of the body (card number in it): nothing to try
    # card numbers against by hashing bodies.
    with contextlib.closing(sqlite3.connect(beside(api.ledger_location))) as db:
        stored = {row[0] for row in db.execute("SELECT body_sha256 FROM api_idempotency_keys")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert stored and hashlib.sha256(canonical.encode()).hexdigest() not in stored
    # Staff choose numbers: a key is bound to its number too, and a number is one order.
    staff_key, staff_number = str(uuid.uuid4()), number("API-KEY")
    staff_first = await place(http, order_body(staff_number), staff_key, api.staff)
    assert staff_first.status_code in PLACED
    other_number = await place(http, order_body(number("API-KEY")), staff_key, api.staff)
    assert other_number.status_code == 422
    assert other_number.json()["errors"][0]["field"] == "Idempotency-Key"
    taken = await place(http, order_body(staff_number), str(uuid.uuid4()), api.staff)
    assert taken.status_code == 409 and "already taken" in taken.json()["detail"]
    assert (await place(http, order_body(staff_number), headers=api.staff)).status_code == 409
    view = await closed(http, order_number, first.json()["order_token"])
    assert view["status"] == "COMPLETED" and view["amount"] == 3500
    takes = [r for r in ledger_rows(api, order_number) if r["step"] == "update_inventory"]
    assert len(takes) == 1 and "ham" not in takes[0]["ingredients"]


@pytest.mark.parametrize("prefer", [{}, AT_ONCE], ids=["answered", "at-once"])
async def test_a_row_planted_in_the_key_table_gets_no_token_for_another_order(
    http, api, prefer: dict[str, str]
):
    # Whoever can write the key table (a PostgreSQL ledger's database is every worker's)
    # names a victim's order under a key of their own: the API must not mint its token.
    victim, victim_token = await customer_order(http)
    victim_run = victim_token.split(".")[1]
    body, key = customer_body(), f"planted-{uuid.uuid4()}"
    table = KeyTable(api.ledger_location)
    try:
        forever = int(time.time()) + 10 * 365 * 86_400
        secret = (api.data / "api.secret").read_text().strip().encode()  # the API's own
        fingerprint = Keys(secret, None).body_fingerprint(body, staff=False)
        table.claim(key, KeyUse(fingerprint, victim, forever), time.time())
        table.record_run(key, victim_run)
    finally:
        table.close()
    answer = await place(http, body, key, prefer)
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert "order_token" not in answer.json() and victim not in answer.text


# -- who may see what ---------------------------------------------------------------------


async def test_an_order_opens_to_its_token_or_the_staff_key_and_to_nothing_else(http, api):
    mine, my_token = await customer_order(http)
    theirs, their_token = await customer_order(http)
    await closed(http, mine, my_token)
    anonymous = await http.get(f"/orders/{mine}")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.headers["content-type"] == PROBLEM
    # A wrong token gets the answer an order that does not exist gets: it learns nothing.
    ghost = (await http.get(f"/orders/{mine}-GHOST", headers=bearer(their_token))).json()
    tampered = my_token[:-1] + ("B" if my_token[-1] != "B" else "C")
    for wrong in (their_token, "not-a-token", tampered):
        answer = await http.get(f"/orders/{mine}", headers=bearer(wrong))
        assert answer.status_code == 401
        assert {**answer.json(), "instance": None} == {**ghost, "instance": None}
    assert (await http.get(f"/orders/{mine}", headers=bearer(my_token))).status_code == 200
    assert (await http.get(f"/orders/{mine}", headers=api.staff)).status_code == 200
    cancel = await http.post(f"/orders/{theirs}/cancel", headers=bearer(my_token))
    assert cancel.status_code == 401
    assert (await events_of(http, theirs, my_token))[0] == 401
    assert (await http.get(f"/orders/NO-SUCH-{mine}", headers=api.staff)).status_code == 404
    # Staff routes: nothing sent, or another order's token, is 401; the order's own token
    # is known, but only staff repair (403), as only staff refund.
    for credential, status in (({}, 401), (bearer(their_token), 401), (bearer(my_token), 403)):
        assert (await http.get("/orders", headers=credential)).status_code == 401
        repair = await http.post(
            f"/orders/{mine}/repair", json={"action": "retry"}, headers=credential
        )
        assert repair.status_code == status, repair.text
        assert repair.headers["content-type"] == PROBLEM
    # A route with a trailing slash is not redirected (to an absolute http:// URL).
    slashed = await http.get(f"/orders/{mine}/", headers=api.staff)
    assert slashed.status_code == 404 and "location" not in slashed.headers
    assert slashed.headers["content-type"] == PROBLEM
    # The OpenAPI document lists that 403 where it is answered (clients generated from it).
    paths = (await http.get("/openapi.json")).json()["paths"]
    for route in ("/orders/{order_number}/repair", "/orders/{order_number}/refunds"):
        assert "403" in paths[route]["post"]["responses"], route
    assert "403" not in paths["/orders/{order_number}/cancel"]["post"]["responses"]
    listed = await http.get("/orders", params={"status": "COMPLETED"}, headers=api.staff)
    assert mine in [row["order_number"] for row in listed.json()["orders"]]
    assert STAFF_KEY not in listed.text
    lower = await http.get("/orders", params={"status": "completed"}, headers=api.staff)
    assert lower.status_code == 200 and lower.json() == listed.json()  # as the CLI takes it


async def test_anyone_gets_a_number_chosen_by_the_api_and_only_staff_choose_or_set_more(http, api):
    wanted = number("XD")  # a number a stranger would like to claim first
    claimed = await place(http, {**customer_body(), "order_number": wanted})
    assert claimed.status_code == 422 and claimed.headers["content-type"] == PROBLEM
    assert claimed.json()["errors"][0]["field"] == "order_number"
    assert (await http.get(f"/orders/{wanted}", headers=api.staff)).status_code == 404
    tuned = await place(http, {**customer_body(), "settings": {"step_attempts": 1000}})
    assert tuned.status_code == 403 and tuned.json()["errors"][0]["field"] == "settings"
    # Two orders: two numbers nobody could have guessed, none of them the one asked for.
    first, second = await customer_order(http), await customer_order(http)
    assert first[0] != second[0] and all(CHOSEN_NUMBER.fullmatch(n) for n, _ in (first, second))
    # Staff choose: their number and their settings are taken as given.
    token = await staff_order(http, api, order_body(wanted, prep_seconds=0, step_attempts=2))
    assert (await closed(http, wanted, token))["status"] == "COMPLETED"
    # An earlier order's token (a client sends its last token with every request) gives
    # no staff power: its number is refused as anyone's is, and a customer's body places.
    forged = await place(http, order_body(number("XD")), headers=bearer(first[1]))
    assert forged.status_code == 422 and forged.json()["errors"][0]["field"] == "order_number"
    again = await place(http, customer_body(), headers=bearer(first[1]))
    assert again.status_code in (201, 202), again.text
    assert CHOSEN_NUMBER.fullmatch(again.json()["order_number"])
    assert again.json()["order_number"] not in (first[0], second[0])
    # Any other credential is not taken for anyone's: a wrong staff key is said to be one.
    wrong = await place(http, customer_body(), headers=bearer(STAFF_KEY + "x"))
    assert wrong.status_code == 401 and wrong.headers["content-type"] == PROBLEM
    assert "not the staff key" in wrong.json()["detail"]


async def test_a_token_opens_the_run_it_was_issued_for_not_a_later_run_of_the_number(http, api):
    order_number = number("API-AGAIN")
    token = await staff_order(http, api, order_body(order_number))
    first = await closed(http, order_number, token)
    assert first["status"] == "COMPLETED"
    # The operator places the same number again (the CLI's --again): a new run.
    again = run_pizzeria(
        "order", "--order-number", order_number, "--prep-seconds", "0", "--again", env=api.env
    )
    assert again.returncode == 0, again.stdout + again.stderr
    latest = (await http.get(f"/orders/{order_number}", headers=api.staff)).json()
    assert latest["outcome"]["confirmation_number"] != first["outcome"]["confirmation_number"]
    # The first run's token opens nothing of the new run, in any route.
    assert (await http.get(f"/orders/{order_number}", headers=bearer(token))).status_code == 401
    assert (await events_of(http, order_number, token))[0] == 401
    cancel = await http.post(f"/orders/{order_number}/cancel", headers=bearer(token))
    assert cancel.status_code == 401


async def test_a_token_in_the_address_opens_only_the_event_stream_and_never_as_staff(http, api):
    order_number, token = await customer_order(http)
    await closed(http, order_number, token)
    for url in (
        f"/orders/{order_number}?token={token}",
        f"/orders/{order_number}?%74oken={token}",  # the name percent-encoded
        f"/orders?token={STAFF_KEY}",
        f"/orders/{order_number}?token={STAFF_KEY}",
        f"/orders/{order_number}/events?token={STAFF_KEY}",
    ):
        answer = await http.get(url)
        assert answer.status_code == 401, (url, answer.text)
    cancel = await http.post(f"/orders/{order_number}/cancel?token={token}")
    assert cancel.status_code == 401
    status, events = await events_of(http, order_number, token)  # ?token= on the stream
    assert status == 200 and events[-1][1] == "outcome"
    staff_stream = await http.get(f"/orders/{order_number}/events", headers=api.staff)
    assert staff_stream.status_code == 200


async def test_the_access_log_holds_no_query_string_nor_a_forwarded_address(http, api):
    order_number, token = await customer_order(http)
    for url in (f"/orders/{order_number}/events?%74oken={token}", f"/menu?token={token}"):
        await http.get(url)
    # Nor an address a local process says it forwards for: the log shows the peer's.
    forwarded = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
    await http.get("/forwarded-for-someone", headers=forwarded)
    log = api.data / "api.log"

    def logged() -> bool:
        text = log.read_text(errors="replace")
        return all(
            seen in text
            for seen in (f"/orders/{order_number}/events", "GET /menu ", "/forwarded-for-someone")
        )

    await eventually(logged, "the requests in the access log", 30, 0.2)
    text = log.read_text(errors="replace")
    assert token not in text and "oken=" not in text
    assert "6.6.6.6" not in text
    assert not [line for line in text.splitlines() if '"GET /' in line and "?" in line]


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_before_the_pivot_undoes_the_order(http, api):
    run_pizzeria(
        "faults", "set", "process_credit_card=fail", env=api.env
    )  # the card gateway hangs on
    try:
        order_number, token = await customer_order(http)

        async def charging():
            view = (await http.get(f"/orders/{order_number}", headers=bearer(token))).json()
            return {s["name"]: s["state"] for s in view["steps"]}[
                "process_credit_card"
            ] == "running"

        await eventually(charging, "the card step to run", 30, 0.2)
        answer = await http.post(
            f"/orders/{order_number}/cancel",
            json={"reason": "changed my mind"},
            headers=bearer(token),
        )
    finally:
        run_pizzeria("faults", "clear", env=api.env)
    assert answer.status_code == 200, answer.text
    assert answer.json()["reason"] == "changed my mind"
    assert answer.json()["compensations"] == ["refund_customer", "revert_inventory"]
    view = await closed(http, order_number, token)
    assert view["status"] == "CANCELLED" and view["ledger"]["charged"] == 0
    assert view["ledger"]["statement"] == "nothing held"
    rows = {r["step"]: r for r in ledger_rows(api, order_number)}
    assert rows["revert_inventory"]["ingredients"] == rows["update_inventory"]["ingredients"]
    again = await http.post(f"/orders/{order_number}/cancel", headers=bearer(token))
    assert again.status_code == 409 and "closed" in again.json()["detail"]


async def test_cancel_after_the_pivot_is_refused_with_the_reason(http, api):
    run_pizzeria(
        "faults", "set", "notify_delivery_driver=fail", env=api.env
    )  # no driver answers yet
    try:
        order_number, token = await customer_order(http)

        async def billed():
            view = (await http.get(f"/orders/{order_number}", headers=bearer(token))).json()
            return {s["name"]: s["state"] for s in view["steps"]}["send_bill"] == "completed"

        await eventually(billed, "the bill", 30, 0.2)
        wrong = await http.post(
            f"/orders/{order_number}/cancel", json={"reason": 5}, headers=bearer(token)
        )
        answer = await http.post(f"/orders/{order_number}/cancel", headers=bearer(token))
    finally:
        run_pizzeria("faults", "clear", env=api.env)
    assert wrong.status_code == 422 and wrong.json()["type"].endswith(":invalid-body")
    assert wrong.json()["errors"][0]["field"] == "reason"
    assert answer.status_code == 409 and answer.headers["content-type"] == PROBLEM
    assert "already billed" in answer.json()["detail"]
    view = await closed(http, order_number, token)
    assert view["status"] == "COMPLETED" and view["ledger"]["billed"] == 3500
    assert view["ledger"]["statement"] == "hold $35.00, captured $35.00"  # in the card's words


# -- the events stream --------------------------------------------------------------------


async def test_the_events_of_a_failed_order_list_the_compensations_in_order_then_end(http):
    order_number, token = await customer_order(http, card=BAD_CARD)
    status, events = await events_of(http, order_number, token)  # follows it live
    assert status == 200
    ids = [event_id for event_id, _, _ in events]
    assert ids == sorted(set(ids))
    changes = [(kind, data.get("name"), data.get("state")) for _, kind, data in events]
    assert changes[-1] == ("outcome", None, None) and events[-1][2]["status"] == "FAILED"
    assert changes[-5:-1] == [
        ("compensation", "refund_customer", "running"),
        ("compensation", "refund_customer", "completed"),
        ("compensation", "revert_inventory", "running"),
        ("compensation", "revert_inventory", "completed"),
    ]
    assert ("step", "process_credit_card", "failed") in changes
    assert events[-1][2]["error_type"] == "CreditCardProcessingError"


async def test_an_order_on_the_fast_path_shows_its_local_steps_and_compensations(http, api):
    order_number = number("API-FAST")
    body = order_body(order_number, card=BAD_CARD, fast_path=True)  # settings: staff's
    token = await staff_order(http, api, body)
    _, events = await events_of(http, order_number, token)
    changes = [(kind, data.get("name"), data.get("state")) for _, kind, data in events]
    assert ("step", "process_credit_card", "failed") in changes
    assert changes[-3:-1] == [
        ("compensation", "refund_customer", "completed"),
        ("compensation", "revert_inventory", "completed"),
    ]
    view = await closed(http, order_number, token)
    assert [c["name"] for c in view["compensations"]] == ["refund_customer", "revert_inventory"]


async def test_a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing(http):
    order_number, token = await customer_order(http, card=BAD_CARD)  # 3 s of preparation
    url = f"/orders/{order_number}/events?token={token}"
    seen: list[tuple[int, str, dict[str, Any]]] = []
    async with http.stream("GET", url) as answer:  # live: leave after the first step
        buffer = ""
        async for chunk in answer.aiter_text():
            buffer += chunk
            seen = parse_events(buffer)
            if seen:
                break
    assert seen and seen[-1][1] == "step"
    status, rest = await events_of(http, order_number, token, after=seen[-1][0])
    assert status == 200 and rest[-1][1] == "outcome"
    _, whole = await events_of(http, order_number, token)
    assert seen + rest == whole
    middle = whole[len(whole) // 2][0]
    assert (await events_of(http, order_number, token, after=middle))[1] == [
        event for event in whole if event[0] > middle
    ]
    assert (await events_of(http, order_number, token, after=whole[-1][0]))[0] == 204
    too_far = await http.get(
        f"/orders/{order_number}/events?token={token}", headers={"Last-Event-ID": "9" * 26}
    )
    assert too_far.status_code == 422  # said with the rule: it is all digits, just too many
    assert too_far.json()["errors"][0]["reason"] == "must be the number of an event: 1 to 18 digits"


# -- bad input ----------------------------------------------------------------------------


def mutated(order_number: str, path: str, value: Any) -> dict[str, Any]:
    body = order_body(order_number)
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    return body


async def test_bad_orders_are_refused_with_the_field_and_the_reason_before_anything_starts(
    http, api
):
    cases = [
        ("items.0.price", 12.5, "items[0].price", None),
        ("items.0.price", True, "items[0].price", None),
        (
            "items.1.description",
            "Small, with anchovies",
            "items[1].description",
            "UnknownToppingError",
        ),
        ("items.0.price", -5, "items[0].price", "InvalidChargeAmountError"),
        ("customer.customer_id", 10**30, "customer.customer_id", "InvalidOrderError"),
        ("customer.name", "Lisa\ud800", "customer.name", "InvalidOrderError"),
        ("customer.name", "Lisa\nAnderson", "customer.name", "InvalidOrderError"),
        (
            "credit_card_info.number",
            "4242 4242 4242 4242",
            "credit_card_info.number",
            "InvalidOrderError",
        ),
        ("items", [], "items", "InvalidOrderError"),
        ("address", None, "address.line1", "InvalidOrderError"),  # a delivery needs one
        ("address", [], "address", None),
        ("address.postal_code", " ", "address.postal_code", "InvalidOrderError"),  # a delivery
        ("settings", {"prep_seconds": 1e300}, "settings.prep_seconds", "InvalidOrderError"),
        ("settings", {"prep_second": 1}, "settings.prep_second", None),  # misspelt: refused
    ]
    for path, value, field, error_type in cases:
        order_number = number("API-INVALID")
        body = json.dumps(mutated(order_number, path, value), allow_nan=True).encode()
        answer = await http.post(  # as staff, who choose the number (to look it up after)
            "/orders", content=body, headers={"Content-Type": "application/json", **api.staff}
        )
        problem = answer.json()
        assert answer.status_code == 422, (path, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert problem["errors"][0]["field"] == field, (path, problem)
        assert problem.get("error_type") == error_type, (path, problem)
        assert (await http.get(f"/orders/{order_number}", headers=api.staff)).status_code == 404
    assert GOOD_CARD not in answer.text
    # Staff's own numbers start with a letter or a digit: "/orders/.." is no address a
    # client keeps (it resolves it to "/"), and "-rf" is an option to `pizzeria status`.
    for given in (".", "..", "-rf", "_x"):
        answer = await place(http, order_body(given), headers=api.staff)
        assert answer.status_code == 422, (given, answer.text)
        assert answer.json()["errors"] == [
            {"field": "order_number", "reason": "order_number must start with a letter or a digit"}
        ], given
    # A customer's name of nothing visible (a Hangul filler, private use) or holding a
    # noncharacter is refused with the field named, nothing placed.
    for name, reason in (
        ("\u3164", "holds nothing visible"),
        ("\ue000\ue001", "holds nothing visible"),
        ("Ada\uffff", "holds a noncharacter"),
    ):
        sent = customer_body()
        sent["customer"]["name"] = name
        answer = await place(http, sent)
        assert answer.status_code == 422, (name, answer.text)
        (error,) = answer.json()["errors"]
        assert error["field"] == "customer.name", error
        assert reason in error["reason"], error
    # Every refused field at once, so a form can flag them all; the first is said.
    sent = customer_body()
    sent["customer"]["name"] = ""
    sent["credit_card_info"]["number"] = "4242"
    sent["address"]["postal_code"] = ""
    answer = await place(http, sent)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert [error["field"] for error in problem["errors"]] == [
        "customer.name",
        "credit_card_info.number",
        "address.postal_code",
    ]
    assert problem["detail"] == "customer.name must be a non-empty string (and 2 more)"
    assert problem["error_type"] == "InvalidOrderError"


async def test_broken_huge_and_wrong_bodies_get_a_4xx_never_a_500(http):
    json_type = {"Content-Type": "application/json"}
    good = json.dumps(customer_body())
    cases = [
        (b'{"order_number": "X", ', json_type, 400),  # broken JSON
        (b"[" * 50_000 + b"]" * 50_000, json_type, 413),  # over the size limit
        (b"[" * 30_000 + b"]" * 30_000, json_type, 400),  # nested past what the parser takes
        (b'{"customer": {"customer_id": 1' + b"0" * 5000 + b"}}", json_type, 400),  # 5000 digits
        (b'{"order_number": "\xff\xfe"}', json_type, 400),  # not UTF-8
        (good.encode(), {"Content-Type": "text/plain"}, 415),
        (good.encode(), {"Content-Type": "application/merge-patch+json"}, 415),
        (good.encode(), {}, 415),
        (good.encode("latin-1"), {"Content-Type": "application/json; charset=latin-1"}, 415),
        (good.encode("utf-16"), json_type, 400),  # JSON is UTF-8: nothing else is guessed
        (good.replace("8675309", "NaN").encode(), json_type, 400),  # not JSON, though Python's
        (good.replace("8675309", "Infinity").encode(), json_type, 400),
        (b"", json_type, 400),
        (b"null", json_type, 422),
        (b'"an order"', json_type, 422),
        (b"[1, 2]", json_type, 422),
    ]
    for content, headers, expected in cases:
        answer = await http.post("/orders", content=content, headers=headers)
        assert answer.status_code == expected, (content[:40], answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["status"] == expected
    # What was wrong, in words: valid JSON past the parser's limits is not called broken.
    for content, says in (
        (b"[" * 30_000 + b"]" * 30_000, "the body's JSON is nested too deep to read"),
        (b'{"customer": {"customer_id": 1' + b"0" * 5000 + b"}}", "a number too long to read"),
        (b'{"order_number": "X", ', "the body is not valid JSON at byte 22"),
    ):
        answer = await http.post("/orders", content=content, headers=json_type)
        assert says in answer.json()["detail"], answer.text
    latin = {**json_type, "Idempotency-Key": "é".encode("latin-1")}
    key = await http.post("/orders", content=good, headers=latin)
    assert key.status_code == 422 and key.json()["errors"][0]["field"] == "Idempotency-Key"
    # Said in words, not as the pattern checked.
    assert (
        key.json()["errors"][0]["reason"] == "must be 1 to 255 visible ASCII characters, no space"
    )
    twice = [("Content-Type", "application/json"), ("Idempotency-Key", "kA")]
    twice.append(("Idempotency-Key", "kB"))  # which one was meant? neither is used
    doubled = await http.post("/orders", content=good, headers=twice)
    assert doubled.status_code == 422, doubled.text
    assert doubled.json()["errors"][0] == {
        "field": "Idempotency-Key",
        "reason": "send it once: it came several times",
    }
    empty = await http.post("/orders", content=good, headers={**json_type, "Idempotency-Key": ""})
    assert empty.status_code == 422, empty.text  # it keyed nothing: every retry a new order
    assert empty.json()["errors"][0]["field"] == "Idempotency-Key"
    path = await http.get("/orders/bad%20number")
    assert path.status_code == 422
    assert "must be 1 to 64 letters, digits, '.', '_' or '-'" in path.json()["detail"]
    assert (await http.delete("/orders")).status_code == 405


# -- the rest of the service --------------------------------------------------------------


async def test_menu_health_readiness_openapi_and_the_page(http):
    sizes = (await http.get("/menu")).json()["sizes"]
    assert {s["size"]: s["price"] for s in sizes} == menu.PRICE_BY_SIZE
    assert {s["size"]: s["portions"] for s in sizes} == menu.PORTIONS_BY_SIZE
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["temporal"] == "ok"
    document = (await http.get("/openapi.json")).json()
    assert set(document["paths"]) >= {
        "/orders",
        "/orders/{order_number}",
        "/orders/{order_number}/events",
        "/orders/{order_number}/cancel",
        "/orders/{order_number}/repair",
        "/menu",
        "/healthz",
        "/readyz",
    }
    order_body_schema = document["components"]["schemas"]["OrderBody"]
    assert "order_number" not in order_body_schema["required"]
    assert "Staff only" in order_body_schema["properties"]["order_number"]["description"]
    assert {} in document["paths"]["/orders"]["post"]["security"]  # anyone may place
    page = await http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = (await http.get(asset)).text
        assert "http://" not in text and "https://" not in text  # nothing from elsewhere
    # HEAD (a probe's `curl -I`) is answered as GET is, without the body.
    for path in ("/", "/healthz", "/readyz", "/menu", "/openapi.json", "/static/app.js"):
        got, head = await http.get(path), await http.head(path)
        assert head.status_code == got.status_code == 200, (path, head.text)
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"], path
    assert (await http.head("/orders/X1/events")).status_code == 405  # its answer never ends


def test_without_temporal_the_api_starts_and_answers_503_not_500(api, tmp_path):
    nothing_there = free_port()
    down = Stack(
        env={**api.env, "TEMPORAL_ADDRESS": f"127.0.0.1:{nothing_there}"},
        data=tmp_path,
        address=f"127.0.0.1:{nothing_there}",
        metrics_port=None,
    )
    with api_process(down) as lonely:
        ready = httpx.get(f"{lonely.url}/readyz", timeout=30)
        assert ready.status_code == 503 and "Temporal does not answer" in ready.json()["detail"]
        placed = httpx.post(f"{lonely.url}/orders", json=customer_body(), timeout=30)
        assert placed.status_code == 503 and placed.headers["content-type"] == PROBLEM
        assert placed.headers["retry-after"] == "2"
        assert httpx.get(f"{lonely.url}/menu", timeout=30).status_code == 200
    logged = (tmp_path / "api.log").read_text()
    # An outage is one line per request in the log, not a traceback each.
    assert "POST /orders: Temporal is unreachable (503)" in logged
    assert "Traceback" not in logged and "Exception in ASGI application" not in logged


def test_the_worker_and_the_other_commands_never_load_fastapi():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pizzeria.cli.app, pizzeria.worker, pizzeria.demo;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "raised",
    [
        OrderWaitsForOperator("order C1 needs attention: ... `pizzeria repair C1 --retry`"),
        OrderDidNotAnswer("order C1 did not answer within 30 s: is `pizzeria worker` running?"),
        OrderRefused(stuck_advice("C1")),
    ],
    ids=["needs-attention", "not-answering", "stuck"],
)
def test_a_customer_is_told_what_a_cancel_means_for_them_and_staff_what_to_run(
    raised: Exception,
) -> None:
    """The same problem, its status and type alike: the operator's wording names commands
    to run; the customer's (the order's token) what happens to their order."""
    seen = {}
    for who, customer_of in (("staff", None), ("customer", "C1")):
        with pytest.raises(ApiProblem) as problem, order_errors(customer_of):
            raise raised
        seen[who] = problem.value
    staff, customer = seen["staff"], seen["customer"]
    assert (staff.status, staff.slug) == (customer.status, customer.slug)
    assert "pizzeria" in staff.detail and "pizzeria" not in customer.detail
    assert customer.detail.startswith("order C1")
