"""An answer once the card is held: the order's ``order_accepted`` Update, sent with its
start (Update-with-Start), answers while the kitchen still prepares the order; a refused
order fails it once what it did is undone. Through the API: 201 with the hold, a problem
for a refusal (402 for a declined card), 202 with ``Prefer: respond-async``.

Both test servers run Update-with-Start, so the workflow's tests run in both passes; the
API's start their own stack (a dev server, a worker and ``pizzeria api``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from pizzeria.api import accepting, placing
from pizzeria.client import OrderAlreadyRunning, cancel_order
from pizzeria.client.early_answers import EarlyAnswer, Refusal, early_answer
from pizzeria.client.placing import start_order, start_with_answer
from pizzeria.failures import error_type_of
from pizzeria.ledger import Ledger
from pizzeria.models import (
    CREDIT_CARD_PROCESSING_ERROR,
    ORDER_CANCELLED_ERROR,
    OUT_OF_STOCK_ERROR,
    OUTSIDE_SERVICE_AREA_ERROR,
    PizzaOrder,
)
from pizzeria.order_hold import HELD, HOLD_BEFORE_KITCHEN_PATCH
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.faults import parse_faults, write_faults
from pizzeria.workflows import CURRENT_ORDER_PATCH, QUIET_CLOSE_PATCH
from tests.helpers import failure_of, pizzeria, unique_number
from tests.helpers.api_stack import Api, customer_body, order_body

pytestmark = pytest.mark.timeout(180)
E = EventType
PROBLEM = "application/problem+json"
EXERCISE_AMOUNT = 3500  # the exercise's three pizzas, discount included
UNDONE = ("refund_customer", "revert_inventory")


def pickup(prefix: str, card: str = GOOD_CARD, prep_seconds: float = 30) -> PizzaOrder:
    """A pickup whose kitchen takes ``prep_seconds``: long enough to still be running."""
    return sample_order(
        unique_number(prefix), card=card, is_delivery=False, prep_seconds=prep_seconds
    )


def run_of(ledger: Ledger, order_number: str) -> Any:
    (row,) = [row for row in ledger.orders() if row.order_number == order_number]
    return row


def steps_written(ledger: Ledger, order_number: str) -> list[str]:
    return [e["step"] for e in ledger.effects() if e["order_number"] == order_number]


def undone_with_nothing_kept(api: Api, order_number: str) -> None:
    """The refused order's stock went back, and its ledger keeps no money and no stock."""
    ledger = api.ledger()
    try:
        assert "revert_inventory" in steps_written(ledger, order_number)
        row = run_of(ledger, order_number)
    finally:
        ledger.close()
    assert (row.charged, row.billed, row.stock_held) == (0, 0, {})


