"""Which payment provider the workers move money through, by one rule for every command:
the given URL or ``PIZZERIA_PAYMENTS_URL``, ``STRIPE_API_KEY``, else the data folder's local
provider; and the gateway to it (`StripeGateway`), its address as it may be printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pizzeria.payments.errors import PaymentRequestError
from pizzeria.payments.process import LOCAL_SECRET_KEY
from pizzeria.payments.stripe_gateway import KEY_VARIABLE, URL_VARIABLE, StripeGateway
from pizzeria.private import UnsafeSecret


class ProviderConfigError(PaymentRequestError):
    """The payment provider configured cannot be used as given (one line for the user)."""


def configured_provider(
    environ: Mapping[str, str] | None = None, url: str | None = None
) -> tuple[str, str | None, Path | None]:
    """The key and the URL of the provider the workers move money through, by one rule for
    every command: ``url`` (given), else ``PIZZERIA_PAYMENTS_URL``, with ``STRIPE_API_KEY``
    (without a URL: Stripe's test mode); with no key, the data folder's local provider
    (its ``payments.url``, else the usual port) and its key. Third, with neither a URL nor
    a key, that ``payments.url``, for a gateway to follow (`StripeGateway`'s ``follow``).
    A URL that is not ``http(s)://HOST[:PORT]`` is a `ProviderConfigError`."""
    from pizzeria import config

    env = os.environ if environ is None else environ
    where = "" if url else f" (check {URL_VARIABLE})"
    url = url or env.get(URL_VARIABLE) or None
    key = env.get(KEY_VARIABLE) or None
    if key is not None and key.startswith(("sk_live_", "rk_live_")):
        raise ProviderConfigError(
            f"refusing the live Stripe key in {KEY_VARIABLE}: pizzeria moves test money "
            "only; use a test key, sk_test_..."
        )
    if key is not None and key.startswith("pk_"):
        raise ProviderConfigError(
            f"{KEY_VARIABLE} holds a publishable key (pk_...), which a browser uses: the "
            "workers need the secret one, sk_test_..."
        )
    follow = config.payments_url_file() if key is None and url is None else None
    if key is None:
        try:
            url, key = url or config.local_payments_url(), LOCAL_SECRET_KEY
        except UnsafeSecret as unsafe:
            raise ProviderConfigError(str(unsafe)) from None
    if url is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s]*)?$", url):
        raise ProviderConfigError(
            f"the payment provider's URL must be http(s)://HOST[:PORT], not {url!r}{where}"
        )
    return key, url, follow


def provider_gateway(
    environ: Mapping[str, str] | None = None, url: str | None = None, **options: Any
) -> StripeGateway:
    """A gateway to the provider `configured_provider` names (following the data folder's
    ``payments.url`` when it is the folder's own); ``options`` are `StripeGateway`'s."""
    key, url, follow = configured_provider(environ, url)
    return StripeGateway(key, url, follow=follow, **options)


def shown_url(gateway: object) -> str:
    """A gateway's address as it may be printed: no user or password (a URL may carry
    them, ``http://user:secret@host``)."""
    url = str(getattr(gateway, "base_url", "") or "the payment provider")
    return re.sub(r"^([a-z]+://)[^@/]*@", r"\1", url)


def gateway_from_env(environ: Mapping[str, str] | None = None) -> StripeGateway:
    """The gateway the environment names: ``PIZZERIA_PAYMENTS_URL`` (the local provider,
    or any Stripe-compatible base URL) and/or ``STRIPE_API_KEY``. With only the key, real
    Stripe; with only the URL, the local provider's default key."""
    env = os.environ if environ is None else environ
    url = env.get(URL_VARIABLE) or None
    key = env.get(KEY_VARIABLE) or (LOCAL_SECRET_KEY if url else None)
    if key is None:
        raise PaymentRequestError(
            f"no payment provider: set {URL_VARIABLE} (the local provider, `pizzeria "
            f"payments`) or {KEY_VARIABLE} (Stripe test mode)"
        )
    return StripeGateway(key, url)
