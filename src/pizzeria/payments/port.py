"""The payment port: what the pizzeria asks of a card payment provider, whoever it is.

Money moves in two stages, as card payments do: `authorize` puts a **hold** on the card
(the money is reserved, not taken), then `capture` takes all or part of it, or `void`
releases it. A captured payment can be refunded, in parts, never beyond what was
captured. A hold not captured in time (Stripe: 7 days) **expires** on its own.

Every call that changes something takes an idempotency key: the same call retried with the
same key (after a timeout, a lost answer, a 5xx) is done at most once and answers what was
done. `find` looks a payment up by the key of the `authorize` that created it, which tells
a caller whose answer was lost whether its hold exists.

Errors are in `pizzeria.payments.errors`. `pizzeria.payments.stripe_gateway.StripeGateway`
implements this port against Stripe's API (real Stripe, or the local provider).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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

T = TypeVar("T")


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

    @property
    def idempotency_key(self) -> str | None:
        """The key of the `authorize` that created this payment (from its metadata)."""
        return self.metadata.get(IDEMPOTENCY_KEY)

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
        (``pm_...``), exactly one. Returns the payment, state `MoneyState.HELD`.

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
        """The payment created by the `authorize` with this key, None when there is none
        (the authorize never reached the provider, or was refused before creating one)."""

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
