"""Late steps lose: a step that takes effect after its timeout never doubles or resurrects.

The ``late`` fault makes an attempt write only after its start-to-close timeout, even
though Temporal cancelled it. By then Temporal has either retried the step (the late write
finds the retry's row: a no-op) or compensated it (the late write finds the compensation's
tombstone: refused). First each activity on its own, then the real workflow on a server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from pizzeria.activities import PizzaOrderActivities
from pizzeria.ledger import Effect, LateStepRefused, Ledger, open_ledger
from pizzeria.ledger.book import Tx
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_UPDATE_INVENTORY,
    Bill,
    CreditCardCharge,
    CreditCardInfo,
    Pizza,
    StockRequest,
    split_order_ref,
)
from pizzeria.samples import EXERCISE_ITEMS, GOOD_CARD, sample_order
from pizzeria.temporal.faults import FaultPlan, parse_faults, write_faults
from tests.helpers import eventually

#: The ledger's own rules, end to end: run once more on PostgreSQL.
pytestmark = [pytest.mark.timeout(120), pytest.mark.ledger]

T = TypeVar("T")

REF = "pizza-workflow-order-LATE/run-1"
ITEMS = [Pizza(description, price) for description, price in EXERCISE_ITEMS]


@pytest.fixture(autouse=True)
def unique_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test a run of its own: the session's payment provider keeps every key."""
    monkeypatch.setattr(sys.modules[__name__], "REF", f"pizza-workflow-order-LATE/{uuid.uuid4()}")


class RecordingLedger(Ledger):
    """A ledger that remembers how each take, charge and bill call ended, in order.

    It runs the ledger's own logic on the transactions of the backend under test."""

    def __init__(self, backend: Ledger) -> None:
        super().__init__(backend.location, read_only=backend.read_only)
        self.backend = backend
        self.calls: list[tuple[str, str]] = []  # (step, "applied" | "repeat" | "refused")

    def _transaction(self, body: Callable[[Tx], T], **options: Any) -> T:
        return self.backend._transaction(body, **options)

    def _table_names(self, tx: Tx) -> set[str]:
        return self.backend._table_names(tx)

    def close(self) -> None:
        self.backend.close()

    def _record(self, step: str, call: Callable[[], Effect]) -> Effect:
        try:
            effect = call()
        except LateStepRefused:
            self.calls.append((step, "refused"))
            raise
        self.calls.append((step, "applied" if effect.applied else "repeat"))
        return effect

    def take_stock(self, order_ref: str, order_number: str, ingredients: dict[str, int]) -> Effect:
        return self._record(
            STEP_UPDATE_INVENTORY,
            lambda: super(RecordingLedger, self).take_stock(order_ref, order_number, ingredients),
        )

    def charge(
        self, order_ref: str, order_number: str, amount: int, card_last4: str, **money: str
    ) -> Effect:
        return self._record(
            STEP_PROCESS_CREDIT_CARD,
            lambda: super(RecordingLedger, self).charge(
                order_ref, order_number, amount, card_last4, **money
            ),
        )

    def bill(
        self, order_ref: str, order_number: str, amount: int, confirmation: str, **money: str
    ) -> Effect:
        return self._record(
            STEP_SEND_BILL,
            lambda: super(RecordingLedger, self).bill(
                order_ref, order_number, amount, confirmation, **money
            ),
        )

    def calls_of(self, step: str) -> list[str]:
        return [outcome for name, outcome in self.calls if name == step]


@pytest.fixture
def ledger(ledger_location: str) -> Iterator[RecordingLedger]:
    opened = RecordingLedger(open_ledger(ledger_location))
    yield opened
    opened.close()


@pytest.fixture
def late_margin() -> float:
    return 0.5


@pytest.fixture
def fault_plan(faults_file: Path, late_margin: float) -> FaultPlan:
    return FaultPlan(faults_file, env_value="", late_margin=late_margin)


def late(faults_file: Path, spec: str) -> None:
    write_faults(faults_file, parse_faults(spec))


