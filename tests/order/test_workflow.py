"""The order saga end to end on a real server: outcomes, history order and ledger balances."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from pizzeria import menu
from pizzeria.client import OrderAlreadyRunning, start_order
from pizzeria.config import DriverSimulation
from pizzeria.failures import error_type_of
from pizzeria.ledger import Ledger
from pizzeria.models import Pizza, PizzaOrder, workflow_id_for
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.faults import parse_faults, write_faults
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import eventually, failure_of, unique_number
from tests.helpers.history import activity_timeline, finished
from tests.helpers.orders import RECIPE_OF_EXERCISE, charging, exercise_json, quantities, showing

#: The ledger's own rules, end to end: run once more on PostgreSQL.
pytestmark = pytest.mark.ledger


def run_of(ledger: Ledger, handle: WorkflowHandle[Any, Any], run_id: str) -> Any:
    matches = [o for o in ledger.orders() if o.order_ref == f"{handle.id}/{run_id}"]
    assert len(matches) <= 1
    return matches[0] if matches else None


async def test_good_order_completes_and_the_ledger_balances(worker, start, order, ledger):
    before = quantities(ledger)
    async with worker():
        handle = await start(order)
        confirmation = await handle.result()
    assert confirmation.status == "SUCCESS"
    assert confirmation.amount == 3500  # 4000 of pizzas, 500 off over 3000
    after = quantities(ledger)
    assert {k: before[k] - after[k] for k in before if before[k] != after[k]} == RECIPE_OF_EXERCISE
    (row,) = ledger.orders()
    assert (row.charged, row.refunded, row.billed) == (3500, 0, 3500)
    steps = Counter(e["step"] for e in ledger.effects())
    assert steps == {"update_inventory": 1, "process_credit_card": 1, "send_bill": 1}
    timeline = finished(await activity_timeline(handle))
    assert [name for name, _ in timeline] == [
        "get_distance",
        "update_inventory",
        "process_credit_card",
        "send_bill",
        "notify_delivery_driver",
    ]


async def test_bad_card_fails_then_refunds_then_reverts_inventory(worker, start, ledger):
    before = quantities(ledger)
    async with worker():
        handle = await start(sample_order(card=BAD_CARD, prep_seconds=0))
        failure = await failure_of(handle)
    assert error_type_of(failure) == "CreditCardProcessingError"
    assert "Invalid credit card number" in str(failure.__cause__)
    timeline = finished(await activity_timeline(handle))
    assert timeline[-3:] == [
        ("process_credit_card", "failed"),
        ("refund_customer", "completed"),
        ("revert_inventory", "completed"),
    ]
    assert quantities(ledger) == before
    (row,) = ledger.orders()
    assert row.charged - row.refunded == 0 and row.billed == 0


@pytest.mark.parametrize(
    ("field", "value", "error_type", "said"),
    [
        (
            "line1",
            "1 A Very Long Street Name Far Away From The Pizzeria",
            "OutsideServiceAreaError",
            "outside the service area",
        ),
        ("postal_code", "", "InvalidOrderError", "a delivery needs address.postal_code"),
    ],
    ids=["outside-the-service-area", "no-postal-code"],
)
async def test_a_delivery_the_driver_cannot_make_fails_before_any_effect(
    worker, start, ledger, field, value, error_type, said
):
    order = sample_order(card=GOOD_CARD, prep_seconds=0)
    setattr(order.address, field, value)
    async with worker():
        handle = await start(order)
        failure = await failure_of(handle)
    assert error_type_of(failure) == error_type
    assert said in str(failure)
    assert isinstance(failure, ApplicationError) and failure.non_retryable
    assert ledger.effects() == []


async def test_the_same_far_address_is_fine_for_a_pickup_which_skips_the_driver(
    worker, start, ledger
):
    pickup = sample_order(card=GOOD_CARD, prep_seconds=0, is_delivery=False)
    pickup.address.line1 = "1 A Very Long Street Name Far Away From The Pizzeria"
    async with worker():
        handle = await start(pickup)
        confirmation = await handle.result()
    assert confirmation.status == "SUCCESS"
    names = [name for name, _ in await activity_timeline(handle)]
    assert "notify_delivery_driver" not in names
    assert ledger.orders()[0].billed == 3500


@pytest.mark.parametrize(
    ("sizes", "billed"),
    [
        (("large", "large"), 3000),  # exactly 3000: no discount
        (("large", "large", "small"), 3700),
        (("large", "small", "medium"), 3500),
        (("small", "small"), 2400),
    ],
)
async def test_totals_over_3000_get_500_off_and_the_charge_equals_the_bill(
    worker, start, ledger, sizes, billed
):
    items = [Pizza(f"{size}, with ham", menu.PRICE_BY_SIZE[size]) for size in sizes]
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, items=items))
        confirmation = await handle.result()
    assert confirmation.amount == billed
    (row,) = ledger.orders()
    assert row.charged == row.billed == billed


async def test_a_negative_total_fails_with_invalid_charge_amount_before_any_effect(
    worker, start, ledger
):
    items = [Pizza("Small, with ham", 1200), Pizza("Large", -5000)]
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, items=items))
        failure = await failure_of(handle)
    assert error_type_of(failure) == "InvalidChargeAmountError"
    assert ledger.effects() == []


@pytest.mark.parametrize(
    ("items", "error_type", "said"),
    [
        (
            [Pizza("Large, with mushrooms and mushrooms", 1500)],
            "InvalidOrderError",
            "names 'mushrooms' twice: each topping once",
        ),
        (
            [Pizza("Small, with ham", 1200), Pizza("Large, with ham", 1000)],
            "InvalidOrderError",
            "items[1] ('Large, with ham') costs 1500 cents on the menu",
        ),
        (
            [Pizza("Largewith mushrooms and onions", 50)],
            "InvalidOrderError",
            "items[0] ('Largewith mushrooms and onions') costs 1500 cents on the menu",
        ),
        ([Pizza("Large, with anchovy ice cream", 1500)], "UnknownToppingError", "anchovy"),
    ],
    ids=["a-topping-twice", "another-price", "no-space-after-the-size", "unknown-topping"],
)
async def test_a_pizza_the_menu_does_not_sell_is_refused_before_any_effect(
    worker, start, ledger, items, error_type, said
):
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, items=items))
        failure = await failure_of(handle)
    assert error_type_of(failure) == error_type
    assert said in str(failure)
    assert isinstance(failure, ApplicationError) and failure.non_retryable
    assert ledger.effects() == []


async def test_an_order_number_running_twice_is_refused_and_charged_once(
    client: Client, worker, ledger, task_queue
):
    placed = sample_order(f"DUP-{uuid.uuid4().hex[:6]}", card=GOOD_CARD, prep_seconds=5)
    async with worker():
        handle = await start_order(client, placed, task_queue)
        with pytest.raises(OrderAlreadyRunning):
            await start_order(client, placed, task_queue)
        await handle.result()
    assert [(o.charged, o.billed) for o in ledger.orders()] == [(3500, 3500)]


async def test_a_new_run_of_a_closed_order_never_touches_the_first_runs_rows(
    client: Client, worker, ledger, task_queue
):
    number = f"AGAIN-{uuid.uuid4().hex[:6]}"
    async with worker():
        first = await start_order(
            client, sample_order(number, card=GOOD_CARD, prep_seconds=0), task_queue
        )
        await first.result()
        first_run = (await first.describe()).run_id
        second = await start_order(
            client, sample_order(number, card=BAD_CARD, prep_seconds=0), task_queue, again=True
        )
        await failure_of(second)
        second_run = (await second.describe()).run_id
    assert first_run != second_run
    one, two = run_of(ledger, first, first_run), run_of(ledger, second, second_run)
    assert (one.charged, one.refunded, one.billed) == (3500, 0, 3500)
    assert one.stock_held == RECIPE_OF_EXERCISE
    assert (two.charged, two.refunded, two.billed) == (0, 0, 0)
    assert two.stock_held == {}


async def wait_for_step(ledger: Ledger, step: str, seconds: float = 20) -> None:
    def taken() -> bool:
        return any(e["step"] == step for e in ledger.effects())

    await eventually(taken, f"{step} to take effect", seconds)


async def stuck_charging(start: Any, faults_file: Path) -> WorkflowHandle[Any, Any]:
    """A good order mid-flight: its stock taken, its card call hanging."""
    write_faults(faults_file, parse_faults("process_credit_card=timeout"))
    handle: WorkflowHandle[Any, Any] = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
    await charging(handle)
    return handle


@pytest.mark.dev_server_only
async def test_cancelling_a_running_order_runs_the_compensations_and_restores_the_ledger(
    worker, start, ledger, faults_file
):
    before = quantities(ledger)
    async with worker():
        handle = await stuck_charging(start, faults_file)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert quantities(ledger) == before
    (row,) = ledger.orders()
    assert row.charged - row.refunded == 0
    names = [name for name, outcome in finished(await activity_timeline(handle))]
    assert names[-2:] == ["refund_customer", "revert_inventory"]


@pytest.mark.dev_server_only
async def test_cancel_order_update_compensates_and_the_order_ends_cancelled(
    worker, start, ledger, faults_file
):
    before = quantities(ledger)
    async with worker():
        handle = await stuck_charging(start, faults_file)
        result = await handle.execute_update(PizzaOrderWorkflow.cancel_order, "changed my mind")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        state = await handle.query(PizzaOrderWorkflow.saga_state)
        description = await handle.describe()
    assert result.accepted and result.reason == "changed my mind"
    assert result.compensations == ["refund_customer", "revert_inventory"]
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert state["cancel_reason"] == "changed my mind"
    assert quantities(ledger) == before


async def test_cancel_order_is_refused_after_the_pivot_and_the_order_completes(
    worker, start, ledger, activities
):
    activities.driver = DriverSimulation(rounds=3, seconds_per_round=1, found_probability=0)
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        await wait_for_step(ledger, "send_bill")
        try:
            late = await handle.execute_update(PizzaOrderWorkflow.cancel_order, "too late")
        except WorkflowUpdateFailedError as refused:  # the validator saw the pivot
            reason = str(refused.cause)
        else:  # accepted while the bill was being written: refused once it was
            assert not late.accepted
            reason = late.reason
        confirmation = await handle.result()
    assert "already billed" in reason
    assert confirmation.status == "DELIVERY FAILURE"  # no driver: forward, never back
    (row,) = ledger.orders()
    assert (row.charged, row.refunded, row.billed) == (3500, 0, 3500)


class HandlersAtClose(Interceptor):
    """Notes, each time an order's run returns, whether every Update handler had finished."""

    def __init__(self) -> None:
        self.finished: list[bool] = []

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        noted = self.finished

        class Noting(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                try:
                    return await super().execute_workflow(input)
                finally:
                    noted.append(workflow.all_handlers_finished())

        return Noting


async def test_an_update_still_running_when_the_order_closes_is_answered_first(
    worker, start, ledger, faults_file
):
    """cancel_order, accepted while the bill is retried, is still waiting when a pickup
    order completes right after the bill: the order waits for it, so its caller gets
    the answer (too late) instead of an error, and no handler is cut off."""
    write_faults(faults_file, parse_faults("send_bill=fail"))  # the bill retries until cleared
    handlers = HandlersAtClose()
    async with worker(interceptors=[handlers]):
        handle = await start(sample_order(prep_seconds=0, is_delivery=False))
        await eventually(lambda: showing(handle, "Sending the bill"), "the bill to be retried")
        update = await handle.start_update(
            PizzaOrderWorkflow.cancel_order,
            "changed my mind",
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        write_faults(faults_file, {})
        confirmation = await handle.result()
        answer = await update.result()
    assert confirmation.status == "SUCCESS"
    assert not answer.accepted and "already billed" in answer.reason
    assert handlers.finished and all(handlers.finished)
    (row,) = ledger.orders()
    assert (row.charged, row.refunded, row.billed) == (3500, 0, 3500)


@workflow.defn(sandboxed=False)
class ClosesUnderItsSignal:
    """Returns while its signal handler still waits: a handler cut off by the close."""

    def __init__(self) -> None:
        self.signalled = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.signalled)

    @workflow.signal
    async def hold(self) -> None:
        self.signalled = True
        await workflow.wait_condition(lambda: False)


async def test_a_handler_cut_off_by_the_close_fails_the_workflow_under_test(client, task_queue):
    """The guard of conftest.py: the SDK's unfinished-handler warning is not swallowed,
    it fails the workflow (and so the test) at once."""
    async with Worker(client, task_queue=task_queue, workflows=[ClosesUnderItsSignal]):
        handle = await client.start_workflow(
            ClosesUnderItsSignal.run,
            id=f"cut-off-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            start_signal="hold",
        )
        failure = await failure_of(handle)
    assert error_type_of(failure) == "UnfinishedSignalHandlersWarning"


async def test_a_client_knowing_only_the_wire_contract_gets_the_same_outcomes(
    client: Client, worker, ledger, task_queue, environment_kind
):
    if environment_kind == "local":
        pytest.skip("waits the exercise's 3 s timer; the time-skipping run covers it")
    good_order = {**exercise_json(GOOD_CARD), "order_number": unique_number("WIRE")}
    bad_order = {**exercise_json(BAD_CARD), "order_number": unique_number("WIRE")}
    async with worker():
        good = await client.start_workflow(
            "PizzaOrderWorkflow",
            good_order,
            id=workflow_id_for(good_order["order_number"]),
            task_queue=task_queue,
            result_type=dict,
        )
        result = await good.result()
        bad = await client.start_workflow(
            "PizzaOrderWorkflow",
            bad_order,
            id=workflow_id_for(bad_order["order_number"]),
            task_queue=task_queue,
        )
        failure = await failure_of(bad)
    assert set(result) == {
        "order_number",
        "status",
        "confirmation_number",
        "billing_timestamp",
        "amount",
    }
    assert result["amount"] == 3500 and result["status"] == "SUCCESS"
    assert error_type_of(failure) == "CreditCardProcessingError"


def test_exercise_json_matches_the_dataclasses():
    """Guard for the test above: the JSON we call 'the contract' is our model's shape."""
    order = sample_order()
    assert set(exercise_json()) | {"settings"} == set(PizzaOrder.__dataclass_fields__)
    assert menu.order_total(order.items) == 4000


async def wait_for_attention(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    async def attention() -> dict[str, Any] | None:
        state: dict[str, Any] = await handle.query(PizzaOrderWorkflow.saga_state)
        return state if state["needs_attention"] else None

    state: dict[str, Any] = await eventually(attention, "the order to ask for attention", 60)
    return state


@pytest.mark.parametrize("answer", ["retry", "resolve"])
async def test_a_refund_failing_for_good_parks_the_order_until_an_operator_answers(
    worker, start, ledger, faults_file, answer
):
    # Charged, then the bill is refused: the refund must happen, but the refunds are down.
    write_faults(faults_file, parse_faults("send_bill=refuse,refund_customer=fail"))
    placed = sample_order(card=GOOD_CARD, prep_seconds=0, step_attempts=1, compensation_attempts=2)
    async with worker():
        handle = await start(placed)
        state = await wait_for_attention(handle)
        description = await handle.describe()
        refund = next(c for c in state["compensations"] if c["name"] == "refund_customer")
        assert refund["status"] == "failed" and "Injected fault" in refund["last_error"]
        assert state["details"].startswith("Needs attention: refund_customer failed")
        assert state["phase"] == "needs attention"
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert ledger.orders()[0].charged == 3500  # nothing refunded yet, nothing lost
        write_faults(faults_file, parse_faults("send_bill=refuse"))  # the provider is back
        if answer == "retry":
            repaired = await handle.execute_update(PizzaOrderWorkflow.retry_compensations)
            assert repaired.outcome == "compensated"
        else:
            repaired = await handle.execute_update(
                PizzaOrderWorkflow.resolve_manually, "refunded by phone"
            )
            assert repaired.outcome == "resolved manually"
        failure = await failure_of(handle)
        final = await handle.query(PizzaOrderWorkflow.saga_state)
    assert error_type_of(failure) == "InjectedFault"
    said = "retried by an operator" if answer == "retry" else "resolved by hand: refunded by phone"
    assert f"(compensation {said})" in str(failure)
    (row,) = ledger.orders()
    assert final["phase"] == "compensated" and not final["needs_attention"]
    if answer == "retry":
        assert row.charged - row.refunded == 0 and final["repaired_by"] == "retry"
    else:
        # Resolved outside the workflow: the ledger honestly still shows the charge.
        assert row.refunded == 0 and final["resolution_note"] == "refunded by phone"
    assert row.stock_held == {}


async def test_repair_is_refused_when_nothing_needs_attention(worker, start):
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=5))
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(PizzaOrderWorkflow.retry_compensations)
        await handle.result()
    assert "does not need attention" in str(refused.value.cause)


