"""The local payment provider, over HTTP as Stripe's clients call it: idempotency keys,
test cards, holds that expire, capture/void/refund rules, restarts, pagination, logs.

One provider process serves the module (`pizzeria.payments.process.start` on a free
port); the tests that need another (a short hold, a restart) start their own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import sqlite3
import stat
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pizzeria.demo import local_payments
from pizzeria.ops.processes import free_port
from pizzeria.payments import process
from pizzeria.payments.proof import proves
from pizzeria.payments.provider.faults import (
    Decision,
    FaultFileError,
    ProviderFault,
    ProviderFaults,
    parse_faults,
)
from pizzeria.payments.provider.objects import new_id
from pizzeria.payments.provider.wire import parse_form
from tests.helpers import run_pizzeria, wait_until

SECRET = {"Authorization": f"Bearer {process.LOCAL_SECRET_KEY}"}
PUBLISHABLE = {"Authorization": f"Bearer {process.LOCAL_PUBLISHABLE_KEY}"}
GOOD_CARD = "4242424242424242"
FORM = "application/x-www-form-urlencoded"
EXERCISE_BAD_CARD = "424242424242424"  # the exercise's 15-digit card


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[process.ProviderProcess]:
    folder = tmp_path_factory.mktemp("payments")
    started = process.start(folder / "payments.db", faults_file=folder / "faults.json")
    yield started
    started.stop()


@pytest.fixture
def api(provider: process.ProviderProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=provider.url, headers=SECRET, timeout=30) as client:
        yield client


def hold_params(card: str = GOOD_CARD, amount: int = 2500, **extra: str) -> dict[str, Any]:
    return {
        "amount": str(amount),
        "currency": "usd",
        "capture_method": "manual",
        "confirm": "true",
        "payment_method_data[type]": "card",
        "payment_method_data[card][number]": card,
        **extra,
    }


def hold(api: httpx.Client, key: str | None = None, **params: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/v1/payment_intents", data=hold_params(**params), headers=headers)


def intents_tagged(api: httpx.Client, tag: str) -> list[dict[str, Any]]:
    found = api.get(
        "/v1/payment_intents/search", params={"query": f"metadata['tag']:'{tag}'", "limit": 100}
    )
    assert found.status_code == 200, found.text
    return list(found.json()["data"])


# -- idempotency ------------------------------------------------------------------------------


def test_the_same_key_and_parameters_answer_the_stored_object(api: httpx.Client) -> None:
    tag, key = uuid.uuid4().hex, uuid.uuid4().hex
    first = hold(api, key, **{"metadata[tag]": tag})
    again = hold(api, key, **{"metadata[tag]": tag})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert [intent["id"] for intent in intents_tagged(api, tag)] == [first.json()["id"]]


def test_the_same_key_with_other_parameters_is_an_idempotency_error(api: httpx.Client) -> None:
    tag, key = uuid.uuid4().hex, uuid.uuid4().hex
    assert hold(api, key, amount=2500, **{"metadata[tag]": tag}).status_code == 200
    other = hold(api, key, amount=9900, **{"metadata[tag]": tag})
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    elsewhere = api.post(
        "/v1/refunds", data={"payment_intent": "pi_x"}, headers={"Idempotency-Key": key}
    )
    assert elsewhere.status_code == 400
    assert elsewhere.json()["error"]["type"] == "idempotency_error"
    assert [intent["amount"] for intent in intents_tagged(api, tag)] == [2500]


def test_a_decline_is_stored_under_its_key_too(api: httpx.Client) -> None:
    key = uuid.uuid4().hex
    first = hold(api, key, card="4000000000000002")
    again = hold(api, key, card="4000000000000002")
    assert first.status_code == again.status_code == 402
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


# -- cards --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "code", "decline_code"),
    [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000069", "expired_card", "expired_card"),
    ],
)
def test_stripe_test_cards_are_declined_as_stripe_declines_them(
    api: httpx.Client, card: str, code: str, decline_code: str
) -> None:
    tag = uuid.uuid4().hex
    answer = hold(api, uuid.uuid4().hex, card=card, **{"metadata[tag]": tag})
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        code,
        decline_code,
    )
    intent = error["payment_intent"]
    assert intent["status"] == "requires_payment_method"
    assert intent["amount_capturable"] == 0
    assert intent["last_payment_error"]["decline_code"] == decline_code
    stored = api.get(f"/v1/payment_intents/{intent['id']}").json()
    assert stored["status"] == "requires_payment_method"
    assert [i["id"] for i in intents_tagged(api, tag)] == [intent["id"]]


@pytest.mark.parametrize("card", [EXERCISE_BAD_CARD, "4242424242424241", "42424242424242424"])
def test_a_number_that_is_not_a_card_is_an_invalid_number_and_holds_nothing(
    api: httpx.Client, card: str
) -> None:
    tag = uuid.uuid4().hex
    answer = hold(api, uuid.uuid4().hex, card=card, **{"metadata[tag]": tag})
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["message"]) == (
        "card_error",
        "incorrect_number",
        "Invalid credit card number",
    )
    assert "payment_intent" not in error
    assert intents_tagged(api, tag) == []


def test_a_browser_trades_a_card_for_a_token_with_the_publishable_key(
    provider: process.ProviderProcess, api: httpx.Client
) -> None:
    origin = {"Origin": "http://127.0.0.1:8000"}
    preflight = httpx.options(
        f"{provider.url}/v1/payment_methods",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    token = httpx.post(
        f"{provider.url}/v1/payment_methods",
        data={"type": "card", "card[number]": "5555555555554444"},
        headers={**PUBLISHABLE, **origin},
    )
    assert token.status_code == 200, token.text
    assert token.headers["Access-Control-Allow-Origin"] == "*"
    # No other route lets a page in a browser in: not to read, capture, void nor refund.
    for path in ("/v1/payment_intents", "/v1/refunds", "/v1/payment_intents/pi_1/cancel"):
        asked = httpx.options(
            f"{provider.url}{path}", headers={**origin, "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in asked.headers, path
        listed = httpx.get(f"{provider.url}{path}", headers={**origin, **SECRET})
        assert "access-control-allow-origin" not in listed.headers, path
    method = token.json()
    assert method["id"].startswith("pm_")
    assert (method["card"]["last4"], method["card"]["brand"]) == ("4444", "mastercard")
    charged = api.post(
        "/v1/payment_intents",
        data={
            "amount": "1200",
            "currency": "usd",
            "capture_method": "manual",
            "confirm": "true",
            "payment_method": method["id"],
        },
    )
    assert charged.status_code == 200, charged.text
    assert charged.json()["status"] == "requires_capture"


def test_keys_decide_who_may_call(provider: process.ProviderProcess) -> None:
    url = f"{provider.url}/v1/payment_intents"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sk_live_abc"}).status_code == 401
    assert httpx.get(url, headers=PUBLISHABLE).status_code == 401
    refused = httpx.post(url, data=hold_params(), headers=PUBLISHABLE)
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(url, headers={"Authorization": "Bearer sk_test_anything"}).status_code == 200
    # A refused key is shown as Stripe shows one, and a short one not at all.
    for key, shown in (("garbage", "****"), ("rk_other_0123456789abcdef", "rk_other****cdef")):
        answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
        assert answer.json()["error"]["message"] == f"Invalid API Key provided: {shown}"
    # Basic auth with the key as its user name, as Stripe takes it (`curl -u sk_test_...:`).
    assert httpx.get(url, auth=("sk_test_anything", "")).status_code == 200
    for user in ("pk_test_abc", "garbage", ""):
        assert httpx.get(url, auth=(user, "")).status_code == 401, user
    garbage = httpx.get(url, auth=("garbage", "")).json()["error"]["message"]
    assert garbage == "Invalid API Key provided: ****"
    assert "You did not provide" in httpx.get(url, auth=("", "x")).json()["error"]["message"]
    not_base64 = httpx.get(url, headers={"Authorization": "Basic %%%"})
    assert not_base64.json()["error"]["message"] == "Invalid API Key provided: ****"


def test_an_id_made_of_a_card_number_is_not_said_back_whole(api: httpx.Client) -> None:
    hold = {"amount": "1200", "currency": "usd", "capture_method": "manual", "confirm": "true"}
    asked = [
        api.post("/v1/payment_intents", data={**hold, "payment_method": "pm_4000056655665556"}),
        api.get("/v1/payment_intents/pi_4000056655665556"),
    ]
    for answer in asked:
        assert answer.status_code in (402, 404), answer.text
        assert "4000056655665556" not in answer.text and "****5556" in answer.text, answer.text


def test_unknown_urls_and_parameters_are_refused_as_stripe_does(api: httpx.Client) -> None:
    assert api.get("/v1/customers").status_code == 404
    unknown = api.post("/v1/payment_intents", data={**hold_params(), "amout": "1"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "amout"
    small = api.post("/v1/payment_intents", data=hold_params(amount=49))
    assert small.json()["error"]["code"] == "amount_too_small"
    assert api.get("/v1/payment_intents/pi_nope").json()["error"]["code"] == "resource_missing"


# -- capture, void, refund -------------------------------------------------------------------


def held(api: httpx.Client, amount: int = 2500) -> str:
    answer = hold(api, uuid.uuid4().hex, amount=amount)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "requires_capture"
    return str(answer.json()["id"])


def post(api: httpx.Client, path: str, **data: str) -> httpx.Response:
    return api.post(path, data=data, headers={"Idempotency-Key": uuid.uuid4().hex})


def test_a_partial_capture_takes_part_and_releases_the_rest(api: httpx.Client) -> None:
    intent_id = held(api, 2500)
    captured = post(api, f"/v1/payment_intents/{intent_id}/capture", amount_to_capture="2000")
    assert captured.status_code == 200, captured.text
    body = captured.json()
    assert (body["status"], body["amount_received"], body["amount_capturable"]) == (
        "succeeded",
        2000,
        0,
    )
    again = post(api, f"/v1/payment_intents/{intent_id}/capture")
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_a_capture_cannot_take_more_than_the_hold(api: httpx.Client) -> None:
    intent_id = held(api, 2500)
    over = post(api, f"/v1/payment_intents/{intent_id}/capture", amount_to_capture="2501")
    assert (over.status_code, over.json()["error"]["code"]) == (400, "amount_too_large")
    assert api.get(f"/v1/payment_intents/{intent_id}").json()["status"] == "requires_capture"


def test_a_void_releases_a_hold_and_nothing_can_be_captured_after(api: httpx.Client) -> None:
    intent_id = held(api)
    voided = post(api, f"/v1/payment_intents/{intent_id}/cancel")
    assert voided.status_code == 200
    assert (voided.json()["status"], voided.json()["amount_capturable"]) == ("canceled", 0)
    capture = post(api, f"/v1/payment_intents/{intent_id}/capture")
    assert capture.status_code == 400
    assert capture.json()["error"]["code"] == "payment_intent_unexpected_state"
    refund = post(api, "/v1/refunds", payment_intent=intent_id)
    assert refund.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_a_void_after_a_capture_is_refused(api: httpx.Client) -> None:
    intent_id = held(api)
    assert post(api, f"/v1/payment_intents/{intent_id}/capture").status_code == 200
    void = post(api, f"/v1/payment_intents/{intent_id}/cancel")
    assert void.status_code == 400
    error = void.json()["error"]
    assert error["code"] == "payment_intent_unexpected_state"
    assert error["payment_intent"]["status"] == "succeeded"


def test_a_hold_cannot_be_refunded_only_released(api: httpx.Client) -> None:
    intent_id = held(api)
    refund = post(api, "/v1/refunds", payment_intent=intent_id, amount="100")
    assert refund.status_code == 400
    assert refund.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_refunds_add_up_to_what_was_captured_and_never_beyond(api: httpx.Client) -> None:
    intent_id = held(api, 3000)
    assert post(
        api, f"/v1/payment_intents/{intent_id}/capture", amount_to_capture="2000"
    ).is_success
    first = post(
        api, "/v1/refunds", payment_intent=intent_id, amount="1500", reason="requested_by_customer"
    )
    assert first.status_code == 200, first.text
    over = post(api, "/v1/refunds", payment_intent=intent_id, amount="501")
    assert (over.status_code, over.json()["error"]["code"]) == (400, "amount_too_large")
    rest = post(api, "/v1/refunds", payment_intent=intent_id)
    assert (rest.status_code, rest.json()["amount"]) == (200, 500)
    done = post(api, "/v1/refunds", payment_intent=intent_id, amount="1")
    assert done.json()["error"]["code"] == "charge_already_refunded"
    listed = api.get("/v1/refunds", params={"payment_intent": intent_id}).json()["data"]
    assert [refund["amount"] for refund in listed] == [500, 1500]
    charge = api.get(
        f"/v1/payment_intents/{intent_id}", params={"expand[]": "latest_charge"}
    ).json()["latest_charge"]
    assert (charge["amount_captured"], charge["amount_refunded"], charge["refunded"]) == (
        2000,
        2000,
        True,
    )


# -- lists ---------------------------------------------------------------------------------------


def test_lists_page_through_everything_newest_first(api: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    made = [hold(api, uuid.uuid4().hex, **{"metadata[tag]": tag}).json()["id"] for _ in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):  # bounded: the provider holds far fewer intents
        params = {"limit": "3", **({"starting_after": cursor} if cursor else {})}
        page = api.get("/v1/payment_intents", params=params).json()
        assert page["object"] == "list" and len(page["data"]) <= 3
        seen += [intent["id"] for intent in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in made] == list(reversed(made))
    searched: list[str] = []
    page_token: str | None = None
    for _ in range(10):
        params = {"query": f"metadata['tag']:'{tag}'", "limit": "2"}
        found = api.get(
            "/v1/payment_intents/search",
            params={**params, **({"page": page_token} if page_token else {})},
        ).json()
        searched += [intent["id"] for intent in found["data"]]
        page_token = found["next_page"]
        if not found["has_more"]:
            break
    assert searched == list(reversed(made))


# -- holds expire, state survives ------------------------------------------------------------


def test_an_uncaptured_hold_expires_and_cannot_be_captured(tmp_path: Path) -> None:
    with (
        process.running(tmp_path / "short.db", hold_seconds=1.0) as short,
        httpx.Client(base_url=short.url, headers=SECRET, timeout=30) as api,
    ):
        intent_id = held(api)

        def expired() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/v1/payment_intents/{intent_id}").json()
            return body if body["status"] == "canceled" else None

        intent = wait_until(expired, "the hold to expire")
        assert intent is not None
        assert intent["cancellation_reason"] == "automatic"
        assert intent["amount_capturable"] == 0
        assert intent["canceled_at"] >= intent["created"] + 1
        capture = post(api, f"/v1/payment_intents/{intent_id}/capture")
        assert capture.status_code == 400
        assert capture.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_a_restart_keeps_objects_and_idempotency_keys(tmp_path: Path) -> None:
    data = tmp_path / "kept.db"
    key = uuid.uuid4().hex
    with process.running(data) as first, httpx.Client(base_url=first.url, headers=SECRET) as api:
        created = hold(api, key).json()
        assert post(
            api, f"/v1/payment_intents/{created['id']}/capture", amount_to_capture="1000"
        ).is_success
        first.kill()  # a crash: what it answered is kept all the same
    with process.running(data) as second, httpx.Client(base_url=second.url, headers=SECRET) as api:
        kept = api.get(f"/v1/payment_intents/{created['id']}").json()
        assert (kept["status"], kept["amount_received"]) == ("succeeded", 1000)
        replay = hold(api, key)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == created["id"]


def test_object_ids_are_unguessable_and_shaped_as_stripes() -> None:
    ids = [new_id("pm") for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"pm_[A-Za-z0-9]{24}", one) for one in ids)
    # Every character of the alphabet comes up about as often (uniform draws): 120,000
    # characters over 62, about 1,935 each.
    counts = Counter("".join(one[3:] for one in ids))
    assert len(counts) == 62 and 1700 < min(counts.values()) <= max(counts.values()) < 2200


# -- logs, CLI, faults syntax ----------------------------------------------------------------


def test_card_numbers_never_reach_the_log_or_the_data_file(tmp_path: Path) -> None:
    card, bad = "4000056655665556", "400005665566555"
    with process.running(tmp_path / "p.db") as provider:
        with httpx.Client(base_url=provider.url, headers=SECRET) as api:
            assert hold(api, uuid.uuid4().hex, card=card).status_code == 200
            assert hold(api, uuid.uuid4().hex, card=bad).status_code == 402
        log = provider.log_file.read_text()
    assert "**** 5556" in log
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("p.db*"))
    for number in (card, bad):
        assert number not in log
        assert number.encode() not in stored


def test_what_the_provider_answers_and_keeps_cannot_be_tried_against_card_numbers(
    tmp_path: Path,
) -> None:
    """A card's fingerprint (answered to the browser that tokenizes it) and an idempotency
    record's hash of its request are keyed by the provider's secret: hashing candidate
    numbers (a card's first six and last four digits leave a million) finds nothing."""
    card = "4000056655665556"
    form = urllib.parse.urlencode(hold_params(card))
    fingerprints = []
    for name in ("a", "b"):
        with process.running(tmp_path / name / "payments.db") as provider:
            with httpx.Client(base_url=provider.url, headers=PUBLISHABLE) as browser:
                tokens = [
                    browser.post("/v1/payment_methods", data={"type": "card", "card[number]": card})
                    for _ in range(2)
                ]
            with httpx.Client(base_url=provider.url, headers=SECRET) as api:
                held = api.post(
                    "/v1/payment_intents",
                    content=form,
                    headers={"Idempotency-Key": "k1", "Content-Type": FORM},
                )
                assert held.status_code == 200, held.text
        one, again = (token.json()["card"]["fingerprint"] for token in tokens)
        assert one == again  # the same card, the same fingerprint, at one provider
        fingerprints.append(one)
        secret_file = tmp_path / name / "payments.secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        secret = secret_file.read_text().strip().encode()
        with sqlite3.connect(tmp_path / name / "payments.db") as db:
            (stored,) = db.execute(
                "SELECT fingerprint FROM idempotency WHERE key = 'k1'"
            ).fetchone()
        canonical = json.dumps(
            ["POST /v1/payment_intents", parse_form(form)], sort_keys=True, separators=(",", ":")
        ).encode()
        assert stored == hmac.new(secret, canonical, hashlib.sha256).hexdigest()
        assert stored != hashlib.sha256(canonical).hexdigest()
        tried = {
            hashlib.sha256(b"pizzeria-card\x1f" + f"400005{middle:06d}5556".encode()).hexdigest()
            for middle in range(655600, 655700)  # the card's own middle digits among them
        }
        assert one not in {digest[:16] for digest in tried}
    assert fingerprints[0] != fingerprints[1]  # each provider has its own secret


def test_the_command_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    faults.write_text("capture=explode")
    for args in (["--faults-file", str(faults)], ["--hold-seconds", "0"]):
        done = run_pizzeria("payments", "--data", str(tmp_path / "p.db"), *args)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_a_taken_port_makes_the_provider_take_another(
    provider: process.ProviderProcess, tmp_path: Path
) -> None:
    taken = int(provider.url.rsplit(":", 1)[1])
    with process.running(tmp_path / "p.db", port=taken) as other:
        assert other.url != provider.url
        assert process.answers(other.url)


@pytest.mark.parametrize(
    "text",
    [
        "capture",
        "capture=explode",
        "pay=error",
        "capture=error/404",
        "capture=lost/3",
        "capture=error:0",
        "capture=error@1.5",
        "capture=slow/x",
        "[1]",
    ],
)
def test_bad_fault_syntax_is_refused(text: str) -> None:
    with pytest.raises(FaultFileError):
        parse_faults(text)


def test_fault_syntax_reads_arguments_counts_and_rates() -> None:
    assert parse_faults('["capture=error/503:2", "*=slow/0.5@0.25", "refund=lost"]') == [
        ProviderFault("capture", "error", 503.0, 2, None),
        ProviderFault("*", "slow", 0.5, None, 0.25),
        ProviderFault("refund", "lost"),
    ]


def test_a_rated_fault_strikes_a_share_the_same_way_every_run(tmp_path: Path) -> None:
    file = tmp_path / "faults"
    file.write_text("authorize=error@0.3")

    def decisions() -> list[Decision]:
        plan = ProviderFaults(file, seed="7")
        return [plan.decide("authorize", f"key-{n}") for n in range(400)]

    first = decisions()
    struck = sum(1 for decision in first if decision.error_status == 500)
    assert 60 < struck < 180
    assert decisions() == first
    assert ProviderFaults(file, seed="7").decide("capture", "key-0") == Decision()


def test_a_counted_fault_stops_after_n_and_a_new_file_starts_afresh(tmp_path: Path) -> None:
    file = tmp_path / "faults"
    file.write_text("capture=lost:2")
    plan = ProviderFaults(file)
    assert [plan.decide("capture", "k").lose_answer for _ in range(3)] == [True, True, False]
    replacement = tmp_path / "new"
    replacement.write_text("capture=lost:1")
    replacement.replace(file)
    assert [plan.decide("capture", "k").lose_answer for _ in range(2)] == [True, False]


def test_the_data_folders_provider_says_where_it_listens_even_on_another_port(
    tmp_path: Path,
) -> None:
    # Its usual port taken, it takes a free one, and writes it where the folder's workers,
    # check and refund look (payments.url); stopped, it takes the note away.
    folder = tmp_path / "data"
    url_file = folder / "payments.url"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = process.start(
            folder / "payments.db",
            port=port,
            env={**os.environ, "PIZZERIA_DATA_DIR": str(folder)},
        )
        try:
            assert started.url != f"http://127.0.0.1:{port}"
            assert url_file.read_text().strip() == started.url
            assert process.answers(url_file.read_text().strip())
            # A second provider for the folder's own file is refused: it took the URL
            # file from the first, then removed it when it stopped.
            second = run_pizzeria(
                "payments", env={**os.environ, "PIZZERIA_DATA_DIR": str(folder)}, timeout=60
            )
            assert second.returncode == 2, second.stdout + second.stderr
            assert second.stderr.strip() == (
                f"error: the data folder's payment provider already runs at {started.url} "
                f"(payments in {folder / 'payments.db'}): one is enough; stop it first, or "
                "give another --data file"
            )
            assert url_file.read_text().strip() == started.url
        finally:
            started.stop()
    assert not url_file.exists()
    # Its data file named otherwise (`--data data/payments.db` from the folder above, say)
    # is still the folder's own.
    again = process.start(
        folder / ".." / "data" / "payments.db", env={**os.environ, "PIZZERIA_DATA_DIR": str(folder)}
    )
    try:
        assert url_file.read_text().strip() == again.url
    finally:
        again.stop()
    assert not url_file.exists()
    # Any other data file is not the folder's provider: it writes nothing.
    elsewhere = process.start(
        tmp_path / "other.db", env={**os.environ, "PIZZERIA_DATA_DIR": str(folder)}
    )
    try:
        assert not url_file.exists()
    finally:
        elsewhere.stop()


def test_a_server_uses_the_folders_provider_on_the_port_asked_for_and_never_a_stranger(
    tmp_path: Path, provider: process.ProviderProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pizzeria server --payments-port P`: P is where the folder's provider is looked for,
    # not the usual port. What answers there must prove that it is the folder's own (it
    # holds the folder's payments.secret): another folder's provider, or any program that
    # took the port first, would be sent the card numbers. The folder need not exist yet.
    folder = tmp_path / "new"
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(folder))
    taken = provider.url
    said: list[str] = []
    with local_payments(said.append, folder, int(taken.rsplit(":", 1)[1])) as url:
        assert url != taken and proves(url, folder / "payments.secret")
        assert (folder / "payments.url").read_text().strip() == url
        assert not proves(taken, folder / "payments.secret")
    assert said[0] == (
        f"Something listening at {taken} is not this data folder's payment provider (it "
        "cannot prove that it holds the folder's payments.secret): starting the folder's own"
    )
    assert not (folder / "payments.url").exists()
    own = process.start(folder / "payments.db")  # the folder's, by hand: it writes its URL
    try:
        said.clear()
        with local_payments(said.append, folder, int(own.url.rsplit(":", 1)[1])) as url:
            assert url == own.url
        assert said == [f"Using the payment provider already answering at {own.url}"]
    finally:
        own.stop()
    port = free_port()
    with local_payments(said.append, folder, port) as url:
        assert url == f"http://127.0.0.1:{port}" and process.answers(url)
        assert (folder / "payments.url").read_text().strip() == url
    assert not (folder / "payments.url").exists()


def test_a_caller_that_hangs_up_before_its_answer_is_one_log_line(tmp_path: Path) -> None:
    # A worker that gives up on a slow answer hangs up: the provider's log said so with
    # a BrokenPipeError traceback each time (chaos's slow faults made many).
    faults = tmp_path / "faults.json"
    faults.write_text("*=slow/0.5")
    started = process.start(tmp_path / "payments.db", faults_file=faults)
    try:
        host, _, port = started.url.removeprefix("http://").partition(":")
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(
                    b"GET /v1/payment_intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + process.LOCAL_SECRET_KEY.encode()
                    + b"\r\n\r\n"
                )
        wait_until(
            lambda: started.log_file.read_text().count("hung up before its answer") >= 1,
            "the provider to notice the callers hung up",
            30,
        )
    finally:
        started.stop()
    assert "Traceback" not in started.log_file.read_text()
