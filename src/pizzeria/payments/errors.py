"""What a payment call can fail with. Every error of the port is a `PaymentError`.

Three kinds matter to a caller, and each says what to do next:

* `PaymentDeclined`: the card's verdict (declined, insufficient funds, expired card, an
  invalid number). A business answer: asking again gives the same answer. Never retry.
* `PaymentUnavailable`: the provider could not be reached or failed (a refused or reset
  connection, a timeout, an answer lost on the way, a 5xx, a rate limit), or is still
  processing another request with the same key (`PaymentInProgress`). Retry with the
  SAME idempotency key: the provider then does the operation at most once.
  ``outcome_unknown`` says whether the request may have taken effect.
* `PaymentStateError`: the payment is not in a state that allows the operation (the hold
  expired or was released before the capture, a capture after a capture, a void after a
  capture, a refund of a hold). Retrying cannot help; the payment's state decides.

`PaymentRequestError` is the rest: a request the provider refuses as such (a refund
larger than what is left of the capture, an unknown payment, a wrong API key, an
idempotency key reused with other parameters: `IdempotencyKeyReused`). A bug or a
configuration to fix, not retried.
"""

from __future__ import annotations


class PaymentError(Exception):
    """Base of every error of the payment port.

    Attributes:
        message: the provider's message (never holds a full card number).
        code: the provider's error code (Stripe's ``code``), when it gave one.
        http_status: the HTTP status of the answer, None when there was no answer.
        retryable: whether retrying the same call with the same key can succeed.
    """

    retryable = False

    def __init__(
        self, message: str, *, code: str | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status


class PaymentDeclined(PaymentError):
    """The card was declined: Stripe's ``code`` (``card_declined``, ``expired_card``,
    ``incorrect_number``...) and ``decline_code`` (``generic_decline``,
    ``insufficient_funds``, ``expired_card``...). ``payment_id`` is the PaymentIntent the
    attempt created, when it created one (a number that is not a card number creates none).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None,
        decline_code: str | None = None,
        payment_id: str | None = None,
        http_status: int | None = 402,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.decline_code = decline_code
        self.payment_id = payment_id


class PaymentUnavailable(PaymentError):
    """The provider did not answer, or answered that it failed: retry with the same key.

    ``outcome_unknown`` is True when the request may have reached the provider and taken
    effect (a timeout, a connection lost after sending, a 5xx): the retry with the same
    idempotency key answers with what was done, never doing it twice.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        outcome_unknown: bool = True,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.outcome_unknown = outcome_unknown
        #: The data folder's own provider is not where its ``payments.url`` says (none
        #: runs, the file is not to be trusted, a stranger answers there): nothing was sent,
        #: and the message says all of it (`no_provider_here`).
        self.no_provider = False


def no_provider_here(message: str) -> PaymentUnavailable:
    """`PaymentUnavailable` for a data folder's provider that is not there (see
    ``no_provider``): retryable, nothing sent."""
    error = PaymentUnavailable(message, outcome_unknown=False)
    error.no_provider = True
    return error


#: Stripe's code for a request whose idempotency key another request is being processed under.
KEY_IN_USE = "idempotency_key_in_use"


class PaymentInProgress(PaymentUnavailable):
    """Another request with the same idempotency key is still being processed (Stripe's
    409 ``idempotency_key_in_use``): this one did nothing and stored nothing. Retry later
    with the same key, once the first has finished, to get its answer."""

    def __init__(self, message: str, *, http_status: int | None = 409) -> None:
        super().__init__(message, http_status=http_status, outcome_unknown=False, code=KEY_IN_USE)


class PaymentStateError(PaymentError):
    """The payment's state forbids the operation (Stripe's
    ``payment_intent_unexpected_state``, ``charge_already_refunded``...).

    ``payment_id`` names the payment; ``provider_status`` is its Stripe status when the
    provider said it (``canceled`` for an expired or released hold, ``succeeded`` once
    captured).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None,
        payment_id: str | None = None,
        provider_status: str | None = None,
        http_status: int | None = 400,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.payment_id = payment_id
        self.provider_status = provider_status


class PaymentRequestError(PaymentError):
    """The provider refused the request itself (``amount_too_large``, ``resource_missing``,
    an invalid API key...): a bug or a configuration to fix."""


class IdempotencyKeyReused(PaymentRequestError):
    """The idempotency key was already used with other parameters (or on another
    operation): Stripe's ``idempotency_error``."""
