"""Staff refunds: part of a completed order's money given back, once per key.

An order is closed once it completed, so a refund does not go through its workflow: staff
ask `refund_order` (``pizzeria refund``, ``POST /orders/{n}/refunds``), which

1. finds the order's run at Temporal (its latest, or the one the caller names: an order
   number placed again has a run per placing) and refuses it unless it completed (its
   bill captured the card; a failed or cancelled order kept nothing, a running one is not
   billed yet);
2. claims the refund in the ledger under ``<order ref>/staff_refund/<digest of the key>``
   (`pizzeria.ledger.refunds`), refused unless the amount fits in what the bill captured
   minus every refund already given or pending;
3. asks the payment provider to refund that amount of the bill's payment, with the
   claim's key as its idempotency key, retrying a few times when it does not answer;
4. records the provider's refund id on the claim.

So the money moves exactly once per key: the same key again finds the claim and answers
the same refund (a claim whose provider's answer was lost asks the provider again with
the same key, which answers what it did); the same key with another amount is refused.
What the caller can get wrong is a `RefundError`: one line, saying what to do.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from temporalio.client import Client

from pizzeria.client import order_handle, status_name
from pizzeria.history.reader import ENDED_FROM_OUTSIDE
from pizzeria.ledger import Ledger
from pizzeria.ledger.refunds import (
    RefundKeyReused,
    RefundNotPossible,
    StaffRefundClaim,
    claim_staff_refund,
    staff_refund_done,
    staff_refund_refused,
)
from pizzeria.models import (
    IDEMPOTENCY_KEY_SAID,
    IDEMPOTENCY_KEY_SHAPE,
    dollars,
    order_ref,
    run_id_given,
    short_run,
)
from pizzeria.payments.errors import (
    IdempotencyKeyReused,
    PaymentError,
    PaymentUnavailable,
)
from pizzeria.payments.port import PaymentGateway, RefundRecord
from pizzeria.payments.provider_config import provider_gateway
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.text import TextRefused, check_text

MAX_REASON = 200
ATTEMPTS = 3
RETRY_SECONDS = (0.2, 1.0)
GATEWAY_TIMEOUT_SECONDS = 10.0
#: Past this, a claim whose provider's answer was lost is not asked again with its key:
#: the provider keeps idempotency keys 24 hours, and a forgotten key would refund twice.
PENDING_LIMIT_SECONDS = 23 * 3600
DOLLARS = re.compile(r"\$?([0-9]{1,7})\.([0-9]{2})")
CENTS = re.compile(r"[0-9]{1,9}")
API_DOLLARS = re.compile(r"[0-9]{1,7}(\.[0-9]{1,2})?")


class RefundError(Exception):
    """What a caller got wrong, or what stands in the way: the message is one line."""


class RefundInvalid(RefundError):
    """The request itself is wrong (the amount, the reason, the key): nothing was asked."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class RefundRefused(RefundError):
    """The order cannot be refunded that (not completed, nothing captured, not that much
    left, or the provider refused it): nothing moved."""


class RefundKeyConflict(RefundError):
    """The key already names another refund: nothing moved."""


class RefundUnanswered(RefundError):
    """The provider did not answer: the refund may or may not have been made. Retrying
    with the same key finishes it, exactly once."""


@dataclass(frozen=True)
class StaffRefund:
    """A refund made (or found made) under a caller's key."""

    order_number: str
    run_id: str
    key: str  # the caller's key
    amount: int
    refund_id: str  # the provider's
    payment_id: str  # the bill's payment it came out of
    captured: int  # what the bill captured
    refunded: int  # every refund of the order in all, this one included
    replayed: bool  # the key's refund was already made: nothing moved now
    #: Of ``refunded``, other staff refunds asked whose provider's answer never came.
    unanswered: int = 0

    @property
    def left(self) -> int:
        return self.captured - self.refunded

    def to_json(self) -> dict[str, object]:
        return {
            "order_number": self.order_number,
            "run_id": self.run_id,
            "key": self.key,
            "amount": self.amount,
            "refund_id": self.refund_id,
            "payment_id": self.payment_id,
            "captured": self.captured,
            "refunded": self.refunded,
            "left": self.left,
            "unanswered": self.unanswered,
            "replayed": self.replayed,
        }


