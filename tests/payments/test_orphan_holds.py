"""No hold outlives its undone order, however late the provider makes it.

What chaos found: the card step gave up on a slow provider (its 3 s timeout), the saga
compensated, the compensation looked for the hold, found nothing yet, and the provider
made the hold afterwards: an orphan. Now the compensation settles the hold's key
(`OrderMoney.release`, `PaymentGateway.claim_key`) and the provider answers a request
whose key another request is still being processed under with 409, as Stripe does.

The provider runs in this process, its ``slow`` fault held until the test lets it go, so
that "still being processed" is a fact the test sets up, not a matter of timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from pizzeria import menu
from pizzeria.activities import PizzaOrderActivities
from pizzeria.ledger import Ledger
from pizzeria.models import CardCharge, CreditCardInfo, RunRef, order_ref, workflow_id_for
from pizzeria.money import payment_key
from pizzeria.ops.check.provider import read_provider, run_of
from pizzeria.ops.check.reconcile import reconcile
from pizzeria.ops.check.records import OrderRecord
from pizzeria.payments import process
from pizzeria.payments.errors import IdempotencyKeyReused, PaymentInProgress, PaymentUnavailable
from pizzeria.payments.port import MoneyState, Payment, order_metadata
from pizzeria.payments.provider.engine import Answer, Provider, Request
from pizzeria.payments.provider.server import ProviderServer, bind
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.worker import PAYMENTS_TIMEOUT_SECONDS
from tests.helpers import eventually
from tests.helpers.money_books import money_of

ORDER = sample_order("ORPHAN", prep_seconds=0)
AMOUNT = menu.billed_for(ORDER.items)  # $35.00
SECRET = {"Authorization": f"Bearer {process.LOCAL_SECRET_KEY}"}


class HeldProvider:
    """The local provider in this process, on a free port. A request a ``slow`` fault
    strikes is held (being processed, its key in use) until `let_go`; every answer's
    status is kept, in order."""

    def __init__(self, folder: Path) -> None:
        self.faults_file = folder / "faults.json"
        self.holding = threading.Event()  # a slowed request is being processed
        self._go = threading.Event()
        self.statuses: list[int] = []
        self._conflicts_before = 0
        self.engine = Provider(
            folder / "payments.db",
            hold_seconds=3600,
            faults_file=self.faults_file,
            sleep=self._held,
        )
        self.engine.handle = self._recorded(self.engine.handle)  # type: ignore[method-assign]
        self.server: ProviderServer = bind(self.engine, 0)
        self.url = self.server.url
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _recorded(self, handle: Any) -> Any:
        def recorded(request: Request) -> Answer:
            answer: Answer = handle(request)
            self.statuses.append(answer.status)
            return answer

        return recorded

    def _held(self, seconds: float) -> None:
        self.holding.set()
        if not self._go.wait(60):
            raise AssertionError("the test never let the held request go")

    def hold_next_hold(self) -> None:
        """The next hold asked for is held (only that one: the fault strikes once)."""
        self.holding.clear()
        self._go.clear()
        self._conflicts_before = self.statuses.count(409)
        temporary = self.faults_file.with_suffix(".tmp")
        temporary.write_text("authorize=slow/1:1")
        temporary.replace(self.faults_file)

    def let_go(self) -> None:
        self._go.set()

    async def conflicts(self, at_least: int) -> None:
        """Until ``at_least`` requests met a key in use since `hold_next_hold`."""

        def met() -> bool:
            return self.statuses.count(409) - self._conflicts_before >= at_least

        await eventually(met, f"{at_least} answers 409", 30, 0.01)

    def stop(self) -> None:
        self._go.set()
        self.server.shutdown()
        self.server.server_close()
        self.engine.close()


@pytest.fixture(scope="module")
def held_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeldProvider]:
    provider = HeldProvider(tmp_path_factory.mktemp("held-payments"))
    yield provider
    provider.stop()


@pytest.fixture
async def gateway(held_provider: HeldProvider) -> AsyncIterator[StripeGateway]:
    """The workers' gateway (their timeout), over the provider of this module: the
    activities of these tests move money through it."""
    held_provider.let_go()
    opened = StripeGateway(
        process.LOCAL_SECRET_KEY, held_provider.url, timeout=PAYMENTS_TIMEOUT_SECONDS
    )
    yield opened
    held_provider.let_go()
    await opened.close()


@pytest.fixture
def run() -> RunRef:
    number = f"ORPHAN-{uuid.uuid4().hex[:8]}"
    return RunRef(order_ref(workflow_id_for(number), f"run-{uuid.uuid4().hex}"), number)


def hold_key(run: RunRef) -> str:
    return payment_key(run.order_ref, "process_credit_card")


async def ask_for_the_hold(
    gateway: StripeGateway, run: RunRef, card: str = GOOD_CARD, **options: Any
) -> Payment:
    """What the card step sends, with the step's own key."""
    return await gateway.authorize(
        AMOUNT,
        idempotency_key=hold_key(run),
        metadata=order_metadata(run.order_ref, run.order_number),
        card_number=card,
        **options,
    )


