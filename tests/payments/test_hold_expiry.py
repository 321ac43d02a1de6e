"""A card hold that expires before the bill: held again once, under a key of its own, and
captured; or, when the card refuses the new hold, the order fails before its pivot with
nothing billed, and the expired hold is neither voided nor counted twice.

A provider of this module's own lets holds expire after a second; the bill waits (an
activity interceptor) until the order's hold has expired, so the story never depends on
timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from pizzeria.activities import PizzaOrderActivities
from pizzeria.failures import error_type_of
from pizzeria.ledger import REAUTHORIZE_HOLD, Ledger
from pizzeria.money import payment_key
from pizzeria.payments import process
from pizzeria.payments.errors import PaymentDeclined
from pizzeria.payments.port import MoneyState, Payment
from pizzeria.samples import GOOD_CARD, sample_order
from pizzeria.worker import PAYMENTS_TIMEOUT_SECONDS
from tests.helpers import eventually, failure_of
from tests.helpers.history import activity_timeline, finished
from tests.helpers.money_books import CountingGateway, money_of, run_ref

BILLED = 3500
HOLD_SECONDS = 1.0


@pytest.fixture(scope="module")
def expiring_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local provider whose holds expire after a second (Stripe's: 7 days)."""
    folder: Path = tmp_path_factory.mktemp("expiring-payments")
    with process.running(folder / "payments.db", hold_seconds=HOLD_SECONDS) as started:
        yield started.url


@pytest.fixture
async def gateway(expiring_provider: str) -> AsyncIterator[CountingGateway]:
    counting = CountingGateway(
        process.LOCAL_SECRET_KEY, expiring_provider, timeout=PAYMENTS_TIMEOUT_SECONDS
    )
    yield counting
    await counting.close()


class BillOnceTheHoldExpired(Interceptor):
    """Holds every ``send_bill`` until the provider says its order's hold expired."""

    def __init__(self, gateway: CountingGateway) -> None:
        self.gateway = gateway

    async def hold_expired(self, order_ref: str) -> None:
        async def expired() -> bool:
            found = await self.gateway.find(payment_key(order_ref, "process_credit_card"))
            return found is not None and found.state == MoneyState.EXPIRED

        await eventually(expired, f"the hold of {order_ref} to expire", seconds=20, interval=0.2)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        waiting = self

        class Waiting(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                if activity.info().activity_type == "send_bill":
                    await waiting.hold_expired(input.args[0].order_ref)
                return await super().execute_activity(input)

        return Waiting(next)


class CardRefusesTheNewHold(CountingGateway):
    """The real gateway, except that the card refuses the bill's new hold: the local
    provider's test cards answer the same at every hold, a real card may not (spent,
    cancelled, expired meanwhile)."""

    async def authorize(self, amount: int, **kwargs: Any) -> Payment:
        if kwargs["idempotency_key"].endswith("/reauthorize"):
            self._count("authorize", kwargs["idempotency_key"])
            raise PaymentDeclined(
                "Your card has insufficient funds.",
                code="card_declined",
                decline_code="insufficient_funds",
            )
        return await super().authorize(amount, **kwargs)


async def test_an_expired_hold_is_held_again_once_and_captured(
    worker, start, ledger: Ledger, gateway: CountingGateway
) -> None:
    async with worker(interceptors=[BillOnceTheHoldExpired(gateway)]):
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
    assert (confirmation.status, confirmation.amount) == ("SUCCESS", BILLED)
    money = await money_of(gateway, ledger, await run_ref(handle))
    expired, renewed = money.payments
    assert (expired.state, expired.cancellation_reason, expired.amount_captured) == (
        MoneyState.EXPIRED,
        "automatic",
        0,
    )
    assert (renewed.state, renewed.amount_captured, renewed.card_last4) == (
        MoneyState.CAPTURED,
        BILLED,
        "4242",
    )
    ref = money.ref
    assert gateway.calls["authorize"] == [
        payment_key(ref, "process_credit_card"),
        payment_key(ref, "send_bill", "reauthorize"),
    ]
    assert "void" not in gateway.calls and money.refunds == []
    rows = money.ledger
    # The new hold replaces the expired one: the customer is charged once.
    assert (rows.charged, rows.billed, rows.refunded, rows.money) == (BILLED, BILLED, 0, "captured")
    assert rows.rows[REAUTHORIZE_HOLD] == 1
    assert rows.payments == [
        ("process_credit_card", expired.id, "held"),
        (REAUTHORIZE_HOLD, renewed.id, "held"),
        ("send_bill", renewed.id, "captured"),
    ]


async def test_a_card_refusing_the_new_hold_fails_the_order_before_its_pivot(
    worker,
    start,
    ledger: Ledger,
    activities: PizzaOrderActivities,
    expiring_provider: str,
) -> None:
    refusing = CardRefusesTheNewHold(
        process.LOCAL_SECRET_KEY, expiring_provider, timeout=PAYMENTS_TIMEOUT_SECONDS
    )
    activities.money.gateway = refusing
    before = ledger.stock()
    try:
        async with worker(interceptors=[BillOnceTheHoldExpired(refusing)]):
            handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
            failure = await failure_of(handle)
        money = await money_of(refusing, ledger, await run_ref(handle))
    finally:
        await refusing.close()
    assert error_type_of(failure) == "CreditCardProcessingError"
    cause = failure.__cause__
    assert isinstance(cause, ApplicationError) and cause.non_retryable
    assert cause.message == (
        "The card hold expired before the bill and the card refused a new one: "
        "Your card has insufficient funds."
    )
    assert cause.details[0] == {"code": "card_declined", "decline_code": "insufficient_funds"}
    assert finished(await activity_timeline(handle))[-3:] == [
        ("send_bill", "failed"),
        ("refund_customer", "completed"),
        ("revert_inventory", "completed"),
    ]
    (expired,) = money.payments  # the refused hold made no payment
    assert (expired.state, expired.amount_captured) == (MoneyState.EXPIRED, 0)
    assert "void" not in refusing.calls and "capture" in refusing.calls
    rows = money.ledger
    assert rows.billed == 0 and "send_bill" not in rows.rows  # nothing billed
    # One hold, let go by the provider: counted once, given back once, never voided.
    assert (rows.charged, rows.refunded, rows.money) == (BILLED, BILLED, "expired")
    assert ledger.stock() == before