async def history(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return [event async for event in handle.fetch_history_events()]


# -- the workflow: both servers ----------------------------------------------------------------


async def test_a_start_nothing_answers_is_handed_back_without_temporals_own_wait(
    client: Client, task_queue: str
):
    # No worker polls this queue: Temporal holds the request about 20 s before it answers
    # it. Asked to, the start is looked up and handed back at once, the answer to come.
    order = pickup("NOBODY")
    started = await start_with_answer(client, order, f"{task_queue}-nobody", started_within=0.5)
    try:
        assert not started.answer.done()  # the request still waits for the Update
        described = await started.handle.describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert described.run_id == started.run_id
    finally:
        started.answer.cancel()
        await started.handle.terminate("test over")


async def test_the_hold_is_answered_while_the_kitchen_still_prepares_the_order(
    client: Client, worker, ledger: Ledger, task_queue: str
):
    order = pickup("EARLY")
    async with worker():
        started = await start_with_answer(client, order, task_queue)
        answer = await asyncio.wait_for(started.answer, 60)
        description = await started.handle.describe()
        held = run_of(ledger, order.order_number)
        events = await history(started.handle)
        cancelled = await cancel_order(client, order.order_number, "the test is over")
    assert answer.refusal is None and answer.hold is not None
    assert (answer.hold.amount, answer.hold.card_last4, answer.hold.state) == (
        EXERCISE_AMOUNT,
        GOOD_CARD[-4:],
        HELD,
    )
    # Answered while the order runs: the card held, nothing billed, the kitchen's timer on.
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert (held.charged, held.billed) == (EXERCISE_AMOUNT, 0)
    kinds = [event.event_type for event in events]
    assert E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in kinds
    # The kitchen waits once the card is held: its timer after the charge step's answer.
    assert kinds.index(E.EVENT_TYPE_TIMER_STARTED) > max(
        index for index, kind in enumerate(kinds) if kind == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    )
    # Behind the newest patch, which implies the hold-first one (orders started before
    # recorded HOLD_BEFORE_KITCHEN_PATCH: the early_hold history replays that path).
    markers = b"".join(
        e.SerializeToString() for e in events if e.event_type == E.EVENT_TYPE_MARKER_RECORDED
    )
    assert f'"id":"{QUIET_CLOSE_PATCH}"'.encode() in markers  # it implies the one below
    assert f'"id":"{CURRENT_ORDER_PATCH}"'.encode() not in markers
    assert HOLD_BEFORE_KITCHEN_PATCH.encode() not in markers
    # Cancelled while the kitchen prepares it: the hold is given back, the stock put back.
    assert cancelled.compensations == list(UNDONE)
    undone = run_of(ledger, order.order_number)
    assert undone.charged == undone.refunded and undone.stock_held == {}


async def test_a_declined_card_fails_the_update_once_the_order_is_undone(
    client: Client, worker, ledger: Ledger, task_queue: str
):
    order = pickup("DECLINED", card=BAD_CARD)
    async with worker():
        started = await start_with_answer(client, order, task_queue)
        answer = await asyncio.wait_for(started.answer, 60)
        written = steps_written(ledger, order.order_number)  # as the answer arrives
        failure = await failure_of(started.handle)
    assert answer == EarlyAnswer(
        refusal=Refusal(CREDIT_CARD_PROCESSING_ERROR, "Invalid credit card number", UNDONE)
    )
    assert "revert_inventory" in written  # undone before the answer, not after
    assert error_type_of(failure) == CREDIT_CARD_PROCESSING_ERROR
    row = run_of(ledger, order.order_number)
    assert (row.charged, row.billed, row.stock_held) == (0, 0, {})


async def test_out_of_stock_is_refused_with_the_stock_put_back(
    client: Client, worker, ledger: Ledger, task_queue: str, faults_file
):
    write_faults(faults_file, parse_faults("update_inventory=out_of_stock"))
    order = pickup("NOSTOCK")
    async with worker():
        started = await start_with_answer(client, order, task_queue)
        answer = await asyncio.wait_for(started.answer, 60)
        await failure_of(started.handle)
    assert answer.hold is None and answer.refusal is not None
    assert answer.refusal.error_type == OUT_OF_STOCK_ERROR
    assert answer.refusal.compensations == ("revert_inventory",)


async def test_a_second_start_of_a_running_order_number_is_refused_and_charges_once(
    client: Client, worker, ledger: Ledger, task_queue: str
):
    order = pickup("TWICE")
    async with worker():
        first = await start_with_answer(client, order, task_queue)
        await asyncio.wait_for(first.answer, 60)
        with pytest.raises(OrderAlreadyRunning):
            await start_with_answer(client, order, task_queue)
        await cancel_order(client, order.order_number, "the test is over")
    assert [row.charged for row in ledger.orders()] == [EXERCISE_AMOUNT]


async def test_asked_again_with_its_update_id_the_run_answers_the_same_even_once_closed(
    client: Client, worker, task_queue: str
):
    order = pickup("AGAIN", card=BAD_CARD, prep_seconds=0)
    async with worker():
        started = await start_with_answer(client, order, task_queue, update_id="first-ask")
        first = await asyncio.wait_for(started.answer, 60)
        await failure_of(started.handle)
        again = await early_answer(client, order.order_number, started.run_id, "first-ask")
        never_asked = await early_answer(client, order.order_number, started.run_id, "other")
    assert first.refusal is not None and again == first
    assert never_asked == EarlyAnswer()  # closed without being asked: nothing to say


async def test_an_order_started_without_the_update_and_no_wait_records_nothing_new(
    client: Client, worker, task_queue: str
):
    order = sample_order(unique_number("PLAIN"), prep_seconds=0)
    async with worker():
        handle = await start_order(client, order, task_queue)
        await handle.result()
        events = await history(handle)
    kinds = {event.event_type for event in events}
    assert E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in kinds
    markers = b"".join(
        e.SerializeToString() for e in events if e.event_type == E.EVENT_TYPE_MARKER_RECORDED
    )
    assert HOLD_BEFORE_KITCHEN_PATCH.encode() not in markers  # no wait: nothing to ask


# -- how the API reads a request and answers a refusal -----------------------------------------


@pytest.mark.parametrize(
    ("prefer", "wanted"),
    [
        ("respond-async", True),
        ("wait=5, respond-async", True),
        ("Respond-Async; foo=1", True),
        ("return=minimal", False),
        (None, False),
    ],
)
def test_prefer_respond_async_is_read_among_other_preferences(prefer: str | None, wanted: bool):
    assert accepting.wants_async(prefer) is wanted


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        (CREDIT_CARD_PROCESSING_ERROR, 402),
        (OUT_OF_STOCK_ERROR, 409),
        (OUTSIDE_SERVICE_AREA_ERROR, 422),
        (ORDER_CANCELLED_ERROR, 409),
        ("PaymentUnavailable", 502),  # a step that failed for good: not the customer's doing
    ],
)
def test_each_refusal_is_answered_with_its_own_status(error_type: str, status: int):
    placed = placing.Placed("N1", "the-token", 0)
    problem = accepting.refused(placed, Refusal(error_type, "why", UNDONE))
    assert (problem.status, problem.error_type) == (status, error_type)
    assert problem.order == ("N1", "the-token")
    assert problem.detail == "order N1 was refused: why; undone: refund_customer, revert_inventory"
    # A message that ends its sentence (the provider's "Your card was declined.") too.
    said = accepting.refused(placed, Refusal(error_type, "Your card was declined.", UNDONE))
    assert said.detail.startswith("order N1 was refused: Your card was declined; undone: ")


