"""The payment port through its Stripe adapter (the official stripe library) against the
local provider: the same code that talks to real Stripe.

Money states (held, captured, refunded, released, expired, declined), the typed errors,
and every fault the provider can inject: a 5xx is a retryable `PaymentUnavailable`; a
lost answer or a slow one is too, and the retry with the same key answers the same
object, never a second hold.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from pizzeria.payments import process
from pizzeria.payments.errors import (
    IdempotencyKeyReused,
    PaymentDeclined,
    PaymentRequestError,
    PaymentStateError,
    PaymentUnavailable,
)
from pizzeria.payments.port import MoneyState, Payment, order_metadata
from pizzeria.payments.provider_config import gateway_from_env, provider_gateway
from pizzeria.payments.stripe_gateway import StripeGateway
from tests.helpers import eventually

GOOD_CARD = "4242424242424242"
ORDER = order_metadata("pizza-workflow-order-P1/run-1", "P1")


class Provider:
    def __init__(self, started: process.ProviderProcess, faults_file: Path) -> None:
        self.started = started
        self.url = started.url
        self.faults_file = faults_file

    def set_faults(self, text: str) -> None:
        """Replace the faults file (a new inode: the provider sees the change at once)."""
        temporary = self.faults_file.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self.faults_file)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    folder = tmp_path_factory.mktemp("payments")
    faults = folder / "faults.json"
    started = process.start(folder / "payments.db", faults_file=faults)
    yield Provider(started, faults)
    started.stop()


@pytest.fixture
async def gateway(provider: Provider) -> AsyncIterator[StripeGateway]:
    provider.set_faults("")
    gateway = StripeGateway(process.LOCAL_SECRET_KEY, provider.url, timeout=30)
    yield gateway
    provider.set_faults("")
    await gateway.close()


def key() -> str:
    return f"pizza-workflow-order-P1/{uuid.uuid4()}/process_credit_card"


async def hold(gateway: StripeGateway, amount: int = 2500, card: str = GOOD_CARD) -> Payment:
    return await gateway.authorize(amount, idempotency_key=key(), metadata=ORDER, card_number=card)


# -- the money's states --------------------------------------------------------------------


async def test_a_hold_is_captured_then_refunded_in_parts(gateway: StripeGateway) -> None:
    held = await hold(gateway, 2500)
    assert (held.state, held.amount, held.amount_capturable, held.card_last4) == (
        MoneyState.HELD,
        2500,
        2500,
        "4242",
    )
    assert held.metadata["order_number"] == "P1"
    assert held.metadata["run_id"] == "run-1"
    captured = await gateway.capture(held.id, 2000, idempotency_key=key())
    assert (captured.state, captured.amount_captured, captured.amount_capturable) == (
        MoneyState.CAPTURED,
        2000,
        0,
    )
    part = await gateway.refund(held.id, 500, reason="cold pizza", idempotency_key=key())
    assert (part.amount, part.payment_id, part.reason) == (500, held.id, "cold pizza")
    with pytest.raises(PaymentRequestError) as over:
        await gateway.refund(held.id, 1501, reason="too much", idempotency_key=key())
    assert over.value.code == "amount_too_large"
    await gateway.refund(held.id, reason="the rest", idempotency_key=key())
    done = await gateway.get(held.id)
    assert (done.state, done.amount_captured, done.amount_refunded) == (
        MoneyState.REFUNDED,
        2000,
        2000,
    )
    refunds = [refund async for refund in gateway.iter_refunds(page_size=1, payment_id=held.id)]
    assert [refund.amount for refund in refunds] == [1500, 500]
    with pytest.raises(PaymentStateError) as again:
        await gateway.refund(held.id, 1, reason="more", idempotency_key=key())
    assert again.value.code == "charge_already_refunded"


async def test_a_void_releases_the_hold_and_a_second_void_says_so(gateway: StripeGateway) -> None:
    held = await hold(gateway)
    released = await gateway.void(held.id, idempotency_key=key())
    assert (released.state, released.amount_capturable) == (MoneyState.RELEASED, 0)
    assert (await gateway.void(held.id, idempotency_key=key())).state is MoneyState.RELEASED
    with pytest.raises(PaymentStateError) as capture:
        await gateway.capture(held.id, idempotency_key=key())
    assert capture.value.provider_status == "canceled"
    with pytest.raises(PaymentStateError):
        await gateway.refund(held.id, reason="nothing taken", idempotency_key=key())


async def test_a_void_after_a_capture_is_refused(gateway: StripeGateway) -> None:
    held = await hold(gateway)
    await gateway.capture(held.id, idempotency_key=key())
    with pytest.raises(PaymentStateError) as void:
        await gateway.void(held.id, idempotency_key=key())
    assert (void.value.code, void.value.provider_status) == (
        "payment_intent_unexpected_state",
        "succeeded",
    )
    assert (await gateway.get(held.id)).state is MoneyState.CAPTURED


async def test_a_hold_expires_and_its_capture_fails(tmp_path: Path) -> None:
    with process.running(tmp_path / "short.db", hold_seconds=1.0) as short:
        gateway = StripeGateway(process.LOCAL_SECRET_KEY, short.url)
        try:
            held = await hold(gateway)

            async def expired() -> bool:
                return (await gateway.get(held.id)).state is MoneyState.EXPIRED

            await eventually(expired, "the hold to expire")
            with pytest.raises(PaymentStateError) as capture:
                await gateway.capture(held.id, idempotency_key=key())
            assert capture.value.code == "payment_intent_unexpected_state"
            voided = await gateway.void(held.id, idempotency_key=key())
            assert (voided.state, voided.cancellation_reason) == (MoneyState.EXPIRED, "automatic")
        finally:
            await gateway.close()


# -- verdicts and refusals -------------------------------------------------------------------


@pytest.mark.parametrize("test_payment_methods", [False, True])
@pytest.mark.parametrize(
    ("card", "code", "decline_code"),
    [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000069", "expired_card", "expired_card"),
    ],
)
async def test_a_declined_card_is_a_decline_with_stripes_codes(
    provider: Provider, card: str, code: str, decline_code: str, test_payment_methods: bool
) -> None:
    """As a raw number (the local provider) and as Stripe's test PaymentMethod id (what
    the adapter sends real Stripe)."""
    gateway = StripeGateway(
        process.LOCAL_SECRET_KEY, provider.url, test_payment_methods=test_payment_methods
    )
    try:
        with pytest.raises(PaymentDeclined) as declined:
            await hold(gateway, card=card)
        assert (declined.value.code, declined.value.decline_code) == (code, decline_code)
        assert declined.value.payment_id is not None
        payment = await gateway.get(declined.value.payment_id)
        assert (payment.state, payment.decline_code) == (MoneyState.DECLINED, decline_code)
    finally:
        await gateway.close()


async def test_the_exercises_bad_card_is_an_invalid_number_with_no_payment(
    gateway: StripeGateway,
) -> None:
    attempt = key()
    with pytest.raises(PaymentDeclined) as declined:
        await gateway.authorize(
            2500, idempotency_key=attempt, metadata=ORDER, card_number="424242424242424"
        )
    assert (declined.value.code, declined.value.message) == (
        "incorrect_number",
        "Invalid credit card number",
    )
    assert declined.value.payment_id is None
    assert await gateway.find(attempt) is None


async def test_a_token_from_the_browser_pays_like_a_card(
    provider: Provider, gateway: StripeGateway
) -> None:
    async with httpx.AsyncClient() as browser:
        token = await browser.post(
            f"{provider.url}/v1/payment_methods",
            data={"type": "card", "card[number]": "4000000000009995"},
            headers={"Authorization": f"Bearer {process.LOCAL_PUBLISHABLE_KEY}"},
        )
    with pytest.raises(PaymentDeclined) as declined:
        await gateway.authorize(
            2500, idempotency_key=key(), metadata=ORDER, payment_method=token.json()["id"]
        )
    assert declined.value.decline_code == "insufficient_funds"


async def test_a_token_that_names_no_card_is_declined_not_a_request_to_fix(
    gateway: StripeGateway,
) -> None:
    # A customer's made-up token: refused like a declined card (not retried, compensated).
    attempt = key()
    with pytest.raises(PaymentDeclined) as declined:
        await gateway.authorize(
            2500, idempotency_key=attempt, metadata=ORDER, payment_method="pm_x"
        )
    assert declined.value.code == "resource_missing"
    assert "No such PaymentMethod: 'pm_x'" in str(declined.value)
    assert await gateway.find(attempt) is None  # no hold


async def test_a_key_reused_with_another_amount_is_refused(gateway: StripeGateway) -> None:
    attempt = key()
    first = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    same = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    assert same == first
    with pytest.raises(IdempotencyKeyReused):
        await gateway.authorize(
            2600, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
        )


async def test_a_wrong_key_is_a_request_error_and_a_live_key_is_refused(provider: Provider) -> None:
    gateway = StripeGateway("sk_nope", provider.url)
    try:
        with pytest.raises(PaymentRequestError) as refused:
            await gateway.get("pi_x")
        assert refused.value.http_status == 401
    finally:
        await gateway.close()
    with pytest.raises(PaymentRequestError):
        StripeGateway("sk_live_123", provider.url)


async def test_the_environment_names_the_provider(provider: Provider) -> None:
    local = gateway_from_env({"PIZZERIA_PAYMENTS_URL": provider.url})
    assert (local.base_url, local.test_payment_methods) == (provider.url, False)
    real = gateway_from_env({"STRIPE_API_KEY": "sk_test_x"})
    assert (real.base_url, real.test_payment_methods) == ("https://api.stripe.com", True)
    with pytest.raises(PaymentRequestError):
        gateway_from_env({})
    for made in (local, real):
        await made.close()


# -- lookups and reconciliation --------------------------------------------------------------


async def test_find_looks_a_payment_up_by_its_authorize_key(gateway: StripeGateway) -> None:
    attempt = key()
    made = await gateway.authorize(
        1800, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    assert await gateway.find(attempt) == made
    assert await gateway.find(attempt + "-other") is None


async def test_listing_pages_through_every_payment_newest_first(gateway: StripeGateway) -> None:
    made = [(await hold(gateway, 1000 + n)).id for n in range(5)]
    seen = [payment.id async for payment in gateway.iter_payments(page_size=2)]
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in made] == list(reversed(made))
    first = await gateway.list_payments(limit=2)
    assert len(first.items) == 2 and first.has_more
    assert first.next_cursor == first.items[-1].id


# -- faults ------------------------------------------------------------------------------------


async def test_a_5xx_is_retryable_and_the_retry_does_the_work_once(
    provider: Provider, gateway: StripeGateway
) -> None:
    provider.set_faults("authorize=error/503:1")
    attempt = key()
    with pytest.raises(PaymentUnavailable) as failed:
        await gateway.authorize(
            2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
        )
    assert (failed.value.retryable, failed.value.http_status) == (True, 503)
    assert await gateway.find(attempt) is None
    made = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    assert await gateway.find(attempt) == made


async def test_a_lost_answer_is_retried_into_the_same_hold_never_a_second(
    provider: Provider, gateway: StripeGateway
) -> None:
    provider.set_faults("authorize=lost:1")
    attempt = key()
    with pytest.raises(PaymentUnavailable) as lost:
        await gateway.authorize(
            2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
        )
    assert lost.value.outcome_unknown
    already = await gateway.find(attempt)
    assert already is not None and already.state is MoneyState.HELD
    retried = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    assert retried == already
    holds = [p async for p in gateway.iter_payments() if p.idempotency_key == attempt]
    assert holds == [already]


async def test_a_lost_capture_answer_is_retried_into_the_same_capture(
    provider: Provider, gateway: StripeGateway
) -> None:
    held = await hold(gateway, 2500)
    provider.set_faults("capture=lost:1")
    capture_key = key()
    with pytest.raises(PaymentUnavailable):
        await gateway.capture(held.id, 2000, idempotency_key=capture_key)
    assert (await gateway.get(held.id)).amount_captured == 2000
    retried = await gateway.capture(held.id, 2000, idempotency_key=capture_key)
    assert (retried.state, retried.amount_captured) == (MoneyState.CAPTURED, 2000)


async def test_a_reset_connection_does_nothing_and_the_retry_works(
    provider: Provider, gateway: StripeGateway
) -> None:
    held = await hold(gateway, 2500)
    provider.set_faults("void=refuse:1")
    void_key = key()
    with pytest.raises(PaymentUnavailable):
        await gateway.void(held.id, idempotency_key=void_key)
    assert (await gateway.get(held.id)).state is MoneyState.HELD
    assert (await gateway.void(held.id, idempotency_key=void_key)).state is MoneyState.RELEASED


async def test_no_provider_listening_is_unavailable_with_nothing_done(tmp_path: Path) -> None:
    with process.running(tmp_path / "gone.db") as gone:
        url = gone.url
    gateway = StripeGateway(process.LOCAL_SECRET_KEY, url)
    try:
        with pytest.raises(PaymentUnavailable) as refused:
            await hold(gateway)
        assert (refused.value.retryable, refused.value.outcome_unknown) == (True, False)
    finally:
        await gateway.close()


async def test_an_order_number_in_any_script_is_held_once_under_its_key(
    gateway: StripeGateway,
) -> None:
    """An exercise client may number an order in Cyrillic; the key holds the number, and
    an HTTP header cannot carry it as it is. The hold is made, once, and found by it."""
    attempt = f"pizza-workflow-order-заказ-7/{uuid.uuid4()}/process_credit_card"
    made = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    again = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )
    assert made.state is MoneyState.HELD and again == made
    assert await gateway.find(attempt) == made
    other = attempt.replace("заказ", "заказы")
    assert (
        await gateway.authorize(2500, idempotency_key=other, metadata=ORDER, card_number=GOOD_CARD)
    ).id != made.id


async def test_a_provider_restarted_between_two_calls_is_reached_again_at_once(
    tmp_path: Path,
) -> None:
    """The gateway keeps its connection to a local provider open between calls; a provider
    killed and started again (chaos does it) has closed it, and the next call opens a new
    one instead of failing."""
    data = tmp_path / "restarted.db"
    first = process.start(data)
    port = int(first.url.rsplit(":", 1)[1])
    gateway = StripeGateway(process.LOCAL_SECRET_KEY, first.url, threads=1)
    again: process.ProviderProcess | None = None
    try:
        held = await hold(gateway)
        first.kill()
        again = process.start(data, port=port)
        assert (await gateway.get(held.id)).state is MoneyState.HELD
        assert (await hold(gateway)).state is MoneyState.HELD
    finally:
        await gateway.close()
        first.stop()
        if again is not None:
            again.stop()


async def test_a_slow_answer_times_out_and_the_retry_makes_no_second_hold(
    provider: Provider, gateway: StripeGateway
) -> None:
    provider.set_faults("authorize=slow/6:1")
    impatient = StripeGateway(process.LOCAL_SECRET_KEY, provider.url, timeout=1.5)
    attempt = key()
    try:
        with pytest.raises(PaymentUnavailable) as slow:
            await impatient.authorize(
                2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
            )
        assert slow.value.outcome_unknown
    finally:
        await impatient.close()
    retried = await gateway.authorize(
        2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD
    )

    def slow_request_done() -> bool:
        """Whichever of the two ran second replayed the first's answer."""
        lines = provider.started.log_file.read_text().splitlines()
        return any("replayed" in line and retried.id in line for line in lines)

    await eventually(slow_request_done, "the slow request to be answered", seconds=60)
    holds = [p async for p in gateway.iter_payments() if p.idempotency_key == attempt]
    assert holds == [retried]


