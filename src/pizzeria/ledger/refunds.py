"""Staff refunds in the ledger: each claimed once under its key before the provider is
asked, then marked with what the provider did.

A refund staff give a completed order (`pizzeria refund`, ``POST /orders/{n}/refunds``)
is one row ``<order ref>/staff_refund/<digest of the caller's key>``, written in three
moves so that the money moves exactly once across a lost answer:

1. `claim_staff_refund`, one transaction under the run's lock: the row is found (the same
   key again: the same refund) or written *pending* (no refund id yet), but only when
   the run was billed through the provider and the amount fits in what its bill captured
   minus every refund already given or pending, so two refunds racing for the last cents
   cannot both pass;
2. the provider is asked with the row's key (the caller's doing: `pizzeria.refunds`); a
   retry after a lost answer finds the pending row and asks again with the same key,
   which the provider answers from its idempotency store;
3. `staff_refund_done` records the provider's refund id on the row (then it counts as
   refunded), or `staff_refund_refused` makes it a tombstone saying why (the provider
   refused it: nothing moved, the key stays spent).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pizzeria.ledger.book import Ledger
from pizzeria.ledger.records import (
    STAFF_REFUND,
    Effect,
    LedgerError,
    idempotency_key,
    is_staff_refund,
)
from pizzeria.ledger.sql import Claim, Tx, claim, find, read_effects
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    MONEY_CAPTURED,
    MONEY_REFUNDED,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    dollars,
)

#: The reference of a claim the provider has not answered yet.
PENDING = ""
REFUSED_PREFIX = "refused: "


class RefundNotPossible(LedgerError):
    """The run cannot be refunded this amount: never billed, billed in the ledger alone,
    or not that much left. Nothing was written."""


class RefundKeyReused(LedgerError):
    """The caller's key already names another refund of this run (another amount)."""


def staff_refund_step(caller_key: str) -> str:
    """The row's step for the caller's key: a digest, so any key makes a short, safe name."""
    digest = hashlib.sha256(caller_key.encode()).hexdigest()[:32]
    return f"{STAFF_REFUND}/{digest}"


@dataclass(frozen=True)
class Billed:
    """What a run's bill captured at the provider and what has gone back since."""

    payment_id: str
    captured: int
    refunded: int  # every refund of the run: the saga's, the undelivered order's, staff's
    #: Of ``refunded``, staff refunds claimed whose provider's answer is not recorded yet:
    #: counted against what is left, not yet given back as far as the ledger knows.
    pending: int = 0

    @property
    def left(self) -> int:
        return self.captured - self.refunded


@dataclass(frozen=True)
class StaffRefundClaim:
    order_ref: str
    row: Effect  # the claim's row (``applied``: written now; else found under the key)
    billed: Billed  # as it stood before this claim

    @property
    def key(self) -> str:
        """The row's idempotency key, which is also the provider's."""
        return idempotency_key(self.order_ref, self.row.step)

    @property
    def pending(self) -> bool:
        return not self.row.tombstone and self.row.reference == PENDING


def billed_of(tx: Tx, order_ref: str) -> Billed:
    bill = find(tx, order_ref, STEP_SEND_BILL)
    if bill is None or bill.tombstone:
        raise RefundNotPossible(f"{order_ref} was never billed: nothing was captured to refund")
    if not bill.payment_id:
        raise RefundNotPossible(
            f"{order_ref} was billed in the ledger alone, before payments went through a "
            "provider: refund it by hand"
        )
    refunds = [
        row
        for row in read_effects(tx, order_ref)
        if not row["tombstone"]
        and (
            row["step"] in (STEP_REFUND_UNDELIVERED, COMPENSATE_REFUND_CUSTOMER)
            or is_staff_refund(row["step"])
        )
    ]
    refunded = sum(row["amount"] for row in refunds)
    pending = sum(
        row["amount"]
        for row in refunds
        if is_staff_refund(row["step"]) and row["reference"] == PENDING
    )
    return Billed(bill.payment_id, bill.amount, refunded, pending)