def gateway_waiting(provider: HeldProvider, seconds: float) -> StripeGateway:
    return StripeGateway(
        process.LOCAL_SECRET_KEY, provider.url, timeout=30, in_progress_wait=seconds
    )


async def compensate(activities: PizzaOrderActivities, run: RunRef) -> Any:
    return await ActivityEnvironment().run(activities.refund_customer, run)


# -- the provider: a key in use -----------------------------------------------------------------


def hold_form(card: str = GOOD_CARD) -> dict[str, str]:
    return {
        "amount": str(AMOUNT),
        "currency": "usd",
        "capture_method": "manual",
        "confirm": "true",
        "payment_method_data[type]": "card",
        "payment_method_data[card][number]": card,
    }


async def test_a_request_whose_key_is_being_processed_gets_409_and_then_the_first_answer(
    held_provider: HeldProvider, run: RunRef
) -> None:
    key = hold_key(run)
    headers = {**SECRET, "Idempotency-Key": key}
    held_provider.hold_next_hold()
    async with httpx.AsyncClient(base_url=held_provider.url, headers=headers, timeout=60) as api:
        first = asyncio.create_task(api.post("/v1/payment_intents", data=hold_form()))
        await asyncio.to_thread(held_provider.holding.wait, 30)
        again = await api.post("/v1/payment_intents", data=hold_form())
        other = await api.post("/v1/payment_intents", data=hold_form("5555555555554444"))
        for refused in (again, other):  # other parameters too: nothing is compared yet
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "idempotency_key_in_use"
            assert "Idempotent-Replayed" not in refused.headers
        held_provider.let_go()
        made = await first
        assert made.status_code == 200 and made.json()["status"] == "requires_capture"
        replayed = await api.post("/v1/payment_intents", data=hold_form())
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == made.json()["id"]  # the 409s stored nothing


# -- the gateway: a retryable error, or the first request's answer ----------------------------


async def test_the_gateway_reads_409_as_retryable_and_a_patient_call_gets_the_first_answer(
    held_provider: HeldProvider, gateway: StripeGateway, run: RunRef
) -> None:
    impatient, patient = gateway_waiting(held_provider, 0), gateway_waiting(held_provider, 30)
    try:
        held_provider.hold_next_hold()
        first = asyncio.create_task(ask_for_the_hold(impatient, run))
        await asyncio.to_thread(held_provider.holding.wait, 30)
        with pytest.raises(PaymentInProgress) as busy:
            await ask_for_the_hold(impatient, run)
        assert busy.value.retryable and not busy.value.outcome_unknown
        assert (busy.value.http_status, busy.value.code) == (409, "idempotency_key_in_use")
        waiting = asyncio.create_task(ask_for_the_hold(patient, run))
        await held_provider.conflicts(2)  # the patient call met the key in use, and waits
        assert not waiting.done()
        held_provider.let_go()
        made, answered = await first, await waiting
    finally:
        await impatient.close()
        await patient.close()
    assert answered == made and made.state == MoneyState.HELD
    assert await gateway.find(hold_key(run)) == made


# -- the compensation settles the hold's key ----------------------------------------------------


async def test_a_hold_being_made_when_the_compensation_runs_is_waited_for_and_released(
    held_provider: HeldProvider,
    gateway: StripeGateway,
    activities: PizzaOrderActivities,
    ledger: Ledger,
    run: RunRef,
) -> None:
    """The chaos case: the card step gave up while the provider was still making the hold.
    The compensation finds the key in use, waits, and releases the hold once it exists."""
    held_provider.hold_next_hold()
    with pytest.raises(PaymentUnavailable) as gave_up:  # the step's timeout, as in chaos
        await ask_for_the_hold(gateway, run)
    assert gave_up.value.outcome_unknown and held_provider.holding.is_set()
    compensation = asyncio.create_task(compensate(activities, run))
    await held_provider.conflicts(1)  # it asked while the hold was still being made
    assert not compensation.done()
    held_provider.let_go()
    refund = await compensation
    assert (refund.amount, refund.applied) == (AMOUNT, True)
    money = await money_of(gateway, ledger, run.order_ref)
    assert [(p.state, p.amount, p.is_placeholder) for p in money.payments] == [
        (MoneyState.RELEASED, AMOUNT, False)
    ]
    assert money.refunds == []
    assert (money.ledger.charged, money.ledger.refunded, money.ledger.money) == (
        AMOUNT,
        AMOUNT,
        "released",
    )