def staff_gateway(
    environ: Mapping[str, str] | None = None, timeout: float = GATEWAY_TIMEOUT_SECONDS
) -> StripeGateway:
    """The provider the workers move money through, by the same rule as theirs
    (`pizzeria.worker.payment_gateway`, which only what runs a worker imports):
    ``PIZZERIA_PAYMENTS_URL`` and/or ``STRIPE_API_KEY``, else the data folder's provider."""
    return provider_gateway(environ, timeout=timeout)


def parse_amount(text: str) -> int:
    """Cents from ``500`` (whole cents, as ``pizzeria order --item D=CENTS`` takes them)
    or dollars with a point and two decimals (``5.00``, ``$5.00``)."""
    given = text.strip().replace(",", "")
    dollars_given = DOLLARS.fullmatch(given)
    if dollars_given:
        cents = int(Decimal(f"{dollars_given.group(1)}.{dollars_given.group(2)}") * 100)
    elif CENTS.fullmatch(given):
        cents = int(given)
    else:
        raise RefundInvalid(
            "amount", "give whole cents (500) or dollars with two decimals (5.00 or $5.00)"
        )
    return checked_amount(cents)


def checked_amount(cents: int) -> int:
    if cents <= 0:
        raise RefundInvalid("amount", "must be at least 1 cent")
    return cents


def dollars_to_cents(text: str) -> int:
    """``"5.00"`` as cents, for the API's ``amount``: ASCII digits, at most one point and
    two decimals, nothing else (no exponent, sign, space or other script's digits: money
    is never read from what only looks like a number)."""
    if not API_DOLLARS.fullmatch(text):
        raise RefundInvalid(
            "amount", "must be dollars with at most two decimals, such as 5.00 (digits 0-9)"
        )
    return checked_amount(int(Decimal(text) * 100))


def check_request(amount: int, reason: str, key: str) -> None:
    """Refuse what no refund can be, before anything is asked of anyone."""
    checked_amount(amount)
    try:
        check_text("reason", reason)
    except TextRefused as refused:
        raise RefundInvalid("reason", refused.reason) from None
    if not reason.strip():
        raise RefundInvalid("reason", "say why the money goes back")
    if len(reason) > MAX_REASON:
        raise RefundInvalid("reason", f"at most {MAX_REASON} characters")
    if not IDEMPOTENCY_KEY_SHAPE.fullmatch(key):  # as the API's Idempotency-Key header
        raise RefundInvalid("key", IDEMPOTENCY_KEY_SAID)


def checked_run_id(run_id: str) -> str:
    """A run id as Temporal makes them (`pizzeria.models.run_id_given`), in lower case."""
    try:
        return run_id_given(run_id)
    except ValueError as wrong:
        raise RefundInvalid("run_id", str(wrong)) from None


async def completed_run(client: Client, order_number: str, run_id: str | None = None) -> str:
    """The order's latest run (or its run ``run_id``, checked by `checked_run_id`), as
    ``<workflow id>/<run id>``, if it completed."""
    description = await (await order_handle(client, order_number, run_id)).describe()
    which = f"order {order_number}" + ("" if run_id is None else f", run {short_run(run_id)},")
    status = status_name(description.status)
    # A run ended from outside (terminated, timed out) after its bill kept the money it
    # captured, and nothing of it is undone: refundable as a completed one (what its bill
    # captured is checked as for any order; one ended before its bill captured nothing).
    if status not in ("COMPLETED", *ENDED_FROM_OUTSIDE):
        raise RefundRefused(
            f"{which} is {status}: only a completed order (its bill captured "
            "the card), or one ended from outside after its bill, can be refunded"
        )
    return order_ref(description.id, description.run_id)