def each_undoable_step(mode: str, inventory_id: str, charge_id: str) -> pytest.MarkDecorator:
    """The test once per step that has a compensation, with the fault ``mode`` on it."""
    return pytest.mark.parametrize(
        ("spec", "step", "compensation"),
        [
            (f"update_inventory={mode}:1", STEP_UPDATE_INVENTORY, COMPENSATE_REVERT_INVENTORY),
            (f"process_credit_card={mode}:1", STEP_PROCESS_CREDIT_CARD, COMPENSATE_REFUND_CUSTOMER),
        ],
        ids=[inventory_id, charge_id],
    )


async def fails_with_one_attempt(start: Any, faults_file: Path, spec: str) -> None:
    """A good order with one attempt per step, the fault ``spec`` on: it fails."""
    late(faults_file, spec)
    handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, step_attempts=1))
    with pytest.raises(WorkflowFailureError):
        await handle.result()


def attempt_of(attempt: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        attempt=attempt,
        workflow_id=split_order_ref(REF)[0],
        start_to_close_timeout=timedelta(seconds=0.2),
    )
    return env


def stock_request() -> StockRequest:
    return StockRequest(order_ref=REF, order_number="LATE", items=ITEMS)


def card_charge() -> CreditCardCharge:
    bill = Bill(8675309, "LATE", "Pizza order", 4000, REF)
    return CreditCardCharge(bill, CreditCardInfo("Lisa Anderson", GOOD_CARD), 3500, REF)


