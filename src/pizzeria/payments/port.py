"""The payment port: what the pizzeria asks of a card payment provider, whoever it is.

Money moves in two stages, as card payments do: `authorize` puts a **hold** on the card
(the money is reserved, not taken), then `capture` takes all or part of it, or `void`
releases it. A captured payment can be refunded, in parts, never beyond what was
captured. A hold not captured in time (Stripe: 7 days) **expires** on its own.

Every call that changes something takes an idempotency key: the same call retried with the
same key (after a timeout, a lost answer, a 5xx) is done at most once and answers what was
done; while the first call with a key is still being processed, another with it is
refused (`PaymentInProgress`: retry later). `find` looks a payment up by the key of the
`authorize` that created it, which tells a caller whose answer was lost whether its hold
exists. `claim_key` spends an `authorize` key nobody used on a placeholder that holds
nothing, so that the `authorize` arriving late can no longer hold anything.

Errors are in `pizzeria.payments.errors`. `pizzeria.payments.stripe_gateway.StripeGateway`
implements this port against Stripe's API (real Stripe, or the local provider).
"""

from __future__ import annotations

import abc
import enum
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pizzeria.payments.errors import IdempotencyKeyReused, PaymentUnavailable

CURRENCY = "usd"
#: Metadata keys every payment of an order carries (see `order_metadata`).
ORDER_REF = "order_ref"
ORDER_NUMBER = "order_number"
WORKFLOW_ID = "workflow_id"
RUN_ID = "run_id"
#: The metadata key holding the idempotency key of the `authorize` that made a payment.
IDEMPOTENCY_KEY = "idempotency_key"
#: The metadata key holding a refund's free-text reason.
REFUND_REASON = "reason"
#: The metadata key marking a placeholder (`PaymentGateway.claim_key`): a payment made only
#: to spend an `authorize` key, never confirmed, no card, nothing held.
PLACEHOLDER = "placeholder"
PLACEHOLDER_NOTE = "holds nothing: spends the key of a hold that must never be made"
#: A placeholder's amount: the smallest Stripe takes in usd (it is never held).
PLACEHOLDER_AMOUNT = 50

T = TypeVar("T")
log = logging.getLogger(__name__)


class MoneyState(enum.StrEnum):
    """Where the money of a payment is."""

    HELD = "held"  # authorized: reserved on the card, not taken
    CAPTURED = "captured"  # taken (``amount_refunded`` may say part of it went back)
    REFUNDED = "refunded"  # taken, then all of it given back
    RELEASED = "released"  # the hold was voided: nothing taken
    EXPIRED = "expired"  # the hold was not captured in time: released by the provider
    DECLINED = "declined"  # the card refused: nothing held
    PENDING = "pending"  # the provider has not decided yet (e.g. 3-D Secure asked)


@dataclass(frozen=True)
class Payment:
    """One payment (a Stripe PaymentIntent) as the port sees it.

    ``amount`` is what was authorized; ``amount_captured`` what was taken (0 until the
    capture); ``amount_refunded`` what went back; ``amount_capturable`` what a capture can
    still take. ``provider_status`` is Stripe's own status (``requires_capture``,
    ``succeeded``, ``canceled``...), ``cancellation_reason`` Stripe's (``automatic`` for
    an expired hold). ``card_last4`` is all the port ever knows of the card.
    """

    id: str
    state: MoneyState
    amount: int
    currency: str
    amount_capturable: int
    amount_captured: int
    amount_refunded: int
    created: int
    provider_status: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    card_last4: str | None = None
    cancellation_reason: str | None = None
    decline_code: str | None = None
    #: The card as the provider keeps it (``pm_...``): what a new hold on the same card
    #: is authorized with when this one expired (the number is never sent twice).
    payment_method: str | None = None
    #: What the payment's charge says it captured, when the provider answered the charge
    #: with it (Stripe keeps it on both; they agree unless a record was changed).
    charge_captured: int | None = None

    @property
    def idempotency_key(self) -> str | None:
        """The key of the `authorize` that created this payment (from its metadata)."""
        return self.metadata.get(IDEMPOTENCY_KEY)

    @property
    def is_placeholder(self) -> bool:
        """Made by `PaymentGateway.claim_key`: it never held anything."""
        return PLACEHOLDER in self.metadata

    @property
    def refundable(self) -> int:
        """What a refund can still give back."""
        return self.amount_captured - self.amount_refunded