async def refund_order(
    client: Client,
    ledger: Ledger,
    gateway: PaymentGateway,
    order_number: str,
    amount: int,
    reason: str,
    key: str,
    *,
    run_id: str | None = None,
    attempts: int = ATTEMPTS,
) -> StaffRefund:
    """Refund ``amount`` cents of a completed order (its latest run, or its run
    ``run_id``), once per ``key`` (see the module).

    Raises `RefundInvalid`, `RefundRefused`, `RefundKeyConflict` (nothing moved),
    `RefundUnanswered` (retry with the same key), `LookupError` (no such order or run).
    """
    check_request(amount, reason, key)
    ref = await completed_run(
        client, order_number, None if run_id is None else checked_run_id(run_id)
    )
    try:
        claimed = await asyncio.to_thread(
            claim_staff_refund, ledger, ref, order_number, key, amount
        )
    except RefundNotPossible as refused:
        raise RefundRefused(f"order {order_number}: {refused}") from None
    except RefundKeyReused as reused:
        raise RefundKeyConflict(f"order {order_number}: {reused}") from None
    row = claimed.row
    if row.tombstone:
        raise RefundRefused(
            f"order {order_number}: this key's refund was refused: "
            f"{row.reference.removeprefix('refused: ').rstrip('.')}; nothing moved"
        )
    if not claimed.pending:
        return made(order_number, key, claimed, row.reference, replayed=True)
    if not row.applied and time.time() - row.created_at > PENDING_LIMIT_SECONDS:
        raise RefundRefused(
            f"order {order_number}: this key's refund was claimed over 23 hours ago and the "
            "provider's answer never came; the provider no longer remembers the key: compare "
            "its refunds with the ledger (pizzeria check) and settle it by hand"
        )
    record = await ask_provider(ledger, gateway, claimed, reason, attempts)
    done = made(order_number, key, claimed, record.id, replayed=False)
    await asyncio.to_thread(
        staff_refund_done, ledger, ref, row.step, record.id, done.payment_id, done.left
    )
    return done


def made(
    order_number: str, key: str, claimed: StaffRefundClaim, refund_id: str, *, replayed: bool
) -> StaffRefund:
    billed = claimed.billed
    finishing = claimed.pending and not claimed.row.applied  # found pending, answered now
    return StaffRefund(
        order_number=order_number,
        run_id=claimed.order_ref.rpartition("/")[2],
        key=key,
        amount=claimed.row.amount,
        refund_id=refund_id,
        payment_id=billed.payment_id,
        captured=billed.captured,
        # A claim written now was not in the figures read before it; one found was.
        refunded=billed.refunded + (claimed.row.amount if claimed.row.applied else 0),
        # This claim's own row is pending until the provider answers: not counted here.
        unanswered=billed.pending - (claimed.row.amount if finishing else 0),
        replayed=replayed,
    )


async def ask_provider(
    ledger: Ledger, gateway: PaymentGateway, claimed: StaffRefundClaim, reason: str, attempts: int
) -> RefundRecord:
    """The provider's refund, under the claim's key; a refusal settles the claim."""
    payment_id, amount = claimed.billed.payment_id, claimed.row.amount
    unanswered: PaymentUnavailable | None = None
    # A claim found pending (not written now): an earlier ask may have reached it.
    maybe_made = claimed.pending and not claimed.row.applied
    for attempt in range(attempts):
        try:
            return await gateway.refund(
                payment_id, amount, reason=reason, idempotency_key=claimed.key
            )
        except PaymentUnavailable as error:
            unanswered = error
            maybe_made = maybe_made or error.outcome_unknown
            if attempt < attempts - 1:
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
        except IdempotencyKeyReused:
            raise RefundKeyConflict(
                "this key's refund was first asked with another reason: give the same "
                "reason to finish it"
            ) from None
        except PaymentError as refused:
            why = refused.message or type(refused).__name__
            await asyncio.to_thread(
                staff_refund_refused, ledger, claimed.order_ref, claimed.row.step, why
            )
            raise RefundRefused(f"the payment provider refused the refund: {why}") from None
    assert unanswered is not None
    said = unanswered.message.rstrip(".")
    if not said.startswith("the payment provider"):
        said = f"the payment provider did not answer ({said})"
    if not maybe_made:  # every ask was refused before it was sent
        raise RefundUnanswered(
            f"{said}; nothing reached it, so the refund of {dollars(amount)} is not made: "
            "retry with the same key to make it, exactly once"
        )
    raise RefundUnanswered(
        f"{said}; the refund of "
        f"{dollars(amount)} may or may not be made: retry with the same key to finish it "
        "exactly once"
    )