async def test_a_cancelled_call_is_seen_through_before_the_caller_goes_on(
    provider: Provider, gateway: StripeGateway
) -> None:
    provider.set_faults("authorize=slow/2:1")
    attempt = key()
    call = asyncio.ensure_future(
        gateway.authorize(2500, idempotency_key=attempt, metadata=ORDER, card_number=GOOD_CARD)
    )
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    made = await gateway.find(attempt)
    assert made is not None and made.state is MoneyState.HELD


async def test_a_proxy_variable_does_not_stand_between_a_worker_and_the_local_provider(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9: a request sent through this "proxy" would fail.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    provider.set_faults("")
    gateway = StripeGateway(process.LOCAL_SECRET_KEY, provider.url, timeout=30)
    try:
        held = await hold(gateway, 1800)
        assert (held.state, held.amount_capturable) == (MoneyState.HELD, 1800)
        assert (await gateway.get(held.id)).state == MoneyState.HELD
    finally:
        await gateway.close()


async def test_the_data_folders_provider_is_followed_where_its_url_file_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that follows its data folder's provider (no PIZZERIA_PAYMENTS_URL): none
    running is a refusal that sends nothing (not a call to whatever answers on the usual
    port); once one runs, its calls go there; started again on another port, they follow."""
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path))
    for name in ("PIZZERIA_PAYMENTS_URL", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    gateway = provider_gateway()
    follow = gateway.follow
    assert follow == tmp_path / "payments.url"
    try:
        with pytest.raises(PaymentUnavailable) as none_runs:
            await hold(gateway)
        said = str(none_runs.value)
        assert f"no local payment provider runs for the data folder {tmp_path}" in said
        assert (none_runs.value.retryable, none_runs.value.outcome_unknown) == (True, False)
        with process.running(tmp_path / "payments.db") as first:
            held = await hold(gateway)
            assert gateway.base_url == first.url
        assert not follow.exists()  # a provider that stops takes its URL away
        with process.running(tmp_path / "payments.db") as second:
            again = await gateway.get(held.id)  # the same data file, wherever it listens
            assert (again.id, again.state) == (held.id, MoneyState.HELD)
            assert gateway.base_url == second.url
        with pytest.raises(PaymentUnavailable, match="no local payment provider runs"):
            await gateway.get(held.id)
    finally:
        await gateway.close()


class Stranger(http.server.BaseHTTPRequestHandler):
    """Whatever another program of the machine answers on the provider's port: a list to
    anything (as a provider would), and it keeps every request it was sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []
    #: Where it passes the challenge on to (the folder's provider, on another port), and
    #: its answer back: a relay, as a program that took the old port could be.
    relay_to: ClassVar[str | None] = None
    #: What it answers the challenge with.
    answer: ClassVar[bytes] = b'{"object": "list", "data": [], "proof": "0000"}'

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.received.append((self.command, self.path, self.rfile.read(length)))
        body = self.answer
        if self.relay_to is not None and self.path.startswith("/v1/pizzeria/proof"):
            with urllib.request.urlopen(self.relay_to + self.path, timeout=10) as relayed:
                body = relayed.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


async def test_a_stranger_on_the_folders_provider_port_is_sent_no_card_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program that took the port the folder's ``payments.url`` names (its provider
    stopped, or never ran) is asked first to prove that it holds the folder's provider
    secret: it cannot, and is sent nothing of the order; the folder's own provider can."""
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path))
    for name in ("PIZZERIA_PAYMENTS_URL", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    stranger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stranger)
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    gateway = provider_gateway()
    try:
        with process.running(tmp_path / "payments.db") as own:  # the folder's secret made
            assert (await hold(gateway)).state == MoneyState.HELD
            assert gateway.base_url == own.url
            # Its URL file made writable by others since it was read: a chmod alone, seen.
            (tmp_path / "payments.url").chmod(0o666)
            with pytest.raises(PaymentUnavailable, match="can be written by others"):
                await hold(gateway)
            (tmp_path / "payments.url").chmod(0o600)
        url = f"http://127.0.0.1:{stranger.server_address[1]}"
        (tmp_path / "payments.url").write_text(url + "\n")
        (tmp_path / "payments.url").chmod(0o600)
        with pytest.raises(PaymentUnavailable) as refused:
            await hold(gateway)
        said = str(refused.value)
        assert said.startswith(f"the payment provider answering at {url} is not this data folder")
        assert (refused.value.retryable, refused.value.outcome_unknown) == (True, False)
        assert [(method, path.partition("?")[0]) for method, path, _ in Stranger.received] == [
            ("GET", "/v1/pizzeria/proof")
        ]
        assert GOOD_CARD.encode() not in b"".join(body for _, _, body in Stranger.received)
        # Whatever it answers is no proof, refused as cleanly: JSON too deep to read, a
        # proof that is not text a digest compares.
        for nasty in (b"[" * 4096, '{"proof": "\u00e9"}'.encode()):
            Stranger.answer = nasty
            with pytest.raises(PaymentUnavailable, match="is not this data folder"):
                await hold(gateway)
        # A relay that passes the challenge on to the folder's own provider, and its answer
        # back: the provider signed the address it was reached at, not the relay's.
        with process.running(tmp_path / "payments.db") as own:
            (tmp_path / "payments.url").write_text(url + "\n")
            Stranger.relay_to, Stranger.received = own.url, []
            with pytest.raises(PaymentUnavailable, match="is not this data folder's"):
                await hold(gateway)
            assert [path.partition("?")[0] for _, path, _ in Stranger.received] == [
                "/v1/pizzeria/proof"
            ]
    finally:
        Stranger.relay_to = None
        Stranger.answer = b'{"object": "list", "data": [], "proof": "0000"}'
        await gateway.close()
        stranger.shutdown()
        stranger.server_close()