async def refused(call: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await call
    return raised.value


# -- one activity at a time ----------------------------------------------------------------


async def test_inventory_taken_late_after_its_revert_is_refused_and_stock_unchanged(
    activities: PizzaOrderActivities,
    ledger: RecordingLedger,
    faults_file: Path,
    run_activity: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    late(faults_file, "update_inventory=late:1")
    before = ledger.stock()
    taking = asyncio.create_task(
        run_activity(attempt_of(1), activities.update_inventory, stock_request())
    )
    await asyncio.sleep(0.05)
    # The attempt timed out; the saga compensated: nothing taken yet, so a tombstone.
    reverted = await run_activity(attempt_of(1), activities.revert_inventory, stock_request())
    assert reverted.applied is False
    error = await refused(taking)
    assert error.type == "LateStepRefusedError" and error.non_retryable is True
    assert ledger.stock() == before
    assert [(row["step"], row["tombstone"]) for row in ledger.effects()] == [
        (COMPENSATE_REVERT_INVENTORY, 1)
    ]


async def test_a_charge_made_late_after_its_refund_is_refused_and_nothing_is_charged(
    activities: PizzaOrderActivities,
    ledger: RecordingLedger,
    faults_file: Path,
    run_activity: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    late(faults_file, "process_credit_card=late:1")
    charging = asyncio.create_task(
        run_activity(attempt_of(1), activities.process_credit_card, card_charge())
    )
    await asyncio.sleep(0.05)
    refund = await run_activity(attempt_of(1), activities.refund_customer, card_charge())
    assert (refund.amount, refund.applied) == (0, False)
    error = await refused(charging)
    assert error.type == "LateStepRefusedError"
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.billed) == (0, 0, 0)
    # Refused by the ledger before the card was asked for a hold: no payment either.
    assert ledger.calls_of(STEP_PROCESS_CREDIT_CARD) == ["refused"]
    assert order.payment_ids == []


async def test_a_late_write_after_the_retry_already_wrote_is_a_no_op(
    activities: PizzaOrderActivities,
    ledger: RecordingLedger,
    faults_file: Path,
    run_activity: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    late(faults_file, "process_credit_card=late:1,update_inventory=late:1")
    first_charge = asyncio.create_task(
        run_activity(attempt_of(1), activities.process_credit_card, card_charge())
    )
    first_take = asyncio.create_task(
        run_activity(attempt_of(1), activities.update_inventory, stock_request())
    )
    await asyncio.sleep(0.05)
    retried_charge = await run_activity(
        attempt_of(2), activities.process_credit_card, card_charge()
    )
    retried_take = await run_activity(attempt_of(2), activities.update_inventory, stock_request())
    after_retries = ledger.stock(), ledger.effects()
    assert await first_charge == retried_charge
    late_take = await first_take
    assert (late_take.applied, retried_take.applied) == (False, True)
    assert (ledger.stock(), ledger.effects()) == after_retries
    assert ledger.calls_of(STEP_PROCESS_CREDIT_CARD) == ["applied", "repeat"]
    assert len(ledger.orders()[0].payment_ids) == 1  # one hold, the same key
    assert ledger.calls_of(STEP_UPDATE_INVENTORY) == ["applied", "repeat"]


async def test_a_bill_sent_late_after_the_refund_is_refused(
    activities: PizzaOrderActivities,
    ledger: RecordingLedger,
    faults_file: Path,
    run_activity: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    late(faults_file, "send_bill=late:1")
    await run_activity(attempt_of(1), activities.process_credit_card, card_charge())
    billing = asyncio.create_task(
        run_activity(attempt_of(1), activities.send_bill, card_charge().bill)
    )
    await asyncio.sleep(0.05)
    await run_activity(attempt_of(1), activities.refund_customer, card_charge())
    assert (await refused(billing)).type == "LateStepRefusedError"
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.billed) == (3500, 3500, 0)


# -- the real workflow ---------------------------------------------------------------------


@each_undoable_step("late", "inventory-late-after-revert", "charge-late-after-refund")
async def test_a_step_writing_after_its_timeout_finds_the_tombstone_of_its_compensation(
    worker, start, ledger: RecordingLedger, faults_file, spec, step, compensation
):
    """One attempt only: the timed-out step fails the order, the saga compensates (nothing
    to undo yet: a tombstone), then the step's late write arrives and is refused."""
    before = ledger.stock()
    async with worker():
        await fails_with_one_attempt(start, faults_file, spec)
        await eventually(lambda: "refused" in ledger.calls_of(step), "the late write")
    assert ledger.calls_of(step) == ["refused"]
    assert ledger.stock() == before
    rows = {row["step"]: row["tombstone"] for row in ledger.effects()}
    assert rows[compensation] == 1 and step not in rows
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.stock_held) == (0, 0, {})


@pytest.mark.parametrize("late_margin", [3.0])  # write after Temporal's retry (1 s later)
async def test_a_step_writing_after_its_retry_changes_nothing_and_the_order_completes(
    worker, start, ledger: RecordingLedger, faults_file, late_margin
):
    late(faults_file, "process_credit_card=late:1")
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
        await eventually(
            lambda: len(ledger.calls_of(STEP_PROCESS_CREDIT_CARD)) == 2, "the late write"
        )
    assert ledger.calls_of(STEP_PROCESS_CREDIT_CARD) == ["applied", "repeat"]
    (order,) = ledger.orders()
    assert order.charged == order.billed == confirmation.amount == 3500
    assert order.refunded == 0


# -- lost answers: the step took effect, the workflow never heard -------------------------------


@each_undoable_step("lost", "inventory-answer-lost", "charge-answer-lost")
async def test_a_step_whose_answer_was_lost_is_undone_by_its_compensation(
    worker, start, ledger: RecordingLedger, faults_file, spec, step, compensation
):
    """Why compensations are registered before their step: out of attempts, the step
    'failed', yet it took effect, and only its compensation undoes it."""
    before = ledger.stock()
    async with worker():
        await fails_with_one_attempt(start, faults_file, spec)
    rows = {row["step"]: row["tombstone"] for row in ledger.effects()}
    assert rows[step] == 0 and rows[compensation] == 0  # taken effect, then truly undone
    assert ledger.stock() == before
    (order,) = ledger.orders()
    assert order.charged - order.refunded == 0 and order.stock_held == {}


async def test_a_step_whose_answer_was_lost_is_retried_once_more_and_changes_nothing(
    worker, start, ledger: RecordingLedger, faults_file
):
    late(faults_file, "process_credit_card=lost:1")
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
    assert ledger.calls_of(STEP_PROCESS_CREDIT_CARD) == ["applied", "repeat"]
    (order,) = ledger.orders()
    assert order.charged == order.billed == confirmation.amount and order.refunded == 0


async def test_a_bill_whose_answer_was_lost_still_goes_forward(
    worker, start, ledger: RecordingLedger, faults_file
):
    """The bill is the pivot: billed means the order goes forward, answer or not."""
    late(faults_file, "send_bill=lost:1")
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, step_attempts=1))
        try:
            confirmation = await handle.result()
        finally:
            (order,) = ledger.orders()
    assert order.billed == confirmation.amount == order.charged - order.refunded
