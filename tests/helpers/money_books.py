"""Reading an order's money from both books the tests hold: the payment provider's (every
payment and refund of the run, by its order reference) and the ledger's (its rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.client import WorkflowHandle

from pizzeria.ledger import Ledger, RunRows, runs_of
from pizzeria.models import order_ref
from pizzeria.payments.port import ORDER_REF, Payment, PaymentGateway, RefundRecord
from pizzeria.payments.stripe_gateway import StripeGateway


@dataclass
class RunMoney:
    """One run's money: the provider's payments (oldest first) and refunds, the ledger's rows."""

    ref: str
    payments: list[Payment]
    refunds: list[RefundRecord]
    ledger: RunRows

    @property
    def payment(self) -> Payment:
        """The run's one payment (fails when it has none, or more)."""
        assert len(self.payments) == 1, f"{self.ref}: {len(self.payments)} payments"
        return self.payments[0]


async def run_ref(handle: WorkflowHandle[Any, Any]) -> str:
    return order_ref(handle.id, (await handle.describe()).run_id)


async def money_of(gateway: PaymentGateway, ledger: Ledger, ref: str) -> RunMoney:
    """Everything the provider and the ledger hold of run ``ref``."""
    payments = [p async for p in gateway.iter_payments() if p.metadata.get(ORDER_REF) == ref]
    payments.sort(key=lambda p: (p.created, p.id))
    refunds = [r for p in payments async for r in gateway.iter_refunds(payment_id=p.id)]
    rows = runs_of(ledger.effects(ref)).get(ref, RunRows(ref))
    return RunMoney(ref, payments, refunds, rows)


class CountingGateway(StripeGateway):
    """The real gateway, counting the calls that move money (each still goes to the
    provider): how a test sees that nothing was held, captured, voided or refunded twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, list[str]] = {}

    def _count(self, operation: str, key: str) -> None:
        self.calls.setdefault(operation, []).append(key)

    async def authorize(self, amount: int, **kwargs: Any) -> Payment:
        self._count("authorize", kwargs["idempotency_key"])
        return await super().authorize(amount, **kwargs)

    async def capture(self, payment_id: str, amount: int | None = None, **kwargs: Any) -> Payment:
        self._count("capture", kwargs["idempotency_key"])
        return await super().capture(payment_id, amount, **kwargs)

    async def void(self, payment_id: str, **kwargs: Any) -> Payment:
        self._count("void", payment_id)
        return await super().void(payment_id, **kwargs)

    async def refund(
        self, payment_id: str, amount: int | None = None, **kwargs: Any
    ) -> RefundRecord:
        self._count("refund", payment_id)
        return await super().refund(payment_id, amount, **kwargs)
