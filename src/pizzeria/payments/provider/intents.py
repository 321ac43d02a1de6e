"""PaymentIntents: create-and-confirm (a hold, or a decline), capture, cancel, expiry,
retrieve, list and search, as Stripe answers them."""

from __future__ import annotations

import re
from typing import Any

from pizzeria.payments.port import ORDER_NUMBER
from pizzeria.payments.provider import objects
from pizzeria.payments.provider.objects import PAYMENT_INTENT, Context
from pizzeria.payments.provider.store import Row
from pizzeria.payments.provider.wire import (
    ApiError,
    Params,
    bool_param,
    choice_param,
    expand_param,
    int_param,
    invalid,
    limit_param,
    metadata_param,
    reject_unknown,
    text_param,
)

MINIMUM_AMOUNT = 50  # Stripe's minimum charge in usd cents
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
CREATE_PARAMS = {
    "amount",
    "currency",
    "capture_method",
    "confirm",
    "payment_method",
    "payment_method_data",
    "payment_method_types",
    "metadata",
    "description",
    "expand",
}
_SEARCH_CLAUSE = re.compile(
    r"""^(?:metadata\['([A-Za-z0-9_\-]{1,40})'\]|(status)):'((?:[^'\\]|\\.)*)'$"""
)


def render(
    ctx: Context, body: dict[str, Any], expand: list[str], prefix: str = ""
) -> dict[str, Any]:
    """The intent as answered: ``latest_charge`` expanded when asked."""
    if f"{prefix}latest_charge" in expand and body.get("latest_charge"):
        return {**body, "latest_charge": objects.charge_of(ctx, body["latest_charge"])}
    return body


def intent_of(ctx: Context, intent_id: str) -> Row:
    return objects.stored(ctx, PAYMENT_INTENT, intent_id, param="intent")


def create(ctx: Context, params: Params) -> dict[str, Any]:
    """``POST /v1/payment_intents``. With ``confirm=true``: a hold (manual capture), a
    payment (automatic capture), or a 402 decline carrying the failed intent. Without it,
    and without a card: an intent that holds nothing (``requires_payment_method``)."""
    reject_unknown(params, CREATE_PARAMS)
    amount = int_param(params, "amount", required=True)
    assert amount is not None
    if amount < MINIMUM_AMOUNT:
        raise invalid("Amount must be at least $0.50 usd", param="amount", code="amount_too_small")
    if text_param(params, "currency", required=True) != "usd":
        raise invalid("This provider only accepts currency=usd", param="currency")
    manual = choice_param(params, "capture_method", ("manual", "automatic")) == "manual"
    types = params.get("payment_method_types", ["card"])
    if types != ["card"]:
        raise invalid("This provider only accepts payment_method_types=[card]")
    metadata = metadata_param(params)
    if bool_param(params, "confirm") is not True:
        return _unconfirmed(ctx, params, amount, metadata, manual=manual)
    method = _method(ctx, params)
    if "payment_method" in params:  # a token made earlier (one made now is new)
        _refuse_reuse(ctx, method, metadata)
    decline = objects.decline_of(method)
    intent = _new_intent(ctx, params, amount, metadata, method, manual=manual)
    charge = objects.new_charge(
        ctx, intent["id"], amount, method, captured=not manual, decline=decline, metadata=metadata
    )
    intent["latest_charge"] = charge["id"]
    expand = expand_param(params)
    if decline is not None:
        raise _declined(ctx, intent, method, charge["id"], objects.card_error(decline), expand)
    expires_at = ctx.now + ctx.hold_seconds if manual else None
    ctx.store.insert(PAYMENT_INTENT, intent, created=ctx.now, expires_at=expires_at)
    return render(ctx, intent, expand)


