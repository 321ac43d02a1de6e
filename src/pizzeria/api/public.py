"""What anyone may ask: the order page, the menu, where the page tokenizes the card, and
whether the service is up."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from pizzeria import config, menu
from pizzeria.api.problems import ApiProblem, problem_responses
from pizzeria.api.schemas import Health, Menu, MenuSize, PaymentsConfig, Readiness
from pizzeria.payments.process import LOCAL_PUBLISHABLE_KEY
from pizzeria.payments.proof import proves, secret_file_beside
from pizzeria.payments.stripe_gateway import KEY_VARIABLE, URL_VARIABLE
from pizzeria.private import UnsafeSecret, read_private_file

STATIC = Path(__file__).parent / "static"
CHECK_SECONDS = 3.0
#: The publishable key (pk_...) of a Stripe-compatible provider named by
#: PIZZERIA_PAYMENTS_URL with STRIPE_API_KEY; the local provider's own by default.
PUBLISHABLE_KEY_VARIABLE = "STRIPE_PUBLISHABLE_KEY"
#: The provider's base URL as the customers' browsers reach it, when not the workers' URL.
BROWSER_URL_VARIABLE = "PIZZERIA_PAYMENTS_BROWSER_URL"
_PUBLISHABLE_KEY = re.compile(r"pk_[A-Za-z0-9_]{1,250}")
# What may stand in a Content-Security-Policy source: a host name, an IP, a port.
_NETLOC = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")

router = APIRouter()


@router.get("/", response_class=HTMLResponse, tags=["page"], operation_id="order_page")
async def page(request: Request) -> FileResponse:
    """The order page (its policy names the payment provider found now)."""
    await request.app.state.payments.current()
    return FileResponse(STATIC / "index.html", media_type="text/html")


def toppings() -> list[str]:
    """One name per ingredient ("extra cheese", not also "cheese"), as the menu lists them."""
    first: dict[str, str] = {}
    for name, ingredient in menu.TOPPINGS.items():
        first.setdefault(ingredient, name)
    return list(first.values())


@router.get(
    "/menu", operation_id="get_menu", summary="Sizes, prices and toppings", tags=["service"]
)
async def get_menu() -> Menu:
    return Menu(
        sizes=[
            MenuSize(size=size, price=price, portions=menu.PORTIONS_BY_SIZE[size])
            for size, price in menu.PRICE_BY_SIZE.items()
        ],
        toppings=toppings(),
        base=list(menu.BASE),
        discount_over=menu.DISCOUNT_THRESHOLD,
        discount=menu.DISCOUNT,
        max_items=menu.MAX_ITEMS,
    )


def payments_config(environ: Mapping[str, str] | None = None) -> PaymentsConfig:
    """Where the order page trades the card number for a token, by the workers' rule for
    the provider (`pizzeria.worker.payment_gateway`): ``PIZZERIA_PAYMENTS_URL`` and/or
    ``STRIPE_API_KEY``, else the data folder's local provider. Stripe itself (the key
    alone) tokenizes only through Stripe.js, which the page does not load: no tokens."""
    env = os.environ if environ is None else environ
    url = env.get(URL_VARIABLE) or None
    secret = env.get(KEY_VARIABLE) or None
    given_key = env.get(PUBLISHABLE_KEY_VARIABLE) or None
    if secret is not None and url is None:
        return no_tokens(
            "the payment provider is Stripe, whose tokenization needs Stripe.js, which this "
            "page does not load: the card number goes in the order, and from the worker to "
            "Stripe once, for the hold"
        )
    # The local provider takes any pk_test_ key; another provider needs its own.
    key = given_key or (LOCAL_PUBLISHABLE_KEY if secret is None else None)
    if key is None:
        return no_tokens(
            f"{PUBLISHABLE_KEY_VARIABLE} is not set: the publishable key (pk_...) of the "
            f"payment provider at {URL_VARIABLE}"
        )
    if not _PUBLISHABLE_KEY.fullmatch(key):
        return no_tokens(f"{PUBLISHABLE_KEY_VARIABLE} is not a publishable key (pk_...)")
    given_url = env.get(BROWSER_URL_VARIABLE) or None
    try:
        browser_url = (given_url or url or config.local_payments_url()).rstrip("/")
    except UnsafeSecret as unsafe:
        return no_tokens(str(unsafe))
    if origin_of(browser_url) is None:
        named = BROWSER_URL_VARIABLE if given_url else URL_VARIABLE
        return no_tokens(f"{named} is not an http(s)://host[:port] URL")
    return PaymentsConfig(tokenize=True, provider_url=browser_url, publishable_key=key, why=None)


def no_tokens(why: str) -> PaymentsConfig:
    return PaymentsConfig(tokenize=False, provider_url=None, publishable_key=None, why=why)


#: How long a provider's proof that it is the data folder's own is trusted before the
#: page's config asks it again.
PROOF_SECONDS = 5.0


class PagePayments:
    """Where the order page trades the card number for a token, as it is now.

    A provider named in the environment (``PIZZERIA_PAYMENTS_URL``, ``STRIPE_API_KEY``,
    ``PIZZERIA_PAYMENTS_BROWSER_URL``) is the operator's choice, read once. Otherwise it
    is the data folder's local provider, followed as the workers follow it: where its
    ``payments.url`` says at each ask, and only once it proved that it is the folder's
    own (`pizzeria.payments.proof`, asked again after `PROOF_SECONDS`), since a browser
    sends the card number there. With no such file, or a stranger on its port, the page
    sends the number in the order instead (``tokenize`` false, and why).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        named = (URL_VARIABLE, KEY_VARIABLE, BROWSER_URL_VARIABLE)
        self._fixed = None if not any(env.get(name) for name in named) else payments_config(env)
        self._key = env.get(PUBLISHABLE_KEY_VARIABLE) or LOCAL_PUBLISHABLE_KEY
        #: The URL asked last, when, and whether it proved itself the folder's provider.
        self._verdict: tuple[str, float, bool] | None = None
        self._asking = asyncio.Lock()
        #: The config given last: the page's policy names its provider's origin.
        self.last = self._fixed or no_tokens("the payment provider was not looked for yet")

    async def current(self) -> PaymentsConfig:
        if self._fixed is None:
            self.last = await self._followed()
        return self.last

    def origin(self) -> str | None:
        return provider_origin(self.last)

    async def _followed(self) -> PaymentsConfig:
        if not _PUBLISHABLE_KEY.fullmatch(self._key):
            return no_tokens(f"{PUBLISHABLE_KEY_VARIABLE} is not a publishable key (pk_...)")
        url_file = config.payments_url_file()
        try:
            url = read_private_file(url_file, "local payment provider's URL").strip().rstrip("/")
        except FileNotFoundError:
            return no_tokens(
                f"no local payment provider runs for the data folder {url_file.parent}: the "
                "card number goes in the order, and from the worker to the provider once, "
                "for the hold"
            )
        except (OSError, UnsafeSecret) as error:
            return no_tokens(str(error))
        if not url.startswith("http://") or origin_of(url) is None:
            return no_tokens(f"{url_file} holds no provider's URL")
        # One proof at a time, its verdict kept for PROOF_SECONDS either way: a flood of
        # page loads asks the provider (or a stranger that never answers) once.
        async with self._asking:
            seen = self._verdict
            if seen is None or seen[0] != url or time.monotonic() - seen[1] > PROOF_SECONDS:
                ours = await asyncio.to_thread(proves, url, secret_file_beside(url_file))
                self._verdict = seen = (url, time.monotonic(), ours)
        if not seen[2]:
            return no_tokens(
                f"the payment provider answering at {url} is not this data folder's (it "
                "cannot prove that it holds the folder's payments.secret): the card number "
                "goes in the order instead"
            )
        return PaymentsConfig(tokenize=True, provider_url=url, publishable_key=self._key, why=None)


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL without credentials, query or fragment:
    what the page's Content-Security-Policy lets it connect to. None for anything else."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    if not _NETLOC.fullmatch(parts.netloc) or not re.fullmatch(r"(/[A-Za-z0-9._~-]*)*", parts.path):
        return None
    return f"{scheme}://{parts.netloc}"


