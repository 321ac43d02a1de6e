"""The third book: the payment provider's records, read through the payment port.

Every payment (a PaymentIntent) and every refund the provider lists, page after page
(`read_provider`), newest first. A payment says which run it belongs to in its metadata
(``order_ref``: ``<workflow id>/<run id>``, written by `pizzeria.money`); a refund through
its payment. The ledger's side of the same money is its rows that name a payment id
(`money_rows`). `attach` gives each run's `RunView` both (`RunMoney`), which the rules of
`money_rules` compare; the objects no run claims are sorted by `unclaimed`. A placeholder
(`Payment.is_placeholder`: a compensation spent the key of a hold that never reached the
provider on it, `PaymentGateway.claim_key`) holds no money and is kept apart from the
run's payments.

The check reads Temporal, then the ledger, then the provider, refunds before payments.
Each move of money happens at the provider before the ledger records it, so every payment
and refund the ledger names is already there when the provider is read (a difference the
other way is a move in flight: judged only once its run has closed), and every refund's
payment is in the later listing of payments.

The provider is reached as the workers reach it (`check_gateway`): ``--payments URL``, else
``PIZZERIA_PAYMENTS_URL``, else with ``STRIPE_API_KEY`` alone real Stripe, else the data
folder's local provider (``payments.url``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pizzeria.ledger import LATE_PAYMENT_UNDONE
from pizzeria.ledger.records import is_staff_refund
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    MONEY_REFUNDED,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    order_ref,
    split_order_ref,
)
from pizzeria.ops.check.records import CannotCheck
from pizzeria.payments.errors import PaymentError
from pizzeria.payments.port import (
    ORDER_REF,
    RUN_ID,
    WORKFLOW_ID,
    MoneyState,
    Payment,
    PaymentGateway,
    RefundRecord,
)
from pizzeria.payments.provider_config import ProviderConfigError, provider_gateway, shown_url
from pizzeria.payments.stripe_gateway import StripeGateway

PAGE_SIZE = 100  # Stripe's largest page
TIMEOUT_SECONDS = 20.0  # one page of a listing; reads only, so the library may retry them
READ_RETRIES = 2
#: Refunds that give (or will give) money back; failed and canceled ones gave nothing.
IN_EFFECT = ("succeeded", "pending")
#: Rows that undo a payment in full: refunded when it had been captured (a late bill).
UNDOING_STEPS = (COMPENSATE_REFUND_CUSTOMER, LATE_PAYMENT_UNDONE)


# -- reaching the provider --------------------------------------------------------------------


def check_gateway(
    url: str | None = None, environ: Mapping[str, str] | None = None
) -> StripeGateway:
    """The provider the workers move money through (see the module's docstring), with a
    timeout for listing pages rather than for a step's call."""
    try:
        return provider_gateway(
            environ, url, timeout=TIMEOUT_SECONDS, max_network_retries=READ_RETRIES
        )
    except ProviderConfigError as error:
        raise CannotCheck(str(error)) from None
    except PaymentError as error:  # a live key
        raise CannotCheck(f"cannot use the payment provider: {error}") from None


@dataclass
class ProviderBook:
    """Every payment and refund the provider listed."""

    payments: dict[str, Payment]  # by id
    refunds: list[RefundRecord]
    url: str = ""

    def refunds_by_payment(self) -> dict[str, list[RefundRecord]]:
        by_payment: dict[str, list[RefundRecord]] = defaultdict(list)
        for refund in self.refunds:
            by_payment[refund.payment_id].append(refund)
        return by_payment


async def read_provider(gateway: PaymentGateway) -> ProviderBook:
    """Every refund, then every payment. `CannotCheck` when the provider does not answer
    or refuses (a wrong key): without its records there is no third book to judge."""
    url = shown_url(gateway)
    try:
        refunds = [refund async for refund in gateway.iter_refunds(PAGE_SIZE)]
        payments = {payment.id: payment async for payment in gateway.iter_payments(PAGE_SIZE)}
    except PaymentError as error:
        raise CannotCheck(f"cannot read the payment provider at {url}: {reason(error)}") from None
    return ProviderBook(payments, refunds, url)


def reason(error: PaymentError) -> str:
    """The provider's error in a few words (the stripe library's connection messages run
    to several sentences; the cause is in brackets)."""
    text = " ".join(str(error).split())
    cause = re.search(r"\((?:Network error: )?([^()]*)\)\s*$", text)
    return cause.group(1) if cause else text


# -- the ledger's side of the same money ------------------------------------------------------


@dataclass(frozen=True)
class MoneyRow:
    """A ledger row that names a payment at the provider."""

    step: str
    payment_id: str
    state: str  # where the row says the money is (models.MONEY_*)
    amount: int
    reference: str


def money_rows(effects: Iterable[Mapping[str, Any]]) -> dict[str, list[MoneyRow]]:
    """Per run (order_ref), its rows naming a payment, in the order written."""
    rows: dict[str, list[MoneyRow]] = defaultdict(list)
    for effect in effects:
        if effect["tombstone"] or not effect.get("payment_id"):
            continue
        row = MoneyRow(
            effect["step"],
            effect["payment_id"],
            effect.get("money_state") or "",
            effect["amount"],
            effect["reference"],
        )
        rows[effect["order_ref"]].append(row)
    return rows


@dataclass
class RunMoney:
    """One run's money in the two books that hold it: the provider's payments and refunds
    of the run, and the ledger's rows that name a payment."""

    rows: list[MoneyRow] = field(default_factory=list)
    payments: dict[str, Payment] = field(default_factory=dict)  # naming the run, by id
    named: dict[str, Payment | None] = field(default_factory=dict)  # ids the rows name
    refunds: dict[str, list[RefundRecord]] = field(default_factory=dict)  # by payment
    placeholders: dict[str, Payment] = field(default_factory=dict)  # naming the run, by id

    @property
    def all_payments(self) -> dict[str, Payment]:
        """The run's payments and those its rows name, each once."""
        named = {pid: payment for pid, payment in self.named.items() if payment is not None}
        return {**self.payments, **named}

    @property
    def touched(self) -> bool:
        """Anything at the provider or in the ledger names this run's money."""
        return bool(self.rows or self.payments)

    def rows_of(self, payment_id: str, *steps: str) -> list[MoneyRow]:
        return [row for row in self.rows if row.payment_id == payment_id and row.step in steps]

    def billed(self, payment_id: str) -> int:
        """What the ledger's bill captured of this payment."""
        return sum(row.amount for row in self.rows_of(payment_id, STEP_SEND_BILL))

    def undone_in_full(self, payment_id: str) -> bool:
        """A compensation (or a late step undoing itself) refunded all of it."""
        undoing = self.rows_of(payment_id, *UNDOING_STEPS)
        return any(row.state == MONEY_REFUNDED for row in undoing)

    def ledger_refunds(self, payment_id: str) -> int:
        """What the ledger says was refunded of this payment, row by row: the refund of an
        order no driver took, and staff refunds the provider made."""
        return sum(
            row.amount for row in self.rows if row.payment_id == payment_id and gives_back(row.step)
        )

    def provider_refunds(self, payment_id: str) -> int:
        return sum(r.amount for r in self.refunds.get(payment_id, []) if r.status in IN_EFFECT)


def gives_back(step: str) -> bool:
    """A row that gives back part or all of a captured payment, its amount."""
    return step == STEP_REFUND_UNDELIVERED or is_staff_refund(step)


def run_of(payment: Payment) -> str | None:
    """The run a payment names in its metadata (``order_ref``, else its two parts)."""
    ref = payment.metadata.get(ORDER_REF)
    if not ref:
        workflow_id, run_id = payment.metadata.get(WORKFLOW_ID), payment.metadata.get(RUN_ID)
        ref = order_ref(workflow_id, run_id) if workflow_id and run_id else None
    if ref is None or not all(split_order_ref(ref)):
        return None
    return ref


def provider_refs(book: ProviderBook) -> set[str]:
    """Every run the provider's payments name."""
    return {ref for payment in book.payments.values() if (ref := run_of(payment)) is not None}


def attach(
    money: dict[str, RunMoney], book: ProviderBook, rows: Mapping[str, list[MoneyRow]]
) -> list[Payment]:
    """Fill in each run's `RunMoney` (keyed by order_ref, one per run the check judges):
    its ledger rows, the payments naming it, those its rows name, their refunds. Returns
    the payments neither a run nor a ledger row claims."""
    refunds = book.refunds_by_payment()
    for ref, run in money.items():
        run.rows = list(rows.get(ref, []))
        run.named = {row.payment_id: book.payments.get(row.payment_id) for row in run.rows}
    named_anywhere = {pid for run in money.values() for pid in run.named}
    unclaimed = []
    for payment in book.payments.values():
        owner = run_of(payment)
        if owner is not None and owner in money:
            run = money[owner]
            (run.placeholders if payment.is_placeholder else run.payments)[payment.id] = payment
        elif payment.id not in named_anywhere:
            unclaimed.append(payment)
    for run in money.values():
        run.refunds = {pid: refunds[pid] for pid in run.all_payments if pid in refunds}
    return unclaimed


def is_held(payment: Payment) -> bool:
    return payment.state == MoneyState.HELD