def _declined(
    ctx: Context,
    intent: dict[str, Any],
    method: Row,
    charge_id: str,
    error: ApiError,
    expand: list[str],
) -> ApiError:
    """The card's 402, the failed intent kept and carried in it."""
    intent.update(status="requires_payment_method", amount_capturable=0)
    intent["last_payment_error"] = {**error.body()["error"], "payment_method": method.body}
    ctx.store.insert(PAYMENT_INTENT, intent, created=ctx.now)
    error.extra = {
        "payment_intent": render(ctx, intent, expand),
        "payment_method": method.body,
        "charge": charge_id,
    }
    return error


def _unconfirmed(
    ctx: Context, params: Params, amount: int, metadata: dict[str, str], *, manual: bool
) -> dict[str, Any]:
    """An intent nobody confirmed: no card, no charge, nothing held (Stripe's
    ``requires_payment_method``); it can only be canceled here."""
    if "payment_method" in params or "payment_method_data" in params:
        raise invalid("This provider takes a card only to confirm: send confirm=true with it")
    intent = _new_intent(ctx, params, amount, metadata, None, manual=manual)
    intent.update(status="requires_payment_method", amount_capturable=0, amount_received=0)
    ctx.store.insert(PAYMENT_INTENT, intent, created=ctx.now)
    return render(ctx, intent, expand_param(params))


def _method(ctx: Context, params: Params) -> Row:
    given = text_param(params, "payment_method")
    data = params.get("payment_method_data")
    if (given is None) == (data is None):
        raise invalid("Send exactly one of payment_method and payment_method_data")
    if given is not None:
        return objects.payment_method_of(ctx, given)
    if not isinstance(data, dict):
        raise invalid("Invalid payment_method_data: a hash", param="payment_method_data")
    return objects.create_payment_method(ctx, data, "payment_method_data")


def _refuse_reuse(ctx: Context, method: Row, metadata: dict[str, str]) -> None:
    """A card token (a PaymentMethod made from a card, not attached to a customer) pays
    for one order, as at Stripe: the page's token cannot pay for a second order. The same
    order may use it again (its hold, expired, authorized again)."""
    if method.seq == 0:
        return  # one of Stripe's test ids (pm_card_visa): a new card each time
    used, _ = ctx.store.search(PAYMENT_INTENT, [("$.payment_method", method.id)], limit=1)
    order = metadata.get(ORDER_NUMBER)
    if used and (order is None or used[0].body["metadata"].get(ORDER_NUMBER) != order):
        raise invalid(
            "The provided PaymentMethod was previously used with a PaymentIntent without "
            "Customer attachment: it may not be used again",
            param="payment_method",
            code="payment_method_unexpected_state",
        )


def _new_intent(
    ctx: Context,
    params: Params,
    amount: int,
    metadata: dict[str, str],
    method: Row | None,
    *,
    manual: bool,
) -> dict[str, Any]:
    intent_id = objects.new_id("pi")
    return {
        "id": intent_id,
        "object": PAYMENT_INTENT,
        "amount": amount,
        "amount_capturable": amount if manual else 0,
        "amount_received": 0 if manual else amount,
        "currency": "usd",
        "capture_method": "manual" if manual else "automatic",
        "confirmation_method": "automatic",
        "client_secret": f"{intent_id}_secret_{objects.new_id('s')[2:]}",
        "created": int(ctx.now),
        "canceled_at": None,
        "cancellation_reason": None,
        "description": text_param(params, "description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": metadata,
        "payment_method": method.id if method else None,
        "payment_method_types": ["card"],
        "status": "requires_capture" if manual else "succeeded",
    }


def capture(ctx: Context, intent_id: str, params: Params) -> dict[str, Any]:
    reject_unknown(params, {"amount_to_capture", "expand", "metadata"})
    row = intent_of(ctx, intent_id)
    intent = row.body
    if intent["status"] != "requires_capture":
        raise _unexpected(
            intent,
            f"This PaymentIntent could not be captured because it has a status of "
            f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
            "may be captured: requires_capture.",
        )
    amount = int_param(params, "amount_to_capture") or intent["amount_capturable"]
    if amount > intent["amount_capturable"]:
        raise invalid(
            f"The amount to capture ({amount}) is greater than the amount capturable "
            f"({intent['amount_capturable']}).",
            param="amount_to_capture",
            code="amount_too_large",
        )
    intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
    if "metadata" in params:
        intent["metadata"] = {**intent["metadata"], **metadata_param(params)}
    charge = objects.charge_of(ctx, intent["latest_charge"])
    charge.update(captured=True, amount_captured=amount)
    ctx.store.update(charge)
    ctx.store.update(intent, expires_at=None)
    return render(ctx, intent, expand_param(params))


def cancel(ctx: Context, intent_id: str, params: Params) -> dict[str, Any]:
    reject_unknown(params, {"cancellation_reason", "expand"})
    reason = choice_param(params, "cancellation_reason", CANCELLATION_REASONS)
    intent = intent_of(ctx, intent_id).body
    if intent["status"] not in CANCELABLE:
        raise _unexpected(
            intent,
            f"You cannot cancel this PaymentIntent because it has a status of "
            f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
            f"may be canceled: {', '.join(CANCELABLE)}.",
        )
    _cancel(ctx, intent, reason, int(ctx.now))
    return render(ctx, intent, expand_param(params))


def _cancel(ctx: Context, intent: dict[str, Any], reason: str | None, at: int) -> None:
    intent.update(
        status="canceled", canceled_at=at, cancellation_reason=reason, amount_capturable=0
    )
    ctx.store.update(intent, expires_at=None)


def _unexpected(intent: dict[str, Any], message: str) -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        message,
        code="payment_intent_unexpected_state",
        extra={"payment_intent": intent},
    )