def provider_origin(payments: PaymentsConfig) -> str | None:
    """The origin the page may connect to besides its own, if it tokenizes."""
    return origin_of(payments.provider_url) if payments.tokenize and payments.provider_url else None


@router.get(
    "/payments/config",
    operation_id="payments_config",
    summary="Where the order page trades a card number for a token",
    description="The payment provider's base URL as a browser reaches it and its "
    "publishable key: the page posts the card number there (POST /v1/payment_methods) and "
    "sends only the token (pm_...) to POST /orders. tokenize is false (and why says why) "
    "when the page cannot: then it sends the number in the order. The data folder's own "
    "provider is followed where it moves, once it proved itself.",
    tags=["service"],
)
async def get_payments_config(request: Request) -> PaymentsConfig:
    payments: PagePayments = request.app.state.payments
    return await payments.current()


@router.get("/healthz", operation_id="healthz", summary="The process is up", tags=["service"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Temporal and the ledger answer",
    responses=problem_responses(503),
    tags=["service"],
)
async def readyz(request: Request) -> Readiness:
    temporal, ledger = await asyncio.gather(temporal_answer(request), ledger_answer(request))
    if temporal != "ok" or ledger != "ok":
        raise ApiProblem(503, f"not ready: Temporal {temporal}, ledger {ledger}", slug="not-ready")
    return Readiness(status="ready", temporal=temporal, ledger=ledger)


async def temporal_answer(request: Request) -> str:
    try:
        await request.app.state.client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=CHECK_SECONDS)
        )
    except Exception as error:  # any way of not answering counts as not ready
        return f"does not answer ({type(error).__name__})"
    return "ok"


async def ledger_answer(request: Request) -> str:
    try:
        await asyncio.wait_for(
            asyncio.to_thread(lambda: request.app.state.ledger.get().stock()), timeout=CHECK_SECONDS
        )
    except Exception as error:  # locked, gone, unreadable: all mean not ready
        return f"does not answer ({type(error).__name__})"
    return "ok"