@dataclass(frozen=True)
class RefundRecord:
    """One refund (a Stripe Refund): ``amount`` given back from payment ``payment_id``."""

    id: str
    payment_id: str
    amount: int
    currency: str
    status: str  # Stripe's: succeeded, pending, failed, canceled
    created: int
    reason: str | None = None  # the free-text reason given to `refund`
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, newest first. ``next_cursor`` (the last item's id) asks for
    the next page when ``has_more``."""

    items: tuple[T, ...]
    has_more: bool

    @property
    def next_cursor(self) -> str | None:
        last = self.items[-1] if self.items else None
        return getattr(last, "id", None) if self.has_more else None


def order_metadata(order_ref: str, order_number: str) -> dict[str, str]:
    """The metadata a payment of one run of one order carries: its reference
    (``<workflow id>/<run id>``), its order number, and the run's two parts."""
    workflow_id, _, run_id = order_ref.rpartition("/")
    return {
        ORDER_REF: order_ref,
        ORDER_NUMBER: order_number,
        WORKFLOW_ID: workflow_id,
        RUN_ID: run_id,
    }


class PaymentGateway(abc.ABC):
    """The port. Amounts are whole cents of `CURRENCY` (``usd``); every method may raise
    `PaymentUnavailable` (retry it with the same key) besides what it documents."""

    #: Seconds a new payment may take to show in `find`: real Stripe's search lags (up to
    #: a minute, it says), the local provider's never does.
    search_lag: float = 0.0

    @abc.abstractmethod
    async def authorize(
        self,
        amount: int,
        *,
        idempotency_key: str,
        metadata: Mapping[str, str],
        card_number: str | None = None,
        payment_method: str | None = None,
    ) -> Payment:
        """Hold ``amount`` on a card: a raw ``card_number`` or a ``payment_method`` token
        (``pm_...``), at most one. Returns the payment, state `MoneyState.HELD`. With
        neither, nothing is held: the payment is made unconfirmed, without a card (state
        `MoneyState.PENDING`), as `claim_key` makes its placeholder.

        Raises `PaymentDeclined` (nothing held) with the provider's code and decline code.
        """

    @abc.abstractmethod
    async def capture(
        self, payment_id: str, amount: int | None = None, *, idempotency_key: str
    ) -> Payment:
        """Take ``amount`` (default: all) of a hold; the rest of the hold is released.

        Raises `PaymentStateError` when the payment is not held (expired, voided, already
        captured), `PaymentRequestError` when ``amount`` exceeds the hold.
        """

    @abc.abstractmethod
    async def void(self, payment_id: str, *, idempotency_key: str) -> Payment:
        """Release a hold: nothing is taken. A hold already released or expired is
        answered as it is (the money is free either way).

        Raises `PaymentStateError` once the payment was captured (refund it instead).
        """

    @abc.abstractmethod
    async def refund(
        self, payment_id: str, amount: int | None = None, *, reason: str, idempotency_key: str
    ) -> RefundRecord:
        """Give back ``amount`` (default: all that is left) of a captured payment.

        Raises `PaymentRequestError` (code ``amount_too_large``) beyond what is left,
        `PaymentStateError` when nothing was captured (a hold: void it) or all was refunded.
        """

    @abc.abstractmethod
    async def get(self, payment_id: str) -> Payment:
        """The payment as it is now (an expired hold reads `MoneyState.EXPIRED`)."""

    @abc.abstractmethod
    async def find(self, idempotency_key: str) -> Payment | None:
        """The payment created by the `authorize` with this key (a hold, or a decline),
        None when there is none: the authorize never reached the provider, is still being
        processed, was refused before creating one, or `claim_key` spent the key on a
        placeholder (which is no payment of the card's)."""

    @abc.abstractmethod
    async def list_payments(
        self, *, limit: int = 100, starting_after: str | None = None
    ) -> Page[Payment]:
        """One page of every payment, newest first, for reconciliation."""

    @abc.abstractmethod
    async def list_refunds(
        self,
        *,
        limit: int = 100,
        starting_after: str | None = None,
        payment_id: str | None = None,
    ) -> Page[RefundRecord]:
        """One page of every refund (or of one payment's), newest first."""

    async def claim_key(
        self, idempotency_key: str, *, metadata: Mapping[str, str]
    ) -> Payment | None:
        """Make sure that no `authorize` with ``idempotency_key`` holds anything it does not
        hold already, whatever request with the key is still on its way.

        When no request with the key reached the provider, the key is spent on a
        placeholder (an `authorize` without a card, marked `PLACEHOLDER`: nothing held, no
        card, nothing on any statement), voided at once, and returned: a request with the
        key that arrives later gets `IdempotencyKeyReused` and holds nothing. None when the
        key was spent already: `find` then says what its `authorize` made (a hold to let
        go of, a decline), if anything (a number the provider refused makes nothing).

        Raises `PaymentInProgress` while another request with the key is still being
        processed (it decides: ask again later), `PaymentUnavailable` without an answer.
        """
        try:
            placeholder = await self.authorize(
                PLACEHOLDER_AMOUNT,
                idempotency_key=idempotency_key,
                metadata={**metadata, PLACEHOLDER: PLACEHOLDER_NOTE},
            )
        except IdempotencyKeyReused:
            return None
        return await self.void(placeholder.id, idempotency_key=f"{idempotency_key}/{PLACEHOLDER}")

    async def settle_key(
        self, idempotency_key: str, *, metadata: Mapping[str, str], since: float
    ) -> Payment | None:
        """What the `authorize` with this key made, once nothing it has not made yet can
        be made any more (`claim_key`): a hold (to let go of), a decline; None when it
        made nothing, and never will.

        Raises `PaymentUnavailable` (ask again later) while that is not known: a request
        with the key is still being processed (`PaymentInProgress`), the provider did not
        answer, or the key was spent and the provider's search may not show its payment
        yet (`search_lag` seconds, counted from ``since``, a `time.time`)."""
        try:
            placeholder = await self.claim_key(idempotency_key, metadata=metadata)
        except PaymentUnavailable:
            found = await self.find(idempotency_key)  # made already, whatever is in flight?
            if found is None:
                raise
            return found
        if placeholder is not None:
            log.info(
                "Nothing reached the provider under %s: spent on %s",
                idempotency_key,
                placeholder.id,
            )
            return None
        found = await self.find(idempotency_key)
        if found is None and self.search_lag > 0 and time.time() - since < self.search_lag:
            raise PaymentUnavailable(
                f"the key {idempotency_key} was used and its payment does not show yet (the "
                f"provider's search lags up to {self.search_lag:g} s)",
                outcome_unknown=False,
            )
        return found

    async def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Let go of connections and threads."""

    async def iter_payments(self, page_size: int = 100) -> AsyncIterator[Payment]:
        """Every payment, page after page, newest first."""
        cursor: str | None = None
        while True:
            page = await self.list_payments(limit=page_size, starting_after=cursor)
            for payment in page.items:
                yield payment
            cursor = page.next_cursor
            if cursor is None:
                return

    async def iter_refunds(
        self, page_size: int = 100, payment_id: str | None = None
    ) -> AsyncIterator[RefundRecord]:
        """Every refund (or one payment's), page after page, newest first."""
        cursor: str | None = None
        while True:
            page = await self.list_refunds(
                limit=page_size, starting_after=cursor, payment_id=payment_id
            )
            for refund in page.items:
                yield refund
            cursor = page.next_cursor
            if cursor is None:
                return
