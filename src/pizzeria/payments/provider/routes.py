"""The provider's endpoints: which request is which operation, and who may call it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pizzeria.payments import cards
from pizzeria.payments.provider import intents, objects, refunds
from pizzeria.payments.provider.objects import Context
from pizzeria.payments.provider.wire import ApiError, Params

Handler = Callable[[Context, Params, str], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str  # the name faults use (see `faults.OPERATIONS`)
    handler: Handler
    publishable: bool = False  # a publishable key (pk_test_...) may call it

    @property
    def mutating(self) -> bool:
        return self.method == "POST"


def _route(
    method: str, path: str, operation: str, handler: Handler, publishable: bool = False
) -> Route:
    regex = "^" + path.replace("{id}", r"(?P<id>[A-Za-z0-9_]+)") + "$"
    return Route(method, re.compile(regex), operation, handler, publishable)


ROUTES = (
    _route("POST", "/v1/payment_intents", "authorize", lambda c, p, _: intents.create(c, p)),
    _route("GET", "/v1/payment_intents", "list", lambda c, p, _: intents.listing(c, p)),
    _route("GET", "/v1/payment_intents/search", "search", lambda c, p, _: intents.search(c, p)),
    _route(
        "GET", "/v1/payment_intents/{id}", "retrieve", lambda c, p, i: intents.retrieve(c, i, p)
    ),
    _route(
        "POST",
        "/v1/payment_intents/{id}/capture",
        "capture",
        lambda c, p, i: intents.capture(c, i, p),
    ),
    _route(
        "POST", "/v1/payment_intents/{id}/cancel", "void", lambda c, p, i: intents.cancel(c, i, p)
    ),
    _route("POST", "/v1/refunds", "refund", lambda c, p, _: refunds.create(c, p)),
    _route("GET", "/v1/refunds", "list", lambda c, p, _: refunds.listing(c, p)),
    _route("GET", "/v1/refunds/{id}", "retrieve", lambda c, p, i: refunds.retrieve(c, i, p)),
    _route(
        "POST",
        "/v1/payment_methods",
        "payment_method",
        lambda c, p, _: payment_method(c, p),
        publishable=True,
    ),
    _route(
        "GET",
        "/v1/payment_methods/{id}",
        "retrieve",
        lambda c, p, i: refunds.retrieve_payment_method(c, i, p),
    ),
    _route("GET", "/v1/charges/{id}", "retrieve", lambda c, p, i: refunds.retrieve_charge(c, i, p)),
)


#: A number of a card number's shape (the API's own rule, order_fields.validate_card).
CARD_SHAPED = re.compile(r"[0-9]{12,19}")


def payment_method(ctx: Context, params: Params) -> dict[str, Any]:
    """``POST /v1/payment_methods``. Where Stripe refuses a number that is no card number
    (the exercise's 15-digit card, a failed checksum) with ``incorrect_number`` at once,
    the provider gives it a token that the hold then refuses so, as it refuses the number
    itself: the order page, which sends only tokens to the API, places the exercise's bad
    card as the exercise's clients do, and its order fails at the card and is undone.
    Anything not shaped like a card number is still refused here."""
    try:
        return refunds.create_payment_method(ctx, params)
    except ApiError as error:
        card = params.get("card")
        number = card.get("number") if isinstance(card, dict) else None
        if error.code != cards.INVALID_NUMBER_CODE or not isinstance(number, str):
            raise
        number = cards.normalized(number)
        if not CARD_SHAPED.fullmatch(number):
            raise
    return objects.store_payment_method(ctx, number, cards.INVALID_NUMBER).body


def match(method: str, path: str) -> tuple[Route, str] | None:
    """The route of a request and the object id in its path ("" when none)."""
    for route in ROUTES:
        found = route.pattern.match(path)
        if found and route.method == method:
            return route, found.groupdict().get("id") or ""
    return None
