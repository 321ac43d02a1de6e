"""Stripe's objects as the provider builds them: ids, PaymentMethods, charges, refunds,
lists. PaymentIntents are built in `intents`."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

from pizzeria.payments import cards
from pizzeria.payments.provider.store import Row, Store
from pizzeria.payments.provider.wire import ApiError, Params, invalid, missing, text_param

_ALPHABET = string.ascii_letters + string.digits
#: Random bytes from this one up are drawn again: below it, each character is as likely.
_WHOLE = 256 - 256 % len(_ALPHABET)
PAYMENT_METHOD = "payment_method"
CHARGE = "charge"
PAYMENT_INTENT = "payment_intent"
REFUND = "refund"


@dataclass(frozen=True)
class Context:
    """What one request works with: the store (its lock held), the time, the settings."""

    store: Store
    now: float
    hold_seconds: float
    #: The key of the card and idempotency fingerprints (`Provider.secret`).
    secret: bytes


def new_id(prefix: str) -> str:
    """``prefix_`` and 24 characters of `_ALPHABET`, each drawn uniformly from one random
    byte (bytes past the last whole multiple of the alphabet are drawn again): one read
    of the system's randomness, not one per character."""
    chosen: list[str] = []
    while len(chosen) < 24:
        chosen += [_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(32) if b < _WHOLE]
    return prefix + "_" + "".join(chosen[:24])


def list_object(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def stored(ctx: Context, kind: str, object_id: str, param: str | None = "id") -> Row:
    """The object ``object_id`` of ``kind``, or Stripe's 404 naming it."""
    found = ctx.store.get(kind, object_id)
    if found is None:
        raise missing(kind, object_id, param=param)
    return found


def page_start(ctx: Context, kind: str, params: Params) -> int | None:
    """Where a listing's page starts: below ``starting_after``'s object (None: the top)."""
    after = text_param(params, "starting_after")
    if after is None:
        return None
    before_seq = ctx.store.seq_of(kind, after)
    if before_seq is None:
        raise missing(kind, after, param="starting_after")
    return before_seq


# -- payment methods ------------------------------------------------------------------------


def card_error(decline: cards.Decline, param: str | None = None, **extra: Any) -> ApiError:
    return ApiError(
        402,
        "card_error",
        decline.message,
        code=decline.code,
        decline_code=decline.decline_code,
        param=param,
        extra=extra,
    )


def create_payment_method(ctx: Context, data: Params, prefix: str = "") -> Row:
    """A card PaymentMethod from ``type=card&card[number]=...`` (under ``prefix``, e.g.
    ``payment_method_data``): its verdict (a test card's decline) is kept for the
    confirmation; the number is not kept at all."""

    type_param = f"{prefix}[type]" if prefix else "type"
    number_param = f"{prefix}[card][number]" if prefix else "card[number]"
    if data.get("type") != "card":
        raise invalid("This provider only accepts type=card", param=type_param)
    card = data.get("card")
    if not isinstance(card, dict) or not isinstance(card.get("number"), str):
        raise invalid(
            "Missing required param: card[number].",
            param=number_param,
            code="parameter_missing",
        )
    number = cards.normalized(card["number"])
    if not cards.number_valid(number):
        raise card_error(cards.INVALID_NUMBER, param=number_param)
    expiry = _month(card.get("exp_month")), _year(card.get("exp_year"))
    return store_payment_method(ctx, number, cards.decline_of(number), *expiry)


def store_payment_method(
    ctx: Context,
    number: str,
    decline: cards.Decline | None,
    exp_month: int | None = None,
    exp_year: int | None = None,
) -> Row:
    """A new PaymentMethod of a card number, kept with the verdict its hold will get."""
    card = {
        "brand": cards.brand_of(number),
        "last4": number[-4:],
        "exp_month": exp_month,
        "exp_year": exp_year,
        "fingerprint": cards.fingerprint(number, ctx.secret),
        "funding": "credit",
        "country": "US",
    }
    body = payment_method_body(ctx, new_id("pm"), card)
    internal = {"decline": decline.__dict__ if decline else None}
    ctx.store.insert(PAYMENT_METHOD, body, created=ctx.now, internal=internal)
    return stored(ctx, PAYMENT_METHOD, body["id"])


def payment_method_body(ctx: Context, method_id: str, card: dict[str, Any]) -> dict[str, Any]:
    """A card PaymentMethod as the API shows it (``card``: never the number)."""
    return {
        "id": method_id,
        "object": PAYMENT_METHOD,
        "type": "card",
        "created": int(ctx.now),
        "livemode": False,
        "customer": None,
        "metadata": {},
        "card": card,
    }


def _month(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) <= 2 else None


def _year(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) <= 4 else None


def payment_method_of(ctx: Context, payment_method_id: str) -> Row:
    """A stored PaymentMethod, or one of Stripe's test ids (``pm_card_visa``...)."""
    found = ctx.store.get(PAYMENT_METHOD, payment_method_id)
    if found is not None:
        return found
    known = cards.TEST_PAYMENT_METHODS.get(payment_method_id)
    if known is None:
        raise missing("PaymentMethod", payment_method_id, param="payment_method")
    last4 = cards.TEST_PAYMENT_METHOD_LAST4[payment_method_id]
    card = {"brand": known.brand, "last4": last4, "exp_month": 12, "exp_year": 2034}
    body = payment_method_body(ctx, payment_method_id, card)
    decline = known.decline.__dict__ if known.decline else None
    return Row(
        0, payment_method_id, PAYMENT_METHOD, None, ctx.now, None, body, {"decline": decline}
    )


def decline_of(method: Row) -> cards.Decline | None:
    stored = method.internal.get("decline")
    return cards.Decline(**stored) if stored else None


# -- charges ----------------------------------------------------------------------------------


def new_charge(
    ctx: Context,
    intent_id: str,
    amount: int,
    method: Row,
    *,
    captured: bool,
    decline: cards.Decline | None,
    metadata: dict[str, str],
) -> dict[str, Any]:
    card = method.body["card"]
    body: dict[str, Any] = {
        "id": new_id("ch"),
        "object": CHARGE,
        "amount": amount,
        "amount_captured": amount if captured and decline is None else 0,
        "amount_refunded": 0,
        "captured": captured and decline is None,
        "refunded": False,
        "currency": "usd",
        "created": int(ctx.now),
        "livemode": False,
        "metadata": dict(metadata),
        "paid": decline is None,
        "payment_intent": intent_id,
        "payment_method": method.id,
        "payment_method_details": {
            "type": "card",
            "card": {key: card.get(key) for key in ("brand", "last4", "exp_month", "exp_year")},
        },
        "status": "failed" if decline else "succeeded",
        "failure_code": decline.code if decline else None,
        "failure_message": decline.message if decline else None,
        "outcome": {
            "type": "issuer_declined" if decline else "authorized",
            "reason": decline.decline_code if decline else None,
        },
    }
    ctx.store.insert(CHARGE, body, created=ctx.now, parent=intent_id)
    return body


def charge_of(ctx: Context, charge_id: str) -> dict[str, Any]:
    return stored(ctx, CHARGE, charge_id).body