async def test_a_hold_asked_for_after_the_compensation_is_never_made(
    gateway: StripeGateway, activities: PizzaOrderActivities, ledger: Ledger, run: RunRef
) -> None:
    """The card step's request had not reached the provider when the compensation ran:
    the compensation spends the hold's key on a placeholder that holds nothing, and the
    request, arriving late, is refused instead of holding the card."""
    refund = await compensate(activities, run)
    assert (refund.amount, refund.applied) == (0, False)
    with pytest.raises(IdempotencyKeyReused):
        await ask_for_the_hold(gateway, run)
    env = ActivityEnvironment()
    charge = CardCharge(run.order_ref, run.order_number, AMOUNT, CreditCardInfo("L", GOOD_CARD))
    with pytest.raises(ApplicationError) as refused:
        await env.run(activities.process_credit_card, charge)
    assert (refused.value.type, refused.value.non_retryable) == ("LateStepRefusedError", True)
    money = await money_of(gateway, ledger, run.order_ref)
    (placeholder,) = money.payments
    assert placeholder.is_placeholder and placeholder.state == MoneyState.RELEASED
    assert (placeholder.amount_capturable, placeholder.amount_captured) == (0, 0)
    assert placeholder.card_last4 is None and placeholder.payment_method is None  # no card
    assert await gateway.find(hold_key(run)) is None  # no payment of the card's
    assert "refund_customer" in money.ledger.tombstones
    assert (money.ledger.charged, money.ledger.refunded) == (0, 0)
    assert await compensate(activities, run) == refund  # once


async def test_a_hold_made_and_never_recorded_is_found_by_its_spent_key_and_released(
    gateway: StripeGateway, activities: PizzaOrderActivities, ledger: Ledger, run: RunRef
) -> None:
    held = await ask_for_the_hold(gateway, run)  # its worker died before the ledger
    assert await gateway.claim_key(hold_key(run), metadata={}) is None  # spent by the hold
    refund = await compensate(activities, run)
    assert (refund.amount, refund.applied) == (AMOUNT, True)
    money = await money_of(gateway, ledger, run.order_ref)
    assert [(p.id, p.state) for p in money.payments] == [(held.id, MoneyState.RELEASED)]


async def test_the_exercises_bad_number_leaves_nothing_at_the_provider(
    gateway: StripeGateway, activities: PizzaOrderActivities, ledger: Ledger, run: RunRef
) -> None:
    """The provider refused the number and made nothing: the key is spent on that refusal,
    so the compensation finds it spent, finds no payment, and makes no placeholder."""
    charge = CardCharge(run.order_ref, run.order_number, AMOUNT, CreditCardInfo("L", BAD_CARD))
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.process_credit_card, charge)
    assert (refused.value.type, refused.value.message) == (
        "CreditCardProcessingError",
        "Invalid credit card number",
    )
    refund = await compensate(activities, run)
    assert (refund.amount, refund.applied) == (0, False)
    money = await money_of(gateway, ledger, run.order_ref)
    assert money.payments == [] and "refund_customer" in money.ledger.tombstones


# -- the check: a placeholder reconciles ---------------------------------------------------------


def failed(run: RunRef) -> OrderRecord:
    workflow_id, _, run_id = run.order_ref.rpartition("/")
    order = dataclasses.replace(ORDER, order_number=run.order_number)
    return OrderRecord(workflow_id, run_id, "FAILED", error_type="ActivityError", order=order)


async def test_a_placeholder_reconciles_and_one_left_unvoided_is_named(
    gateway: StripeGateway, activities: PizzaOrderActivities, ledger: Ledger, run: RunRef
) -> None:
    await compensate(activities, run)  # the card step never reached the provider
    book = await read_provider(gateway)
    report = reconcile([failed(run)], ledger.snapshot(), provider=book)
    assert report.ok and report.violations == [], report.violations
    assert report.payments is not None and report.payments["payments"] == 0  # no money
    assert report.payments["undone_orders_settled"] == 1
    (placeholder,) = [p for p in book.payments.values() if run_of(p) == run.order_ref]
    book.payments[placeholder.id] = dataclasses.replace(
        placeholder, state=MoneyState.PENDING, provider_status="requires_payment_method"
    )
    report = reconcile([failed(run)], ledger.snapshot(), provider=book)
    assert [(v.kind, v.order) for v in report.violations] == [
        ("placeholder left open", run.order_number)
    ]