def expire_due(ctx: Context) -> list[str]:
    """Cancel the holds whose time is up (``cancellation_reason`` ``automatic``, at the
    moment they expired). Returns their ids."""
    expired = []
    for row in ctx.store.due_holds(ctx.now):
        if row.body["status"] == "requires_capture":
            assert row.expires_at is not None
            _cancel(ctx, row.body, "automatic", int(row.expires_at))
            expired.append(row.id)
    return expired


def retrieve(ctx: Context, intent_id: str, params: Params) -> dict[str, Any]:
    reject_unknown(params, {"expand"})
    return render(ctx, intent_of(ctx, intent_id).body, expand_param(params))


def listing(ctx: Context, params: Params) -> dict[str, Any]:
    reject_unknown(params, {"limit", "starting_after", "expand"})
    before_seq = objects.page_start(ctx, PAYMENT_INTENT, params)
    rows, more = ctx.store.page(PAYMENT_INTENT, limit=limit_param(params), before_seq=before_seq)
    expand = expand_param(params)
    data = [render(ctx, row.body, expand, "data.") for row in rows]
    return objects.list_object("/v1/payment_intents", data, more)


def search(ctx: Context, params: Params) -> dict[str, Any]:
    """``query`` of ``metadata['key']:'value'`` and ``status:'value'`` clauses joined by
    ``AND``; paged by ``page`` (the ``next_page`` of the previous answer)."""
    reject_unknown(params, {"query", "limit", "page", "expand"})
    query = text_param(params, "query", required=True) or ""
    fields = []
    for clause in re.split(r"\s+AND\s+", query.strip()):
        match = _SEARCH_CLAUSE.match(clause.strip())
        if match is None:
            raise invalid(
                "This provider searches metadata['key']:'value' and status:'value' clauses "
                "joined by AND",
                param="query",
            )
        key, status, value = match.groups()
        path = "$.status" if status else f'$.metadata."{key}"'
        fields.append((path, re.sub(r"\\(.)", r"\1", value)))
    page = text_param(params, "page")
    if page is not None and not page.isdigit():
        raise invalid("Invalid page", param="page")
    rows, more = ctx.store.search(
        PAYMENT_INTENT, fields, limit=limit_param(params), before_seq=int(page) if page else None
    )
    expand = expand_param(params)
    return {
        "object": "search_result",
        "url": "/v1/payment_intents/search",
        "has_more": more,
        "next_page": str(rows[-1].seq) if more else None,
        "data": [render(ctx, row.body, expand, "data.") for row in rows],
    }
