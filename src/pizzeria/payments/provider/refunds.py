"""Refunds (never beyond what was captured), and the PaymentMethods and charges endpoints."""

from __future__ import annotations

from typing import Any

from pizzeria.models import dollars
from pizzeria.payments.provider import objects, wire
from pizzeria.payments.provider.intents import intent_of
from pizzeria.payments.provider.objects import REFUND, Context
from pizzeria.payments.provider.wire import ApiError, Params

REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def create(ctx: Context, params: Params) -> dict[str, Any]:
    """``POST /v1/refunds`` for a ``payment_intent`` (or its ``charge``)."""
    wire.reject_unknown(
        params, {"payment_intent", "charge", "amount", "reason", "metadata", "expand"}
    )
    intent = _intent(ctx, params)
    if intent["status"] != "succeeded":
        raise ApiError(
            400,
            "invalid_request_error",
            f"This PaymentIntent has a status of {intent['status']}: only a captured payment "
            "can be refunded (cancel a PaymentIntent that requires_capture to release it).",
            code="payment_intent_unexpected_state",
            extra={"payment_intent": intent},
        )
    charge = objects.charge_of(ctx, intent["latest_charge"])
    left = charge["amount_captured"] - charge["amount_refunded"]
    if left <= 0:
        raise wire.invalid(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    amount = wire.int_param(params, "amount") or left
    if amount > left:
        raise wire.invalid(
            f"Refund amount ({dollars(amount)}) is greater than unrefunded amount on charge "
            f"({dollars(left)})",
            param="amount",
            code="amount_too_large",
        )
    refund = {
        "id": objects.new_id("re"),
        "object": REFUND,
        "amount": amount,
        "currency": "usd",
        "charge": charge["id"],
        "payment_intent": intent["id"],
        "created": int(ctx.now),
        "metadata": wire.metadata_param(params),
        "reason": wire.choice_param(params, "reason", REFUND_REASONS),
        "status": "succeeded",
    }
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
    ctx.store.update(charge)
    ctx.store.insert(REFUND, refund, created=ctx.now, parent=intent["id"])
    return refund


def _intent(ctx: Context, params: Params) -> dict[str, Any]:
    intent_id = wire.text_param(params, "payment_intent")
    charge_id = wire.text_param(params, "charge")
    if (intent_id is None) == (charge_id is None):
        raise wire.invalid(
            "Send exactly one of payment_intent and charge", code="parameter_missing"
        )
    if intent_id is None:
        assert charge_id is not None
        intent_id = objects.charge_of(ctx, charge_id)["payment_intent"]
    return intent_of(ctx, intent_id).body


def retrieve(ctx: Context, refund_id: str, params: Params) -> dict[str, Any]:
    wire.reject_unknown(params, {"expand"})
    return objects.stored(ctx, REFUND, refund_id).body


def listing(ctx: Context, params: Params) -> dict[str, Any]:
    wire.reject_unknown(params, {"limit", "starting_after", "payment_intent", "charge", "expand"})
    before_seq = objects.page_start(ctx, REFUND, params)
    parent = wire.text_param(params, "payment_intent")
    charge_id = wire.text_param(params, "charge")
    if charge_id is not None:
        parent = objects.charge_of(ctx, charge_id)["payment_intent"]
    rows, more = ctx.store.page(
        REFUND, limit=wire.limit_param(params), before_seq=before_seq, parent=parent
    )
    return objects.list_object("/v1/refunds", [row.body for row in rows], more)


def create_payment_method(ctx: Context, params: Params) -> dict[str, Any]:
    """``POST /v1/payment_methods``: a browser (publishable key) trades a card number for a
    ``pm_...`` token; the number goes no further."""
    wire.reject_unknown(params, {"type", "card", "billing_details", "metadata", "expand"})
    return objects.create_payment_method(ctx, params).body


def retrieve_payment_method(ctx: Context, method_id: str, params: Params) -> dict[str, Any]:
    wire.reject_unknown(params, {"expand"})
    return objects.payment_method_of(ctx, method_id).body


def retrieve_charge(ctx: Context, charge_id: str, params: Params) -> dict[str, Any]:
    wire.reject_unknown(params, {"expand"})
    return objects.charge_of(ctx, charge_id)
