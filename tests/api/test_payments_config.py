"""``GET /payments/config``: where the order page trades the card number for a token.

The answer names the payment provider's base URL as a browser reaches it and a
publishable key, never a secret; the page's Content-Security-Policy lets it connect to
that origin and no other. With real Stripe (``STRIPE_API_KEY`` alone) the page cannot
tokenize (Stripe.js would be needed): the answer says so and the policy stays 'self'.
The app runs in this process; Temporal is never reached.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pizzeria.api.app import ApiSettings, create_app
from pizzeria.api.auth import Keys
from pizzeria.api.hosts import HOSTS_ENV
from pizzeria.api.public import BROWSER_URL_VARIABLE, PUBLISHABLE_KEY_VARIABLE
from pizzeria.ops.processes import free_port
from pizzeria.payments import process
from pizzeria.payments.stripe_gateway import KEY_VARIABLE, URL_VARIABLE
from pizzeria.samples import BAD_CARD
from tests.helpers.api_stack import STAFF_KEY
from tests.helpers.orders import GOOD_SECRET

pytestmark = pytest.mark.timeout(120)

SECRET_KEY = "sk_test_never_shown_to_a_browser_0123"
Asking = Callable[..., AbstractAsyncContextManager[tuple[dict[str, Any], str]]]


@pytest.fixture
def asking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Asking:
    """``async with asking(VARIABLE=value, ...) as (config, connect_src)``: the API started
    in this process under that environment (None unsets), its answer to GET
    /payments/config and the connect-src of its page's policy."""
    for name in (URL_VARIABLE, KEY_VARIABLE, PUBLISHABLE_KEY_VARIABLE, BROWSER_URL_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(HOSTS_ENV, raising=False)
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path))

    @asynccontextmanager
    async def asked(**env: str | None) -> AsyncIterator[tuple[dict[str, Any], str]]:
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        async with served(tmp_path) as http:
            yield await config_and_connect_src(http)

    return asked


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API, started in this process under the environment as it is, and a client."""
    settings = ApiSettings(
        Keys(GOOD_SECRET.encode(), STAFF_KEY),
        address=f"127.0.0.1:{free_port()}",  # lazy: never connected to here
        ledger_location=str(tmp_path / "ledger.db"),
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        yield http


def tokens_at(url: str) -> dict[str, Any]:
    """The config of a page that tokenizes at the local provider at ``url``."""
    return {
        "tokenize": True,
        "provider_url": url,
        "publishable_key": process.LOCAL_PUBLISHABLE_KEY,
        "why": None,
    }


async def config_and_connect_src(http: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """GET /payments/config, and the connect-src of the page's policy asked after it."""
    answer = await http.get("/payments/config")
    assert answer.status_code == 200, answer.text
    page = await http.get("/")
    assert SECRET_KEY not in answer.text and SECRET_KEY not in str(page.headers)
    policy = page.headers["content-security-policy"]
    found = re.search(r"connect-src ([^;]*);", policy)
    assert found is not None, policy
    return answer.json(), found.group(1)


async def test_with_the_local_provider_the_page_tokenizes_there_and_may_connect_to_it_only(
    asking: Asking, provider: process.ProviderProcess
) -> None:
    async with asking(**{URL_VARIABLE: provider.url}) as (config, connect_src):
        assert config == tokens_at(provider.url)
        assert connect_src == f"'self' {provider.url}"
    # What the page then does with it: the number goes there, a token comes back.
    async with httpx.AsyncClient() as browser:
        token = await browser.post(
            f"{config['provider_url']}/v1/payment_methods",
            data={"type": "card", "card[number]": "4242424242424242"},
            headers={"Authorization": f"Bearer {config['publishable_key']}"},
        )
    assert token.status_code == 200, token.text
    assert token.json()["id"].startswith("pm_") and token.json()["card"]["last4"] == "4242"


async def test_without_a_url_it_is_the_data_folders_provider_once_it_proves_it_and_where_it_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: process.ProviderProcess
) -> None:
    """The folder's provider is followed at each ask, as the workers follow it; a provider
    of another folder (a stranger on the port) gets no card number: it cannot prove that
    it holds this folder's payments.secret."""
    for name in (URL_VARIABLE, KEY_VARIABLE, PUBLISHABLE_KEY_VARIABLE, BROWSER_URL_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path))
    url_file = tmp_path / "payments.url"
    own: process.ProviderProcess | None = None
    try:
        async with served(tmp_path) as http:
            config, connect_src = await config_and_connect_src(http)  # no payments.url yet
            assert config["tokenize"] is False and connect_src == "'self'"
            assert "no local payment provider runs for the data folder" in config["why"]
            own = process.start(tmp_path / "payments.db")  # the folder's: it writes its URL
            assert url_file.read_text() == own.url + "\n"
            config, connect_src = await config_and_connect_src(http)
            assert config == tokens_at(own.url)
            assert connect_src == f"'self' {own.url}"
            url_file.write_text(provider.url + "\n")  # another folder's provider
            config, connect_src = await config_and_connect_src(http)
            assert config["tokenize"] is False and config["provider_url"] is None
            assert "is not this data folder's" in config["why"] and connect_src == "'self'"
    finally:
        if own is not None:
            own.stop()


