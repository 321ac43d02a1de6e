"""Each activity in an ActivityEnvironment, against a real ledger: no Temporal server."""

from __future__ import annotations

import dataclasses
import logging
import sys
import uuid
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from pizzeria.activities import PizzaOrderActivities, confirmation_number
from pizzeria.config import DriverSimulation
from pizzeria.ledger import Ledger, open_ledger
from pizzeria.menu import ingredients_for
from pizzeria.models import (
    STATUS_SUCCESS,
    Address,
    Bill,
    CreditCardCharge,
    CreditCardInfo,
    OrderConfirmation,
    Pizza,
    StockRequest,
)
from pizzeria.money import payment_key
from pizzeria.payments.port import MoneyState, Payment, PaymentGateway
from pizzeria.samples import BAD_CARD, EXERCISE_ITEMS, GOOD_CARD
from pizzeria.temporal.faults import INJECTED_FAULT_ERROR, FaultPlan, parse_faults, write_faults

#: The ledger's own rules, end to end: run once more on PostgreSQL.
pytestmark = pytest.mark.ledger

ORDER = "XD001"
# Each test its own run (see `unique_run`): the payment provider is the session's, and it
# remembers every idempotency key, which the run's reference is part of.
REF = "pizza-workflow-order-XD001/run-1"
ITEMS = [Pizza(description, price) for description, price in EXERCISE_ITEMS]
TOTAL = sum(price for _, price in EXERCISE_ITEMS)  # 4000
BILLED = 3500


@pytest.fixture(autouse=True)
def unique_run(monkeypatch: pytest.MonkeyPatch) -> str:
    ref = f"pizza-workflow-order-XD001/run-{uuid.uuid4().hex}"
    monkeypatch.setattr(sys.modules[__name__], "REF", ref)
    return ref


def stock_request(ref: str | None = None, items: list[Pizza] | None = None) -> StockRequest:
    return StockRequest(
        order_ref=ref or REF, order_number=ORDER, items=ITEMS if items is None else items
    )


def bill(ref: str | None = None, amount: int = TOTAL) -> Bill:
    return Bill(
        customer_id=8675309,
        order_number=ORDER,
        description="; ".join(d for d, _ in EXERCISE_ITEMS),
        amount=amount,
        order_ref=ref or REF,
    )


def card_charge(
    card: str = GOOD_CARD, amount: int = BILLED, ref: str | None = None
) -> CreditCardCharge:
    return CreditCardCharge(
        bill=bill(ref),
        credit_card=CreditCardInfo(holderName="Lisa Anderson", number=card),
        amount=amount,
        order_ref=ref or REF,
    )


async def payment_of(gateway: PaymentGateway, step: str = "process_credit_card") -> Payment:
    """The provider's payment made under this run's key for ``step``."""
    found = await gateway.find(payment_key(REF, step))
    assert found is not None, f"no payment at the provider for {REF}/{step}"
    return found


def balances(ledger: Ledger) -> tuple[Any, ...]:
    """Everything the ledger holds: stock, every row, the per-run summary."""
    return ledger.stock(), ledger.effects(), ledger.orders()


