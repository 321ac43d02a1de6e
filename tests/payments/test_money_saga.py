"""Real money through the saga, on a real Temporal server and the session's payment
provider: what the customer's card shows (the provider's book) and what the ledger records,
for a good order, the exercise's bad card, the declines, a delivery that failed, and a
provider that is down or loses its answers at each money step. Nothing is ever held,
captured or refunded twice, and no hold outlives its order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from pizzeria.activities import PizzaOrderActivities
from pizzeria.config import DriverSimulation
from pizzeria.failures import error_type_of
from pizzeria.history.timeline import order_report
from pizzeria.ledger import Ledger
from pizzeria.payments.port import MoneyState
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.faults import parse_faults, write_faults
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import failure_of
from tests.helpers.history import activity_timeline, finished
from tests.helpers.money_books import CountingGateway, money_of, run_ref

BILLED = 3500  # the exercise's three pizzas, 500 off


def no_driver(activities: PizzaOrderActivities) -> None:
    activities.driver = DriverSimulation(rounds=2, seconds_per_round=0, found_probability=0)


# -- the good order, the bad card, the declines ----------------------------------------------


async def test_a_good_order_holds_then_captures_one_payment(
    worker, start, ledger: Ledger, gateway: CountingGateway
) -> None:
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
        state = await handle.query(PizzaOrderWorkflow.saga_state)
    money = await money_of(gateway, ledger, await run_ref(handle))
    paid = money.payment
    assert (confirmation.status, confirmation.amount) == ("SUCCESS", BILLED)
    assert (paid.state, paid.amount, paid.amount_captured, paid.card_last4) == (
        MoneyState.CAPTURED,
        BILLED,
        BILLED,
        "4242",
    )
    assert money.refunds == []
    rows = money.ledger
    assert (rows.charged, rows.billed, rows.refunded, rows.money) == (BILLED, BILLED, 0, "captured")
    assert rows.payments == [
        ("process_credit_card", paid.id, "held"),
        ("send_bill", paid.id, "captured"),
    ]
    assert len(gateway.calls["authorize"]) == len(gateway.calls["capture"]) == 1
    assert state["details"] == "Completed"


async def card_refused(
    worker: Any, start: Any, card: str
) -> tuple[WorkflowHandle[Any, Any], ApplicationError]:
    """A good order paid with ``card``, failed for its card: the handle and the cause."""
    async with worker():
        handle = await start(sample_order(card=card, prep_seconds=0))
        failure = await failure_of(handle)
    assert error_type_of(failure) == "CreditCardProcessingError"
    cause = failure.__cause__
    assert isinstance(cause, ApplicationError)
    return handle, cause


async def test_the_exercises_bad_card_fails_exactly_as_before_and_holds_nothing(
    worker, start, ledger: Ledger, gateway: CountingGateway
) -> None:
    handle, cause = await card_refused(worker, start, BAD_CARD)
    assert (cause.message, cause.non_retryable, cause.details) == (
        "Invalid credit card number",
        True,
        (),
    )
    assert finished(await activity_timeline(handle))[-3:] == [
        ("process_credit_card", "failed"),
        ("refund_customer", "completed"),
        ("revert_inventory", "completed"),
    ]
    money = await money_of(gateway, ledger, await run_ref(handle))
    assert money.payments == []  # the provider refused the number: nothing created
    assert money.ledger.charged == money.ledger.refunded == 0
    assert "refund_customer" in money.ledger.tombstones
    assert "void" not in gateway.calls


@pytest.mark.parametrize(
    ("card", "message", "code", "decline_code"),
    [
        ("4000000000000002", "Your card was declined.", "card_declined", "generic_decline"),
        (
            "4000000000009995",
            "Your card has insufficient funds.",
            "card_declined",
            "insufficient_funds",
        ),
        ("4000000000000069", "Your card has expired.", "expired_card", "expired_card"),
    ],
    ids=["declined", "insufficient-funds", "expired-card"],
)
async def test_a_declined_card_fails_the_order_with_its_reason_and_holds_nothing(
    worker, start, ledger: Ledger, gateway: CountingGateway, card, message, code, decline_code
) -> None:
    handle, cause = await card_refused(worker, start, card)
    assert cause.non_retryable
    assert cause.message == message
    assert cause.details[0] == {"code": code, "decline_code": decline_code}
    assert [name for name, _ in finished(await activity_timeline(handle))][-2:] == [
        "refund_customer",
        "revert_inventory",
    ]
    money = await money_of(gateway, ledger, await run_ref(handle))
    assert money.payment.state == MoneyState.DECLINED
    assert money.payment.amount_captured == 0 and money.refunds == []
    assert (money.ledger.charged, money.ledger.refunded, money.ledger.billed) == (0, 0, 0)


# -- a delivery that failed --------------------------------------------------------------------


async def test_an_order_no_driver_took_is_refunded_in_full_as_a_step_forward(
    client: Client,
    worker,
    start,
    ledger: Ledger,
    gateway: CountingGateway,
    activities: PizzaOrderActivities,
) -> None:
    no_driver(activities)
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
        report = await order_report(client, handle)  # what `pizzeria status` shows
    assert (confirmation.status, confirmation.amount) == ("DELIVERY FAILURE", BILLED)
    assert finished(await activity_timeline(handle))[-2:] == [
        ("notify_delivery_driver", "completed"),
        ("refund_undelivered_order", "completed"),
    ]
    said = {entry["name"]: (entry["summary"], entry["outcome"]) for entry in report["timeline"]}
    assert said["process_credit_card"] == ("Hold $35.00 on card ending 4242", "completed")
    assert said["send_bill"] == ("Capture the hold: bill $35.00", "completed")
    assert said["refund_undelivered_order"] == ("No driver: refund $35.00", "completed")
    money = await money_of(gateway, ledger, await run_ref(handle))
    assert (money.payment.state, money.payment.amount_refunded) == (MoneyState.REFUNDED, BILLED)
    (refund,) = money.refunds
    assert (refund.amount, refund.payment_id) == (BILLED, money.payment.id)
    rows = money.ledger
    assert (rows.billed, rows.refunded_after_bill, rows.money) == (BILLED, BILLED, "refunded")
    assert rows.payments[-1] == ("refund_undelivered_order", money.payment.id, "refunded")


# -- the provider down, or losing its answer, at each money step -------------------------------

#: A failure after the hold, before the pivot: the hold must be released.
UNDONE_AFTER_THE_HOLD = "send_bill=refuse"
#: The step that makes each call to the provider.
STEP_OF = {
    "authorize": "process_credit_card",
    "capture": "send_bill",
    "void": "refund_customer",
    "refund": "refund_undelivered_order",
}


@pytest.mark.parametrize(
    ("provider_fault", "worker_fault", "delivered", "money_state"),
    [
        ("authorize=error:2", "", True, MoneyState.CAPTURED),
        ("authorize=refuse:2", "", True, MoneyState.CAPTURED),
        ("authorize=lost:1", "", True, MoneyState.CAPTURED),
        ("capture=error/503:2", "", True, MoneyState.CAPTURED),
        ("capture=refuse:2", "", True, MoneyState.CAPTURED),
        ("capture=lost:1", "", True, MoneyState.CAPTURED),
        ("void=error:2", UNDONE_AFTER_THE_HOLD, True, MoneyState.RELEASED),
        ("void=refuse:2", UNDONE_AFTER_THE_HOLD, True, MoneyState.RELEASED),
        ("void=lost:1", UNDONE_AFTER_THE_HOLD, True, MoneyState.RELEASED),
        ("refund=error:2", "", False, MoneyState.REFUNDED),
        ("refund=refuse:2", "", False, MoneyState.REFUNDED),
        ("refund=lost:1", "", False, MoneyState.REFUNDED),
    ],
)
async def test_a_provider_down_or_losing_its_answer_never_moves_money_twice(
    activities: PizzaOrderActivities,
    client: Client,
    worker,
    start,
    ledger: Ledger,
    gateway: CountingGateway,
    faults_file,
    provider_faults: Callable[[str], None],
    provider_fault: str,
    worker_fault: str,
    delivered: bool,
    money_state: MoneyState,
) -> None:
    operation = provider_fault.split("=")[0]
    write_faults(faults_file, parse_faults(worker_fault))
    if not delivered:
        no_driver(activities)
    provider_faults(provider_fault)
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        outcome: Any = await failure_of(handle) if worker_fault else (await handle.result()).status
    provider_faults("")
    money = await money_of(gateway, ledger, await run_ref(handle))
    paid = money.payment  # one payment, however often the step was tried
    assert paid.state == money_state, (paid, outcome)
    # The fault struck and the step was tried again: an answer that never came is asked
    # for again with the same key, except a void, whose retry finds the hold released.
    report = await order_report(client, handle, query_closed=False)
    attempts = {entry["name"]: entry["attempts"] for entry in report["timeline"]}
    assert attempts[STEP_OF[operation]] >= 2
    if "lost" in provider_fault and operation == "void":
        assert len(gateway.calls[operation]) == 1
    else:
        assert len(gateway.calls[operation]) >= 2
    rows = money.ledger
    if money_state == MoneyState.CAPTURED:
        assert outcome == "SUCCESS"
        assert (paid.amount_captured, rows.billed, money.refunds) == (BILLED, BILLED, [])
    elif money_state == MoneyState.RELEASED:
        assert error_type_of(outcome) == "InjectedFault"
        assert (paid.amount_captured, rows.charged, rows.refunded, rows.billed) == (
            0,
            BILLED,
            BILLED,
            0,
        )
        assert money.refunds == []  # a hold is released, never refunded
    else:
        assert outcome == "DELIVERY FAILURE"
        assert [refund.amount for refund in money.refunds] == [BILLED]  # one refund
        assert rows.refunded_after_bill == BILLED
    assert rows.money == str(money_state)