async def test_a_url_file_others_could_have_written_sends_no_card_number_there(
    asking: Asking, tmp_path: Path
) -> None:
    planted = tmp_path / "payments.url"
    planted.write_text("http://127.0.0.1:18092\n")
    planted.chmod(0o666)
    async with asking() as (config, connect_src):
        assert config["tokenize"] is False and config["provider_url"] is None
        assert "can be written by others" in config["why"]
        assert connect_src == "'self'"


async def test_with_real_stripe_the_page_does_not_tokenize_and_connects_to_itself_only(
    asking: Asking,
) -> None:
    async with asking(**{KEY_VARIABLE: SECRET_KEY}) as (config, connect_src):
        assert config["tokenize"] is False
        assert config["provider_url"] is None and config["publishable_key"] is None
        assert "Stripe.js" in config["why"]
        assert connect_src == "'self'"


async def test_another_provider_needs_its_publishable_key_and_never_gets_a_secret_one(
    asking: Asking,
) -> None:
    other = {URL_VARIABLE: "https://payments.example.com:8443", KEY_VARIABLE: SECRET_KEY}
    async with asking(**other) as (config, connect_src):
        assert config["tokenize"] is False
        assert PUBLISHABLE_KEY_VARIABLE in config["why"]
        assert connect_src == "'self'"
    async with asking(**other, **{PUBLISHABLE_KEY_VARIABLE: SECRET_KEY}) as (config, connect):
        assert config["tokenize"] is False and config["publishable_key"] is None
        assert "not a publishable key" in config["why"]
        assert connect == "'self'"
    async with asking(**other, **{PUBLISHABLE_KEY_VARIABLE: "pk_test_theirs"}) as (config, src):
        assert config["tokenize"] is True
        assert config["provider_url"] == "https://payments.example.com:8443"
        assert config["publishable_key"] == "pk_test_theirs"
        assert src == "'self' https://payments.example.com:8443"


async def test_the_browser_may_reach_the_provider_under_another_address(asking: Asking) -> None:
    workers = {URL_VARIABLE: "http://127.0.0.1:8091"}
    given = {**workers, BROWSER_URL_VARIABLE: "https://pay.pizzeria.example/stripe/"}
    async with asking(**given) as (config, connect_src):
        assert config["provider_url"] == "https://pay.pizzeria.example/stripe"
        assert connect_src == "'self' https://pay.pizzeria.example"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://user:secret@pay.example",
        "http://pay.example; script-src *",
        "http://pay.example/?q=1",
        "ftp://pay.example",
    ],
)
async def test_a_url_the_policy_cannot_name_exactly_turns_tokens_off(
    asking: Asking, url: str
) -> None:
    async with asking(**{URL_VARIABLE: "http://127.0.0.1:8091", BROWSER_URL_VARIABLE: url}) as (
        config,
        connect_src,
    ):
        assert config["tokenize"] is False and config["provider_url"] is None
        assert BROWSER_URL_VARIABLE in config["why"] and url not in config["why"]
        assert connect_src == "'self'"


async def test_the_document_describes_the_config_and_anyone_may_ask(asking: Asking) -> None:
    app = create_app(
        ApiSettings(Keys(GOOD_SECRET.encode(), STAFF_KEY), address=f"127.0.0.1:{free_port()}")
    )
    document = app.openapi()
    route = document["paths"]["/payments/config"]["get"]
    assert route["operationId"] == "payments_config" and "security" not in route
    schema = document["components"]["schemas"]["PaymentsConfig"]
    assert set(schema["properties"]) == {"tokenize", "provider_url", "publishable_key", "why"}


async def test_the_exercises_bad_card_gets_a_token_that_the_hold_refuses_as_invalid(
    provider: process.ProviderProcess,
) -> None:
    """The page sends the API no number: the exercise's 15-digit card, tokenized, must
    still fail at the hold as the number itself does, so the saga undoes its order."""
    async with httpx.AsyncClient(base_url=provider.url) as http:
        token = await http.post(
            "/v1/payment_methods",
            data={"type": "card", "card[number]": BAD_CARD},
            headers={"Authorization": f"Bearer {process.LOCAL_PUBLISHABLE_KEY}"},
        )
        assert token.status_code == 200, token.text
        assert token.json()["card"]["last4"] == BAD_CARD[-4:]
        hold = await http.post(
            "/v1/payment_intents",
            data={
                "amount": "3500",
                "currency": "usd",
                "capture_method": "manual",
                "confirm": "true",
                "payment_method": token.json()["id"],
            },
            headers={"Authorization": f"Bearer {process.LOCAL_SECRET_KEY}"},
        )
        assert hold.status_code == 402
        error = hold.json()["error"]
        assert (error["code"], error["message"]) == (
            "incorrect_number",
            "Invalid credit card number",
        )
        assert error["payment_intent"]["status"] == "requires_payment_method"  # nothing held
        # Not a card number's shape at all: refused at once, as before.
        letters = await http.post(
            "/v1/payment_methods",
            data={"type": "card", "card[number]": "4242abcd"},
            headers={"Authorization": f"Bearer {process.LOCAL_PUBLISHABLE_KEY}"},
        )
        assert letters.status_code == 402 and letters.json()["error"]["code"] == "incorrect_number"