def claim_staff_refund(
    ledger: Ledger, order_ref: str, order_number: str, caller_key: str, amount: int
) -> StaffRefundClaim:
    """The refund's row under the caller's key: found, or written pending when ``amount``
    fits in what is left of the capture. Raises `RefundKeyReused` (the key named another
    amount) or `RefundNotPossible` (nothing written)."""
    step = staff_refund_step(caller_key)

    def body(tx: Tx) -> StaffRefundClaim:
        existing = find(tx, order_ref, step)
        billed = billed_of(tx, order_ref)
        if existing is not None:
            if existing.amount != amount:
                raise RefundKeyReused(
                    f"this key already names a refund of {dollars(existing.amount)} of this "
                    f"order, not {dollars(amount)}: use a new key for another refund"
                )
            return StaffRefundClaim(order_ref, existing, billed)
        if amount > billed.left:
            raise RefundNotPossible(
                f"cannot refund {dollars(amount)}: the bill captured {dollars(billed.captured)}, "
                f"{dollars(billed.refunded)} already went back, {dollars(billed.left)} is left"
            )
        row = claim(tx, Claim(order_ref, order_number, step, amount=amount, reference=PENDING))
        return StaffRefundClaim(order_ref, row, billed)

    return ledger._write(order_ref, body)


def staff_refund_done(
    ledger: Ledger, order_ref: str, step: str, refund_id: str, payment_id: str, left: int
) -> Effect:
    """The provider made the refund: its id on the row, and where the money is now
    (``left`` cents of the capture still taken: captured, or refunded when none)."""
    state = MONEY_CAPTURED if left > 0 else MONEY_REFUNDED
    return _settle(
        ledger,
        order_ref,
        step,
        "UPDATE effects SET reference = ?, payment_id = ?, money_state = ?"
        " WHERE idempotency_key = ? AND reference = '' AND tombstone = 0",
        (refund_id, payment_id, state),
    )


def staff_refund_refused(ledger: Ledger, order_ref: str, step: str, why: str) -> Effect:
    """The provider refused the refund: nothing moved; the row becomes a tombstone."""
    return _settle(
        ledger,
        order_ref,
        step,
        "UPDATE effects SET reference = ?, tombstone = 1"
        " WHERE idempotency_key = ? AND reference = '' AND tombstone = 0",
        (REFUSED_PREFIX + why[:200],),
    )


def _settle(ledger: Ledger, order_ref: str, step: str, sql: str, values: tuple[str, ...]) -> Effect:
    """Mark a pending claim (a row already settled is left as it is); the row."""

    def body(tx: Tx) -> Effect:
        tx.run(sql, (*values, idempotency_key(order_ref, step)))
        row = find(tx, order_ref, step)
        if row is None:
            raise RefundNotPossible(f"no refund {step} of {order_ref} to settle")
        return row

    return ledger._write(order_ref, body)


def staff_refunds(ledger: Ledger, order_ref: str) -> list[dict[str, Any]]:
    """The run's staff refunds, oldest first (see `staff_refunds_in`)."""
    return staff_refunds_in(ledger.effects(order_ref))


def staff_refunds_in(effects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The staff refunds among ledger rows, in their order: amount, state (refunded,
    pending: the provider's answer is not recorded yet, refused: nothing moved), the
    provider's refund id, when it was claimed (Unix seconds), why it was refused."""
    refunds: list[dict[str, Any]] = []
    for row in effects:
        if not is_staff_refund(row["step"]):
            continue
        reference: str = row["reference"]
        if row["tombstone"]:
            state, refund_id = "refused", None
        elif reference == PENDING:
            state, refund_id = "pending", None
        else:
            state, refund_id = "refunded", reference
        refunds.append(
            {
                "amount": row["amount"],
                "state": state,
                "refund_id": refund_id,
                "claimed_at": row["created_at"],
                "note": reference.removeprefix(REFUSED_PREFIX) if state == "refused" else "",
            }
        )
    return refunds
