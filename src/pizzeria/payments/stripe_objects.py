"""Stripe's objects (a PaymentIntent, a Refund) as the payment port's `Payment` and
`RefundRecord`, from the JSON the provider answered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pizzeria.payments.port import CURRENCY, REFUND_REASON, MoneyState, Payment, RefundRecord


def payment_of(data: Mapping[str, Any]) -> Payment:
    """A Stripe PaymentIntent's JSON (its ``latest_charge`` expanded, or not) as a `Payment`."""
    status = str(data["status"])
    charge = data.get("latest_charge") if isinstance(data.get("latest_charge"), dict) else None
    captured = int(data.get("amount_received") or 0) if status == "succeeded" else 0
    refunded = int(charge.get("amount_refunded") or 0) if charge and captured else 0
    error = data.get("last_payment_error") or {}
    card = ((charge or {}).get("payment_method_details") or {}).get("card") or {}
    return Payment(
        id=str(data["id"]),
        state=_state(status, data.get("cancellation_reason"), captured, refunded, bool(error)),
        amount=int(data["amount"]),
        currency=str(data.get("currency") or CURRENCY),
        amount_capturable=int(data.get("amount_capturable") or 0),
        amount_captured=captured,
        amount_refunded=refunded,
        created=int(data.get("created") or 0),
        provider_status=status,
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        card_last4=card.get("last4"),
        cancellation_reason=data.get("cancellation_reason"),
        decline_code=error.get("decline_code") or error.get("code"),
        payment_method=_id_of(data.get("payment_method")),
        charge_captured=int(charge.get("amount_captured") or 0) if charge is not None else None,
    )


def _id_of(value: Any) -> str | None:
    """An object's id, whether Stripe answered it expanded (a dict) or as its id."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value else None


def _state(
    status: str, cancellation_reason: Any, captured: int, refunded: int, failed: bool
) -> MoneyState:
    if status == "requires_capture":
        return MoneyState.HELD
    if status == "succeeded":
        return MoneyState.REFUNDED if captured and refunded >= captured else MoneyState.CAPTURED
    if status == "canceled":
        return MoneyState.EXPIRED if cancellation_reason == "automatic" else MoneyState.RELEASED
    if status == "requires_payment_method" and failed:
        return MoneyState.DECLINED
    return MoneyState.PENDING


def refund_of(data: Mapping[str, Any]) -> RefundRecord:
    """A Stripe Refund's JSON as a `RefundRecord`."""
    metadata = {str(k): str(v) for k, v in (data.get("metadata") or {}).items()}
    return RefundRecord(
        id=str(data["id"]),
        payment_id=str(data.get("payment_intent") or ""),
        amount=int(data["amount"]),
        currency=str(data.get("currency") or CURRENCY),
        status=str(data.get("status") or ""),
        created=int(data.get("created") or 0),
        reason=metadata.get(REFUND_REASON) or data.get("reason"),
        metadata=metadata,
    )
