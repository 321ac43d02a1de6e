"""The payment port over Stripe's API, with the official ``stripe`` package.

The same code talks to real Stripe (test mode: ``STRIPE_API_KEY=sk_test_...``) and to
the local provider (``pizzeria payments``), whose base URL replaces Stripe's:

    gateway = StripeGateway("sk_test_...", base_url="http://127.0.0.1:8091")

Every call is a manual-capture PaymentIntent operation: ``authorize`` creates and
confirms an intent with ``capture_method=manual`` (a hold), ``capture`` captures it,
``void`` cancels it, ``refund`` creates a Refund. Every mutating call sends the caller's
``Idempotency-Key``. The stripe library's own retries are off by default
(``max_network_retries=0``): the caller (Temporal) retries with the same key.

**Card numbers.** The exercise's clients send a raw card number. It goes as
``payment_method_data[type]=card`` and ``payment_method_data[card][number]``, which the
local provider accepts. Real Stripe refuses raw numbers unless the account is allowed to
send them, so against real Stripe (``test_payment_methods``, on by default when the base
URL is Stripe's) a number that is one of Stripe's test cards goes as the test
PaymentMethod id that stands for it (4242424242424242 as ``pm_card_visa``,
4000000000000002 as ``pm_card_chargeDeclined``, ...: `pizzeria.payments.cards`); any
other number is sent raw and real Stripe answers as the account allows. A browser can
trade a number for a ``pm_...`` token itself (``POST /v1/payment_methods`` with a
publishable key) and the order then passes ``payment_method``.

The stripe library is synchronous here (over requests, or to a provider on this machine
over `http.client`: `pizzeria.payments.loopback_http`): each call runs on the gateway's
threads, and a call whose caller is cancelled is still seen
through before the cancellation goes on, so a compensation can never overtake the
request it compensates.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import stripe

from pizzeria.payments import cards
from pizzeria.payments.blocking import seen_through
from pizzeria.payments.errors import (
    PaymentInProgress,
    PaymentRequestError,
    PaymentStateError,
    PaymentUnavailable,
    no_provider_here,
)
from pizzeria.payments.port import (
    CURRENCY,
    IDEMPOTENCY_KEY,
    REFUND_REASON,
    MoneyState,
    Page,
    Payment,
    PaymentGateway,
    RefundRecord,
)
from pizzeria.payments.stripe_errors import translate
from pizzeria.payments.stripe_objects import payment_of, refund_of
from pizzeria.payments.stripe_transport import http_client
from pizzeria.private import UnsafeSecret, file_version, read_private_file
from pizzeria.temporal.tracing import span

T = TypeVar("T")
STRIPE_API = "https://api.stripe.com"
#: How long Stripe's search may take to show a new PaymentIntent ("up to a minute").
STRIPE_SEARCH_LAG = 60.0
#: The pauses between sendings of a call whose key another request is being processed
#: under (409): the first, then doubled up to the last.
IN_PROGRESS_PAUSES = (0.1, 1.0)


class _NoRequestDetails(logging.Filter):
    """The stripe library logs each request's form body at DEBUG (``post_data=...``), a
    raw card number in it: nothing of the library's below INFO is ever logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


logging.getLogger("stripe").addFilter(_NoRequestDetails())
KEY_VARIABLE = "STRIPE_API_KEY"
URL_VARIABLE = "PIZZERIA_PAYMENTS_URL"
INTENTS = "/v1/payment_intents"
REFUNDS = "/v1/refunds"
CHARGE = ["latest_charge"]
LIST_CHARGES = ["data.latest_charge"]
MAX_REASON = 500