def test_a_retry_shares_its_update_id_with_the_first_request_and_no_other():
    first = accepting.answer_id("key-1", "body-a")
    assert first == accepting.answer_id("key-1", "body-a") and first is not None
    assert first != accepting.answer_id("key-1", "body-b") != accepting.answer_id("key-2", "body-a")
    assert accepting.answer_id(None, "body-a") is None  # no key: a fresh id per request


# -- through the API: its own stack ------------------------------------------------------------


@pytest.fixture
async def http(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
        yield client


def staff_pickup(prep_seconds: float = 30, card: str = GOOD_CARD) -> dict[str, Any]:
    body = order_body(unique_number("API"), card, prep_seconds=prep_seconds)
    body["is_delivery"] = False
    return body


async def test_a_pickup_is_answered_201_with_the_hold_while_it_is_still_prepared(
    http: httpx.AsyncClient, api: Api
):
    body = staff_pickup()
    answer = await http.post("/orders", json=body, headers=api.staff)
    assert answer.status_code == 201, answer.text
    placed = answer.json()
    assert placed["order_number"] == body["order_number"]
    assert answer.headers["location"] == f"/orders/{body['order_number']}"
    hold = placed["hold"]
    assert (hold["amount"], hold["card_last4"], hold["state"]) == (
        EXERCISE_AMOUNT,
        GOOD_CARD[-4:],
        "held",
    )
    assert hold["payment_id"].startswith("pi_")  # the provider's hold, by its id
    assert GOOD_CARD not in answer.text
    # The token opens the run just started, which still runs: the card held, not billed.
    bearer = {"Authorization": f"Bearer {placed['order_token']}"}
    view = (await http.get(placed["status_url"], headers=bearer)).json()
    steps = {step["name"]: step["state"] for step in view["steps"]}
    assert view["status"] == "RUNNING" and view["details"] == "Preparing the order"
    assert steps["process_credit_card"] == "completed" and steps["send_bill"] == "pending"
    assert (view["ledger"]["charged"], view["ledger"]["billed"]) == (EXERCISE_AMOUNT, 0)
    cancelled = await http.post(f"{placed['status_url']}/cancel", headers=bearer)
    assert cancelled.status_code == 200 and cancelled.json()["compensations"] == list(UNDONE)


async def test_a_token_that_names_no_card_is_a_402_at_once_and_the_stock_comes_back(
    http: httpx.AsyncClient, api: Api
):
    body = customer_body()
    body["credit_card_info"] = {"holderName": "Lisa Anderson", "payment_method": "pm_made_up"}
    answer = await http.post("/orders", json=body)
    assert answer.status_code == 402, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:pizzeria:problem:card-declined"
    assert "No such PaymentMethod" in problem["detail"]
    assert "refund_customer, revert_inventory" in problem["detail"]
    number = answer.headers["location"].rsplit("/", 1)[1]
    undone_with_nothing_kept(api, number)


async def test_a_declined_card_is_a_402_problem_once_the_order_is_undone(
    http: httpx.AsyncClient, api: Api
):
    answer = await http.post("/orders", json=customer_body(BAD_CARD))
    assert answer.status_code == 402, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["type"] == "urn:pizzeria:problem:card-declined"
    assert problem["title"] == "Payment Required"
    assert problem["error_type"] == CREDIT_CARD_PROCESSING_ERROR
    assert "Invalid credit card number" in problem["detail"]
    assert "refund_customer, revert_inventory" in problem["detail"]
    assert BAD_CARD not in answer.text
    number = answer.headers["location"].rsplit("/", 1)[1]
    # The customer can look at the refused order: what was undone, the card masked.
    assert problem["order_number"] == number
    seen = await http.get(
        answer.headers["location"], headers={"Authorization": f"Bearer {problem['order_token']}"}
    )
    assert seen.status_code == 200, seen.text
    assert BAD_CARD not in seen.text and BAD_CARD[-4:] in seen.text
    assert (await http.get(answer.headers["location"])).status_code == 401
    undone_with_nothing_kept(api, number)


async def test_prefer_respond_async_answers_202_at_once_without_the_hold(
    http: httpx.AsyncClient, api: Api
):
    headers = {**api.staff, "Prefer": "respond-async, wait=10"}
    answer = await http.post("/orders", json=staff_pickup(), headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.headers["preference-applied"] == "respond-async"
    placed = answer.json()
    assert placed["hold"] is None and placed["order_token"]
    bearer = {"Authorization": f"Bearer {placed['order_token']}"}
    assert (await http.post(f"{placed['status_url']}/cancel", headers=bearer)).status_code == 200


@pytest.mark.parametrize("card", [GOOD_CARD, BAD_CARD], ids=["held", "declined"])
async def test_a_retry_with_the_same_idempotency_key_gets_the_same_answer(
    http: httpx.AsyncClient, card: str
):
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    body = customer_body(card)
    first = await http.post("/orders", json=body, headers=key)
    again = await http.post("/orders", json=body, headers=key)
    assert first.status_code == (201 if card == GOOD_CARD else 402), first.text
    assert again.status_code == first.status_code
    assert again.json() == first.json()


async def test_another_request_for_a_number_taken_is_refused_and_charges_nothing(
    http: httpx.AsyncClient, api: Api
):
    body = staff_pickup(prep_seconds=0)
    first = await http.post("/orders", json=body, headers={**api.staff, "Idempotency-Key": "a1"})
    other = await http.post("/orders", json=body, headers={**api.staff, "Idempotency-Key": "b2"})
    assert first.status_code == 201, first.text
    assert other.status_code == 409 and "already taken" in other.json()["detail"]


def test_pizzeria_order_prints_the_hold_then_follows_the_order(stack):
    number = unique_number("CLI-HOLD")
    done = pizzeria(
        stack, "order", "--pickup", "--order-number", number, "--prep-seconds", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "COMPLETED"
    assert outcome["hold"]["amount"] == EXERCISE_AMOUNT and outcome["hold"]["state"] == "held"
    shown = pizzeria(stack, "order", "--pickup", "--order-number", unique_number("CLI-HOLD"))
    assert shown.returncode == 0, shown.stderr
    assert f"Card ending {GOOD_CARD[-4:]} held: $35.00" in shown.stderr
    assert "COMPLETED" in shown.stdout
