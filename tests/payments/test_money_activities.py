"""The money activities one at a time (an ActivityEnvironment, the session's provider): the
races a compensation can meet, and a card token instead of the number."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from pizzeria.activities import PizzaOrderActivities
from pizzeria.ledger import LATE_PAYMENT_UNDONE, Ledger
from pizzeria.models import CardCharge, CreditCardInfo, RunRef
from pizzeria.money import payment_key
from pizzeria.payments import process
from pizzeria.payments.port import MoneyState, Payment, order_metadata
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.samples import GOOD_CARD
from pizzeria.worker import PAYMENTS_TIMEOUT_SECONDS
from tests.helpers.money_books import CountingGateway, money_of

ORDER = "MA1"
AMOUNT = 3500


@pytest.fixture
def ref() -> str:
    return f"pizza-workflow-order-{ORDER}/run-{uuid.uuid4().hex}"


class Interleaving(CountingGateway):
    """The real gateway; ``before`` runs when a hold is asked for, before it is sent, and
    ``after`` once it is made, before the step can write it down: how a compensation
    comes in between, deterministically."""

    before: Callable[[], Awaitable[Any]] | None = None
    after: Callable[[], Awaitable[Any]] | None = None

    async def authorize(self, amount: int, **kwargs: Any) -> Payment:
        before, self.before = self.before, None
        if before is not None:
            await before()
        held = await super().authorize(amount, **kwargs)
        after, self.after = self.after, None
        if after is not None:
            await after()
        return held


@pytest.fixture
async def gateway(provider: process.ProviderProcess) -> AsyncIterator[Interleaving]:
    opened = Interleaving(process.LOCAL_SECRET_KEY, provider.url, timeout=PAYMENTS_TIMEOUT_SECONDS)
    yield opened
    await opened.close()


def charge(ref: str, card: CreditCardInfo | None = None) -> CardCharge:
    return CardCharge(ref, ORDER, AMOUNT, card or CreditCardInfo("Lisa Anderson", GOOD_CARD))


async def test_a_hold_the_ledger_never_heard_of_is_found_and_released(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: Interleaving, ref: str
) -> None:
    """The card step's worker died after the provider held the card, before the ledger
    wrote it, and the step ran out of attempts: its compensation finds the hold by key."""
    held = await gateway.authorize(
        AMOUNT,
        idempotency_key=payment_key(ref, "process_credit_card"),
        metadata=order_metadata(ref, ORDER),
        card_number=GOOD_CARD,
    )
    released = await ActivityEnvironment().run(activities.refund_customer, RunRef(ref, ORDER))
    assert (released.amount, released.applied) == (AMOUNT, True)
    money = await money_of(gateway, ledger, ref)
    assert (money.payment.id, money.payment.state) == (held.id, MoneyState.RELEASED)
    assert (money.ledger.charged, money.ledger.refunded, money.ledger.money) == (
        AMOUNT,
        AMOUNT,
        "released",
    )
    assert money.refunds == []


async def test_a_card_step_later_than_its_compensation_holds_nothing(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: Interleaving, ref: str
) -> None:
    """A late attempt of the card step asks for the hold just as its compensation runs:
    the compensation settles the hold's key first (a placeholder that holds no money,
    voided at once) and leaves its tombstone, so the step's hold is refused by the
    provider and the step by the ledger. No money was ever held."""
    env = ActivityEnvironment()

    async def compensation_runs() -> None:
        await env.run(activities.refund_customer, RunRef(ref, ORDER))

    gateway.before = compensation_runs
    with pytest.raises(ApplicationError) as refused:
        await env.run(activities.process_credit_card, charge(ref))
    assert (refused.value.type, refused.value.non_retryable) == ("LateStepRefusedError", True)
    money = await money_of(gateway, ledger, ref)
    assert money.payment.is_placeholder and money.payment.state == MoneyState.RELEASED
    assert "refund_customer" in money.ledger.tombstones
    assert money.ledger.rows[LATE_PAYMENT_UNDONE] == 0 and money.ledger.payments == []
    assert (money.ledger.charged, money.ledger.refunded) == (0, 0)


async def test_a_hold_made_while_its_compensation_looked_is_found_and_released(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: Interleaving, ref: str
) -> None:
    """The compensation looks once the provider holds the card but before the step wrote
    it: it finds the hold by key, writes it down and releases it; the step then finds its
    row already there. One hold, released; the books balance."""
    env = ActivityEnvironment()

    async def compensation_runs() -> None:
        await env.run(activities.refund_customer, RunRef(ref, ORDER))

    gateway.after = compensation_runs
    await env.run(activities.process_credit_card, charge(ref))
    money = await money_of(gateway, ledger, ref)
    assert money.payment.state == MoneyState.RELEASED
    assert (money.ledger.charged, money.ledger.refunded, money.ledger.money) == (
        AMOUNT,
        AMOUNT,
        "released",
    )
    assert gateway.calls["void"] == [money.payment.id]


async def test_a_card_token_is_held_instead_of_a_number(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: Interleaving, ref: str
) -> None:
    token = CreditCardInfo("Lisa Anderson", payment_method="pm_card_visa")
    confirmation = await ActivityEnvironment().run(
        activities.process_credit_card, charge(ref, token)
    )
    money = await money_of(gateway, ledger, ref)
    assert (money.payment.state, money.payment.card_last4) == (MoneyState.HELD, "4242")
    assert confirmation.card_last4 == "4242"  # the provider's, the ledger's
    assert money.ledger.cards == ["4242"]


async def test_a_hold_is_logged_by_its_last_four_digits_only(
    activities: PizzaOrderActivities,
    gateway: Interleaving,
    ref: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stripe library logs request bodies (the card number in them) at DEBUG, and
    prints them with STRIPE_LOG=debug: neither ever happens."""
    monkeypatch.setattr(stripe, "log", None)
    monkeypatch.setenv("STRIPE_LOG", "debug")
    debugging = StripeGateway(process.LOCAL_SECRET_KEY, gateway.base_url)
    await debugging.close()
    assert stripe.log == "info" and os.environ["STRIPE_LOG"] == "debug"
    caplog.set_level(logging.DEBUG)
    await ActivityEnvironment().run(activities.process_credit_card, charge(ref))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)
    assert "**** 4242" in logged
    assert GOOD_CARD not in logged