class StripeGateway(PaymentGateway):
    """`PaymentGateway` over Stripe's API (see the module's docstring).

    Args:
        api_key: a secret test key, ``sk_test_...`` (a live key is refused unless
            ``allow_live``).
        base_url: the API's address; None for real Stripe.
        timeout: seconds to wait for an answer before `PaymentUnavailable`.
        max_network_retries: the stripe library's own retries (same key); 0 by default.
        in_progress_wait: seconds a call whose idempotency key another request is still
            being processed under (Stripe's 409) keeps asking again, to get that request's
            answer, before `PaymentInProgress`.
        threads: how many calls can be in flight at once.
        test_payment_methods: send Stripe's test card numbers as their test PaymentMethod
            ids; default: only against real Stripe.
        follow: the data folder's ``payments.url`` (`configured_provider`): each call goes
            where it says then, so that a worker started before its provider, or left
            running while the provider was started again on another port, finds it; with
            no such file, nothing is sent (`PaymentUnavailable`, saying so), rather than
            to whatever answers on the usual port (another user's provider, on a shared
            machine).
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = 20.0,
        max_network_retries: int = 0,
        in_progress_wait: float = 10.0,
        threads: int = 8,
        test_payment_methods: bool | None = None,
        allow_live: bool = False,
        follow: Path | None = None,
    ) -> None:
        if api_key.startswith(("sk_live_", "rk_live_")) and not allow_live:
            raise PaymentRequestError("refusing a live Stripe key: use a test key, sk_test_...")
        if os.environ.get("STRIPE_LOG") == "debug" or stripe.log == "debug":
            stripe.log = "info"  # its debug lines, printed to stderr, hold the card number
        real = base_url is None or base_url.rstrip("/") == STRIPE_API
        self.base_url = (base_url or STRIPE_API).rstrip("/")
        self.test_payment_methods = real if test_payment_methods is None else test_payment_methods
        self.search_lag = STRIPE_SEARCH_LAG if real else 0.0
        self.in_progress_wait = in_progress_wait
        self._settings = (api_key, timeout, threads, max_network_retries)
        self.follow = follow
        self._seen: tuple[int, ...] | None = None  # the file's version read last
        self._http, self._client = self._clients(self.base_url)
        self._retired: list[stripe.HTTPClient] = []
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="payments")

    def _clients(self, base_url: str) -> tuple[stripe.HTTPClient, stripe.StripeClient]:
        api_key, timeout, threads, max_network_retries = self._settings
        transport = http_client(base_url, timeout, threads, self.follow)
        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url},
            max_network_retries=max_network_retries,
            http_client=transport,
        )
        return transport, client

    def _where_now(self) -> None:
        """Followed: the URL the folder's ``payments.url`` says now (read again when the
        file changed). No file: `PaymentUnavailable`, and nothing sent."""
        if self.follow is None:
            return
        try:
            seen = os.stat(self.follow)
            if file_version(seen) == self._seen:
                return
            written = read_private_file(self.follow, "local payment provider's URL").strip()
        except FileNotFoundError:
            self._seen = None
            raise no_provider_here(
                f"no local payment provider runs for the data folder {self.follow.parent} "
                f"(no {self.follow.name} there): start `pizzeria server` or `pizzeria "
                f"payments` with that folder, or set {URL_VARIABLE}; nothing was sent"
            ) from None
        except UnsafeSecret as unsafe:
            raise no_provider_here(f"{unsafe}; nothing was sent") from None
        if not written.startswith("http://"):
            raise no_provider_here(
                f"{self.follow} holds no provider's URL ({written[:40]!r}); nothing was sent"
            )
        self._seen = file_version(seen)
        if written.rstrip("/") != self.base_url:
            # Calls in flight keep the clients they took: the old ones close with the gateway.
            self._retired.append(self._http)
            self.base_url = written.rstrip("/")
            self._http, self._client = self._clients(self.base_url)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        for transport in (*self._retired, self._http):
            transport.close()  # type: ignore[no-untyped-call]

    async def _call(self, call: Callable[[], T], method: str = "", path: str = "") -> T:
        """Run a stripe call on our threads; its errors become the port's. While another
        request with the call's idempotency key is being processed, the call is sent again
        (as the stripe library retries a 409), for up to ``in_progress_wait`` seconds: it
        then gets that request's answer."""
        deadline = time.monotonic() + self.in_progress_wait
        pause, longest = IN_PROGRESS_PAUSES
        while True:
            try:
                return await self._call_once(call, method, path)
            except PaymentInProgress:
                if time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    async def _call_once(self, call: Callable[[], T], method: str = "", path: str = "") -> T:
        """One sending of the call, seen through even when its caller is cancelled."""
        named = {"method": method.upper(), "path": path} if method else {}

        def guarded() -> T:
            try:
                # docs/tracing.md: which call (a hold, a capture, a lookup), and its answer.
                with span("payment provider call", url=self.base_url, **named) as traced:
                    try:
                        answer = call()
                    except stripe.StripeError as error:
                        if traced is not None and error.http_status:
                            traced.set_attribute("pizzeria.status", error.http_status)
                        raise
                    if traced is not None and isinstance(getattr(answer, "code", None), int):
                        traced.set_attribute("pizzeria.status", answer.code)  # type: ignore[attr-defined]
                    return answer
            except stripe.StripeError as error:
                raise translate(error) from None

        # In the caller's context, so that the call's span is a child of the activity's.
        traced = contextvars.copy_context().run
        work = asyncio.get_running_loop().run_in_executor(self._executor, traced, guarded)
        return await seen_through(work)  # on the wire: the caller goes once it is over

    async def _answer(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call, its answer as the JSON the provider sent. Through the stripe library's
        ``raw_request``: the same request, headers and errors as its typed calls, without
        the StripeObjects they build from the answer (0.5 ms of CPU per call, about half
        of what the rest of a call to the local provider costs) that `payment_of` would
        only read back."""
        options = {} if idempotency_key is None else {"idempotency_key": _header(idempotency_key)}
        self._where_now()
        client = self._client
        response = await self._call(
            lambda: client.raw_request(method, path, **params, **options), method, path
        )
        answer = response.data
        if not isinstance(answer, dict):
            raise PaymentUnavailable(f"the payment provider answered {path} with no object")
        return answer

    async def authorize(
        self,
        amount: int,
        *,
        idempotency_key: str,
        metadata: Mapping[str, str],
        card_number: str | None = None,
        payment_method: str | None = None,
    ) -> Payment:
        if card_number is not None and payment_method is not None:
            raise ValueError("authorize takes at most one of card_number and payment_method")
        params: dict[str, Any] = {
            "amount": amount,
            "currency": CURRENCY,
            "capture_method": "manual",
            "confirm": card_number is not None or payment_method is not None,
            "payment_method_types": ["card"],
            "metadata": {**metadata, IDEMPOTENCY_KEY: idempotency_key},
            "expand": CHARGE,
        }
        if card_number is not None:
            payment_method = self._test_payment_method(card_number)
            if payment_method is None:
                params["payment_method_data"] = {"type": "card", "card": {"number": card_number}}
        if payment_method is not None:
            params["payment_method"] = payment_method
        intent = await self._answer("post", INTENTS, params, idempotency_key)
        return payment_of(intent)

    def _test_payment_method(self, card_number: str) -> str | None:
        if not self.test_payment_methods:
            return None
        known = cards.TEST_CARDS.get(cards.normalized(card_number))
        return known.payment_method if known else None

    async def capture(
        self, payment_id: str, amount: int | None = None, *, idempotency_key: str
    ) -> Payment:
        params: dict[str, Any] = {"expand": CHARGE}
        if amount is not None:
            params["amount_to_capture"] = amount
        path = f"{INTENTS}/{_quoted(payment_id)}/capture"
        return payment_of(await self._answer("post", path, params, idempotency_key))

    async def void(self, payment_id: str, *, idempotency_key: str) -> Payment:
        path = f"{INTENTS}/{_quoted(payment_id)}/cancel"
        try:
            intent = await self._answer("post", path, {"expand": CHARGE}, idempotency_key)
        except PaymentStateError:
            current = await self.get(payment_id)
            if current.state in (MoneyState.RELEASED, MoneyState.EXPIRED):
                return current  # already free: what a void is for
            raise
        return payment_of(intent)

    async def refund(
        self, payment_id: str, amount: int | None = None, *, reason: str, idempotency_key: str
    ) -> RefundRecord:
        params: dict[str, Any] = {
            "payment_intent": payment_id,
            "reason": "requested_by_customer",
            "metadata": {REFUND_REASON: reason[:MAX_REASON]},
        }
        if amount is not None:
            params["amount"] = amount
        return refund_of(await self._answer("post", REFUNDS, params, idempotency_key))

    async def get(self, payment_id: str) -> Payment:
        path = f"{INTENTS}/{_quoted(payment_id)}"
        return payment_of(await self._answer("get", path, {"expand": CHARGE}))

    async def find(self, idempotency_key: str) -> Payment | None:
        """By Stripe's search on the metadata ``authorize`` wrote. Real Stripe's search
        index lags (up to a minute, it says: `search_lag`), so a miss says nothing for
        that long; the local provider's search never lags."""
        quoted = idempotency_key.replace("\\", "\\\\").replace("'", "\\'")
        query = f"metadata['{IDEMPOTENCY_KEY}']:'{quoted}'"
        params = {"query": query, "limit": 10, "expand": LIST_CHARGES}
        found = await self._answer("get", f"{INTENTS}/search", params)
        matches = [payment_of(intent) for intent in found["data"]]
        matches = [
            p for p in matches if p.idempotency_key == idempotency_key and not p.is_placeholder
        ]
        return min(matches, key=lambda p: p.created) if matches else None

    async def list_payments(
        self, *, limit: int = 100, starting_after: str | None = None
    ) -> Page[Payment]:
        params: dict[str, Any] = {"limit": limit, "expand": LIST_CHARGES}
        if starting_after is not None:
            params["starting_after"] = starting_after
        found = await self._answer("get", INTENTS, params)
        return Page(tuple(payment_of(intent) for intent in found["data"]), bool(found["has_more"]))

    async def list_refunds(
        self,
        *,
        limit: int = 100,
        starting_after: str | None = None,
        payment_id: str | None = None,
    ) -> Page[RefundRecord]:
        params: dict[str, Any] = {"limit": limit}
        if starting_after is not None:
            params["starting_after"] = starting_after
        if payment_id is not None:
            params["payment_intent"] = payment_id
        found = await self._answer("get", REFUNDS, params)
        return Page(tuple(refund_of(refund) for refund in found["data"]), bool(found["has_more"]))


_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))


def _header(key: str) -> str:
    """An idempotency key as its header can carry it: HTTP headers are Latin-1, and a key
    holds the order number, which an exercise client may write in any script. Characters
    past ASCII go percent-encoded (UTF-8); an ASCII key, every key so far, is sent as it
    is. Two keys of different runs never meet: each holds its run's id."""
    return key if key.isascii() else urllib.parse.quote(key, safe=_PRINTABLE_ASCII)


def _quoted(object_id: str) -> str:
    return urllib.parse.quote(object_id, safe="")