# -- attempts: what saga_state (pizzeria status, the API) says each step took ------------------


async def step_attempts(handle: WorkflowHandle[Any, Any]) -> dict[str, tuple[str, int | None]]:
    state = await handle.query(PizzaOrderWorkflow.saga_state)
    return {step["name"]: (step["status"], step["attempts"]) for step in state["steps"]}


@pytest.mark.parametrize("fast_path", [False, True], ids=["regular", "fast-path"])
async def test_a_step_that_failed_twice_then_succeeded_shows_three_attempts(
    client: Client, worker, start, ledger, faults_file, fast_path
):
    write_faults(faults_file, parse_faults("process_credit_card=fail:2,send_bill=fail:1"))
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, fast_path=fast_path))
        confirmation = await handle.result()
        attempts = await step_attempts(handle)
        wire = await client.get_workflow_handle(handle.id, result_type=dict).result()
    assert confirmation.status == "SUCCESS"
    assert attempts == {
        "get_distance": ("done", 1),
        "update_inventory": ("done", 1),
        "process_credit_card": ("done", 3),
        "send_bill": ("done", 2),
        # Its answer is a bare bool, which cannot say its attempt: unknown, not a guess.
        "notify_delivery_driver": ("done", None),
    }
    # The bill's attempt never leaks into the exercise's confirmation.
    assert set(wire) == {
        "order_number",
        "status",
        "confirmation_number",
        "billing_timestamp",
        "amount",
    }
    (row,) = ledger.orders()
    assert (row.charged, row.billed) == (3500, 3500)  # three attempts, one charge


