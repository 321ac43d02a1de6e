"""The stripe library's errors as the port's (`pizzeria.payments.errors`)."""

from __future__ import annotations

from typing import Any

import requests
import stripe

from pizzeria.payments.errors import (
    KEY_IN_USE,
    IdempotencyKeyReused,
    PaymentDeclined,
    PaymentError,
    PaymentInProgress,
    PaymentRequestError,
    PaymentStateError,
    PaymentUnavailable,
    no_provider_here,
)
from pizzeria.payments.loopback_http import NotConnected, NotTheProvider

#: Stripe's codes for "the payment is not in a state that allows this".
STATE_CODES = frozenset(
    {
        "payment_intent_unexpected_state",
        "charge_already_refunded",
        "charge_already_captured",
        "charge_expired_for_capture",
    }
)


def _error_body(error: stripe.StripeError) -> dict[str, Any]:
    body = error.json_body if isinstance(error.json_body, dict) else {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else {}


def _intent_of(body: dict[str, Any]) -> dict[str, Any]:
    intent = body.get("payment_intent")
    return intent if isinstance(intent, dict) else {}


def _never_sent(error: stripe.APIConnectionError) -> bool:
    """Whether the request surely never reached the provider (the connection itself was
    refused or timed out), so it cannot have taken effect."""
    cause = error.__cause__
    if isinstance(cause, NotConnected | requests.exceptions.ConnectTimeout):
        return True
    if isinstance(cause, requests.exceptions.ConnectionError):
        text = str(cause)
        return "NewConnectionError" in text or "Connection refused" in text
    return False


def translate(error: stripe.StripeError) -> PaymentError:
    """The port's error for a stripe library error."""
    message = " ".join((error.user_message or str(error)).split())  # one line, as said
    status = error.http_status
    body = _error_body(error)
    code = body.get("code") or error.code
    if isinstance(error, stripe.CardError):
        return PaymentDeclined(
            message,
            code=code,
            decline_code=body.get("decline_code"),
            payment_id=_intent_of(body).get("id"),
            http_status=status,
        )
    if isinstance(error, stripe.APIConnectionError) and isinstance(error.__cause__, NotTheProvider):
        return no_provider_here(str(error.__cause__))
    if isinstance(error, stripe.APIConnectionError):
        return PaymentUnavailable(
            f"the payment provider did not answer: {message}",
            outcome_unknown=not _never_sent(error),
        )
    if status == 409 or code == KEY_IN_USE:  # Stripe: "conflicts with another request"
        return PaymentInProgress(message, http_status=status)
    if isinstance(error, stripe.RateLimitError):
        return PaymentUnavailable(message, http_status=status, code=code, outcome_unknown=False)
    if isinstance(error, stripe.IdempotencyError):
        return IdempotencyKeyReused(message, code="idempotency_error", http_status=status)
    if isinstance(error, stripe.InvalidRequestError) and body.get("param") == "payment_method":
        # The customer's card token names no card, or paid for another order already: the
        # card is refused, as a declined one is (not retried, the order compensated), not
        # a request of ours to fix.
        return PaymentDeclined(message, code=code, http_status=status)
    if isinstance(error, stripe.InvalidRequestError) and code in STATE_CODES:
        intent = _intent_of(body)
        return PaymentStateError(
            message,
            code=code,
            payment_id=intent.get("id"),
            provider_status=intent.get("status"),
            http_status=status,
        )
    if isinstance(error, stripe.InvalidRequestError | stripe.AuthenticationError):
        return PaymentRequestError(message, code=code, http_status=status)
    if isinstance(error, stripe.PermissionError):
        return PaymentRequestError(message, code=code or "permission", http_status=status)
    # APIError: a 5xx, a body that is not Stripe's: the provider failed, not the request.
    return PaymentUnavailable(message, http_status=status, code=code)