async def application_error(call: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await call
    return raised.value


def confirmation() -> OrderConfirmation:
    return OrderConfirmation(ORDER, STATUS_SUCCESS, "P1234", 0, BILLED)


# -- repeats change nothing ----------------------------------------------------------------


async def test_update_inventory_twice_with_one_key_takes_stock_once(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    env = ActivityEnvironment()
    before = ledger.stock()
    first = await env.run(activities.update_inventory, stock_request())
    assert first.applied is True
    assert first.ingredients == ingredients_for(ITEMS)
    for name, count in first.ingredients.items():
        assert ledger.stock()[name]["quantity"] == before[name]["quantity"] - count
    after_first = balances(ledger)

    env.info = dataclasses.replace(env.info, attempt=2)  # a retry shares the key
    second = await env.run(activities.update_inventory, stock_request())
    assert second.applied is False
    assert second.ingredients == first.ingredients
    assert balances(ledger) == after_first


async def test_revert_inventory_twice_puts_stock_back_once(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    env = ActivityEnvironment()
    before = ledger.stock()
    await env.run(activities.update_inventory, stock_request())
    first = await env.run(activities.revert_inventory, stock_request())
    assert first.applied is True
    assert first.ingredients == ingredients_for(ITEMS)
    assert ledger.stock() == before
    after_first = balances(ledger)

    second = await env.run(activities.revert_inventory, stock_request())
    assert second.applied is False
    assert balances(ledger) == after_first


async def test_process_credit_card_twice_charges_once(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    env = ActivityEnvironment()
    first = await env.run(activities.process_credit_card, card_charge())
    after_first = balances(ledger)
    env.info = dataclasses.replace(env.info, attempt=3)
    second = await env.run(activities.process_credit_card, card_charge())
    assert balances(ledger) == after_first
    assert second == first
    assert [order.charged for order in ledger.orders()] == [BILLED]


async def test_refund_customer_twice_refunds_once(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    env = ActivityEnvironment()
    await env.run(activities.process_credit_card, card_charge())
    first = await env.run(activities.refund_customer, card_charge())
    assert (first.amount, first.applied) == (BILLED, True)
    after_first = balances(ledger)
    second = await env.run(activities.refund_customer, card_charge())
    assert (second.amount, second.applied) == (BILLED, False)
    assert balances(ledger) == after_first
    (order,) = ledger.orders()
    assert (order.charged, order.refunded) == (BILLED, BILLED)


async def test_send_bill_twice_bills_once(activities: PizzaOrderActivities, ledger: Ledger) -> None:
    env = ActivityEnvironment()
    await env.run(activities.process_credit_card, card_charge())
    first = await env.run(activities.send_bill, bill())
    after_first = balances(ledger)
    second = await env.run(activities.send_bill, bill())
    assert second == first
    assert balances(ledger) == after_first
    assert [order.billed for order in ledger.orders()] == [BILLED]


# -- credit card ---------------------------------------------------------------------------


async def test_process_credit_card_with_the_15_digit_card_fails_for_good_without_a_charge(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    error = await application_error(
        ActivityEnvironment().run(activities.process_credit_card, card_charge(card=BAD_CARD))
    )
    assert error.type == "CreditCardProcessingError"
    assert error.non_retryable is True
    assert error.message == "Invalid credit card number"
    assert ledger.effects() == []


async def test_process_credit_card_holds_the_amount_given_at_the_provider(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: PaymentGateway
) -> None:
    result = await ActivityEnvironment().run(
        activities.process_credit_card, card_charge(amount=1234)
    )
    assert result.amount == 1234
    assert result.card_last4 == "4242"
    assert result.confirmation_number == confirmation_number(REF, "PAYME-")
    held = await payment_of(gateway)
    assert (held.state, held.amount, held.amount_captured) == (MoneyState.HELD, 1234, 0)
    assert (result.payment_id, result.state) == (held.id, "held")
    (row,) = ledger.effects(REF)
    assert (row["step"], row["amount"], row["reference"]) == ("process_credit_card", 1234, "4242")
    assert (row["payment_id"], row["money_state"]) == (held.id, "held")


async def test_process_credit_card_refuses_a_negative_amount(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    error = await application_error(
        ActivityEnvironment().run(activities.process_credit_card, card_charge(amount=-1))
    )
    assert error.type == "InvalidChargeAmountError"
    assert error.non_retryable is True
    assert ledger.effects() == []


async def test_process_credit_card_after_its_refund_is_refused_before_the_provider(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: PaymentGateway
) -> None:
    env = ActivityEnvironment()
    refund = await env.run(activities.refund_customer, card_charge())
    assert refund.amount == 0
    error = await application_error(env.run(activities.process_credit_card, card_charge()))
    assert error.type == "LateStepRefusedError"
    assert error.non_retryable is True
    (order,) = ledger.orders()
    assert (order.charged, order.refunded) == (0, 0)
    assert await gateway.find(payment_key(REF, "process_credit_card")) is None


async def test_process_credit_card_never_logs_the_full_card_number(
    activities: PizzaOrderActivities, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await ActivityEnvironment().run(activities.process_credit_card, card_charge())
    messages = [record.getMessage() for record in caplog.records]
    assert any("**** 4242" in message for message in messages)
    for record in caplog.records:
        assert GOOD_CARD not in record.getMessage()
        assert GOOD_CARD not in repr(record.__dict__)


async def test_a_refused_card_is_not_logged_either(
    activities: PizzaOrderActivities, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.process_credit_card, card_charge(card=BAD_CARD))
    assert BAD_CARD not in str(raised.value)
    assert all(BAD_CARD not in record.getMessage() for record in caplog.records)
    assert all(BAD_CARD not in repr(record.__dict__) for record in caplog.records)
    # Said for the operator, with the last four digits and why.
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Card ")]
    said = f"Card **** {BAD_CARD[-4:]} refused for order {ORDER}: Invalid credit card number"
    assert len(refused) == 1 and refused[0].startswith(said), refused


# -- compensations -------------------------------------------------------------------------


async def test_refund_customer_after_a_hold_releases_it_and_never_refunds(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: PaymentGateway
) -> None:
    env = ActivityEnvironment()
    charged = await env.run(activities.process_credit_card, card_charge(amount=2750))
    refund = await env.run(activities.refund_customer, card_charge(amount=9999))
    assert refund.amount == charged.amount == 2750
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.money) == (2750, 2750, "released")
    released = await payment_of(gateway)
    assert (released.state, released.amount_captured, released.amount_refunded) == (
        MoneyState.RELEASED,
        0,
        0,
    )
    assert [r async for r in gateway.iter_refunds(payment_id=released.id)] == []


async def test_refund_customer_without_a_charge_refunds_nothing(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    refund = await ActivityEnvironment().run(activities.refund_customer, card_charge())
    assert refund.amount == 0
    (order,) = ledger.orders()
    assert (order.charged, order.refunded) == (0, 0)


async def test_revert_inventory_without_a_prior_update_is_a_noop(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    before = ledger.stock()
    change = await ActivityEnvironment().run(activities.revert_inventory, stock_request())
    assert change.ingredients == {}
    assert ledger.stock() == before
    (row,) = ledger.effects(REF)
    assert row["tombstone"] == 1


async def test_update_inventory_after_its_revert_is_refused(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    env = ActivityEnvironment()
    before = ledger.stock()
    await env.run(activities.revert_inventory, stock_request())
    error = await application_error(env.run(activities.update_inventory, stock_request()))
    assert error.type == "LateStepRefusedError"
    assert error.non_retryable is True
    assert ledger.stock() == before


async def test_another_run_of_the_order_keeps_its_own_effects(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    env = ActivityEnvironment()
    other = "pizza-workflow-order-XD001/run-2"
    await env.run(activities.update_inventory, stock_request())
    await env.run(activities.process_credit_card, card_charge())
    first_rows = ledger.effects(REF)
    assert (await env.run(activities.revert_inventory, stock_request(other))).ingredients == {}
    assert (await env.run(activities.refund_customer, card_charge(ref=other))).amount == 0
    assert ledger.effects(REF) == first_rows


# -- inventory errors ----------------------------------------------------------------------


async def test_update_inventory_with_an_unknown_topping_fails_for_good(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    request = stock_request(items=[Pizza("Large, with anchovies", 1500)])
    error = await application_error(ActivityEnvironment().run(activities.update_inventory, request))
    assert error.type == "UnknownToppingError"
    assert error.non_retryable is True
    assert ledger.effects() == []


async def test_update_inventory_out_of_stock_fails_for_good_and_takes_nothing(
    ledger_location: str, gateway: PaymentGateway
) -> None:
    small = open_ledger(ledger_location, initial_stock=5)
    try:
        activities = PizzaOrderActivities(small, payments=gateway)
        before = small.stock()
        error = await application_error(
            ActivityEnvironment().run(activities.update_inventory, stock_request())
        )
        assert error.type == "OutOfStockError"
        assert error.non_retryable is True
        assert "cheese" in error.message
        assert small.stock() == before
        assert small.effects() == []
    finally:
        small.close()


# -- bill ----------------------------------------------------------------------------------


async def test_send_bill_applies_the_discount_and_captures_the_hold(
    activities: PizzaOrderActivities, ledger: Ledger, gateway: PaymentGateway
) -> None:
    env = ActivityEnvironment()
    await env.run(activities.process_credit_card, card_charge(amount=BILLED))
    result = await env.run(activities.send_bill, bill(amount=TOTAL))
    captured = await payment_of(gateway)
    assert (captured.state, captured.amount_captured) == (MoneyState.CAPTURED, BILLED)
    assert ledger.orders()[0].money == "captured"
    assert result.amount == BILLED
    assert result.status == STATUS_SUCCESS
    assert result.order_number == ORDER
    assert result.confirmation_number == confirmation_number(REF, "P")
    assert [order.billed for order in ledger.orders()] == [BILLED]


async def test_send_bill_at_the_threshold_gets_no_discount(
    activities: PizzaOrderActivities,
) -> None:
    env = ActivityEnvironment()
    await env.run(activities.process_credit_card, card_charge(amount=3000))
    result = await env.run(activities.send_bill, bill(amount=3000))
    assert result.amount == 3000


async def test_send_bill_without_a_hold_bills_nothing_and_fails_for_good(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    error = await application_error(ActivityEnvironment().run(activities.send_bill, bill()))
    assert (error.type, error.non_retryable) == ("CreditCardProcessingError", True)
    assert "nothing was billed" in error.message
    assert ledger.effects() == []


async def test_send_bill_with_a_negative_amount_is_an_invalid_charge(
    activities: PizzaOrderActivities, ledger: Ledger
) -> None:
    error = await application_error(
        ActivityEnvironment().run(activities.send_bill, bill(amount=-100))
    )
    assert error.type == "InvalidChargeAmountError"
    assert error.non_retryable is True
    assert ledger.effects() == []


# -- driver and distance -------------------------------------------------------------------


async def test_notify_delivery_driver_finds_a_driver_when_one_always_answers(
    activities: PizzaOrderActivities,
) -> None:
    assert activities.driver.found_probability == 1.0
    assert await ActivityEnvironment().run(activities.notify_delivery_driver, confirmation())


async def test_notify_delivery_driver_gives_up_when_nobody_answers(
    ledger: Ledger, gateway: PaymentGateway
) -> None:
    activities = PizzaOrderActivities(
        ledger,
        driver=DriverSimulation(rounds=3, seconds_per_round=0, found_probability=0.0),
        payments=gateway,
    )
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    found = await env.run(activities.notify_delivery_driver, confirmation())
    assert found is False
    assert len(beats) == 3


async def test_get_distance_is_the_same_for_the_same_address(
    activities: PizzaOrderActivities,
) -> None:
    address = Address("741 Evergreen Terrace", "Apartment 221B", "Albuquerque", "NM", "87101")
    env = ActivityEnvironment()
    first = await env.run(activities.get_distance, address)
    assert first == await env.run(activities.get_distance, address)
    assert first.kilometers == len(address.line1) + len(address.line2) - 10
    short = Address("1 A St", "", "X", "NM", "1")
    assert (await env.run(activities.get_distance, short)).kilometers == 5


# -- faults --------------------------------------------------------------------------------


async def test_an_injected_fault_fails_the_step_before_any_effect(
    activities: PizzaOrderActivities,
    ledger: Ledger,
    faults_file: Path,
    run_activity: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    write_faults(faults_file, parse_faults("process_credit_card=fail:1"))
    env = ActivityEnvironment()
    error = await application_error(
        run_activity(env, activities.process_credit_card, card_charge())
    )
    assert error.type == INJECTED_FAULT_ERROR
    assert error.non_retryable is False
    assert ledger.effects() == []
    env.info = dataclasses.replace(env.info, attempt=2)
    assert (await run_activity(env, activities.process_credit_card, card_charge())).amount == BILLED


async def test_a_lost_answer_comes_after_the_effect_of_the_step_it_names(
    activities: PizzaOrderActivities,
    ledger: Ledger,
    fault_plan: FaultPlan,
    faults_file: Path,
    run_activity: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    """The interceptor names the step by its activity type: only the refund loses its
    answer, and only after it refunded."""
    fault_plan.late_margin = 0
    write_faults(faults_file, parse_faults("refund_customer=lost:1"))
    await run_activity(ActivityEnvironment(), activities.process_credit_card, card_charge())
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(milliseconds=10))
    error = await application_error(run_activity(env, activities.refund_customer, card_charge()))
    assert error.type == INJECTED_FAULT_ERROR and "refund_customer answer lost" in error.message
    (order,) = ledger.orders()
    assert (order.charged, order.refunded) == (BILLED, BILLED)