@pytest.mark.parametrize("fast_path", [False, True], ids=["regular", "fast-path"])
async def test_a_step_out_of_attempts_shows_all_of_them_and_is_undone(
    worker, start, ledger, faults_file, fast_path
):
    write_faults(faults_file, parse_faults("process_credit_card=fail"))
    before = quantities(ledger)
    placed = sample_order(card=GOOD_CARD, prep_seconds=0, step_attempts=2, fast_path=fast_path)
    async with worker():
        handle = await start(placed)
        failure = await failure_of(handle)
        attempts = await step_attempts(handle)
        state = await handle.query(PizzaOrderWorkflow.saga_state)
    assert error_type_of(failure) == "InjectedFault"
    assert attempts == {
        "get_distance": ("done", 1),
        "update_inventory": ("done", 1),
        "process_credit_card": ("failed", 2),
    }
    assert [(c["name"], c["status"]) for c in state["compensations"]] == [
        ("revert_inventory", "done"),
        ("refund_customer", "done"),
    ]
    assert state["phase"] == "compensated"
    assert quantities(ledger) == before


@pytest.mark.parametrize(
    ("faults", "attempts", "fast_path"),
    [
        ("", 1, False),
        ("process_credit_card=fail:1", 2, False),
        ("process_credit_card=fail:1", 2, True),
    ],
)
async def test_the_bad_card_verdict_says_on_which_attempt_it_came(
    worker, start, ledger, faults_file, faults, attempts, fast_path
):
    write_faults(faults_file, parse_faults(faults))
    async with worker():
        handle = await start(sample_order(card=BAD_CARD, prep_seconds=0, fast_path=fast_path))
        failure = await failure_of(handle)
        steps = await step_attempts(handle)
    assert error_type_of(failure) == "CreditCardProcessingError"
    assert steps["process_credit_card"] == ("failed", attempts)
    (row,) = ledger.orders()
    assert row.charged - row.refunded == 0
