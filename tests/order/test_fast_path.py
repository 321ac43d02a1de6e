"""The fast path: the ledger steps as local activities, with the regular path's guarantees.

A local activity shows in the history as a marker, not as activity events: these tests read
the markers (`local_timeline`) where test_workflow.py reads activity events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from pizzeria import menu
from pizzeria.client import outcome_of
from pizzeria.failures import error_type_of
from pizzeria.history.timeline import order_timeline
from pizzeria.ledger import open_ledger
from pizzeria.models import (
    Bill,
    CardCharge,
    PizzaOrder,
    StockRequest,
    order_ref,
    workflow_id_for,
)
from pizzeria.ops.processes import WorkerProcess, dev_server, pizzeria_command
from pizzeria.order_cancel import TOO_LATE_TO_CANCEL
from pizzeria.payments.port import MoneyState
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.faults import parse_faults, write_faults
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import (
    PIZZERIA,
    eventually,
    failure_of,
    run_pizzeria,
    unique_number,
    wait_until,
)
from tests.helpers.history import activity_timeline, finished, local_records, local_timeline
from tests.helpers.money_books import money_of
from tests.helpers.orders import RECIPE_OF_EXERCISE, charging, quantities
from tests.helpers.stack import stack_env

LEDGER_STEPS = ["get_distance", "update_inventory", "process_credit_card", "send_bill"]


def fast(card: str = GOOD_CARD, **settings: Any) -> PizzaOrder:
    return sample_order(card=card, prep_seconds=0, fast_path=True, **settings)


async def test_a_good_order_on_the_fast_path_runs_its_ledger_steps_locally_and_balances(
    worker, start, ledger
):
    before = quantities(ledger)
    async with worker():
        handle = await start(fast())
        confirmation = await handle.result()
    assert confirmation.status == "SUCCESS" and confirmation.amount == 3500
    after = quantities(ledger)
    assert {k: before[k] - after[k] for k in before if before[k] != after[k]} == RECIPE_OF_EXERCISE
    (row,) = ledger.orders()
    assert (row.charged, row.refunded, row.billed) == (3500, 0, 3500)
    assert Counter(e["step"] for e in ledger.effects()) == {
        "update_inventory": 1,
        "process_credit_card": 1,
        "send_bill": 1,
    }
    # Markers for the local steps; only the driver search is a regular activity.
    assert await local_timeline(handle) == [(name, "completed") for name in LEDGER_STEPS]
    assert finished(await activity_timeline(handle)) == [("notify_delivery_driver", "completed")]


async def test_a_pickup_on_the_fast_path_checks_no_distance_and_the_regular_path_still_does(
    worker, start, ledger
):
    async with worker():
        picked_up = await start(fast(is_delivery=False))
        confirmation = await picked_up.result()
        state = await picked_up.query(PizzaOrderWorkflow.saga_state)
        regular = await start(sample_order(prep_seconds=0, is_delivery=False))
        await regular.result()
    assert confirmation.status == "SUCCESS" and confirmation.amount == 3500
    # No distance for a pickup: the stock is its first step, the saga says why.
    assert await local_timeline(picked_up) == [
        (name, "completed") for name in LEDGER_STEPS if name != "get_distance"
    ]
    assert [(step["name"], step["status"]) for step in state["steps"]] == [
        ("get_distance", "skipped"),
        *((name, "done") for name in LEDGER_STEPS[1:]),
    ]
    picked_up_row = next(r for r in ledger.orders() if r.order_ref.startswith(picked_up.id))
    assert (picked_up_row.charged, picked_up_row.billed) == (3500, 3500)
    # The regular path keeps the exercise's steps, one activity each, the distance first.
    assert finished(await activity_timeline(regular))[0] == ("get_distance", "completed")


async def test_a_bad_card_on_the_fast_path_fails_and_compensates_in_reverse_order(
    worker, start, ledger, client
):
    before = quantities(ledger)
    async with worker():
        handle = await start(fast(BAD_CARD))
        failure = await failure_of(handle)
    assert error_type_of(failure) == "CreditCardProcessingError"
    assert await local_timeline(handle) == [
        ("get_distance", "completed"),
        ("update_inventory", "completed"),
        ("process_credit_card", "failed"),
        ("refund_customer", "completed"),
        ("revert_inventory", "completed"),
    ]
    assert await activity_timeline(handle) == []
    # What `pizzeria order` and `pizzeria status` tell the user, read from the markers.
    outcome = await outcome_of(client, handle.id, "")
    assert outcome.compensations == ["refund_customer", "revert_inventory"]
    entries = await order_timeline(client, handle)
    assert [(e.kind, e.name, e.outcome) for e in entries] == [
        ("step", "get_distance", "completed"),
        ("step", "update_inventory", "completed"),
        ("step", "process_credit_card", "failed"),
        ("compensation", "refund_customer", "completed"),
        ("compensation", "revert_inventory", "completed"),
    ]
    assert "CreditCardProcessingError" in entries[2].error
    assert entries[3].summary == "Compensate: release the card hold, if any"
    assert quantities(ledger) == before
    (row,) = ledger.orders()
    assert row.charged - row.refunded == 0 and row.billed == 0


async def test_cancel_order_before_the_pivot_waits_for_the_local_step_then_compensates(
    worker, start, ledger, faults_file
):
    """The charge hangs past its timeout (and is retried): the cancel stops it there, and
    the refund runs only once the charge's attempt has answered."""
    write_faults(faults_file, parse_faults("process_credit_card=timeout"))
    before = quantities(ledger)
    async with worker():
        handle = await start(fast())
        await charging(handle)
        result = await handle.execute_update(PizzaOrderWorkflow.cancel_order, "changed my mind")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        description = await handle.describe()
    assert result.accepted and result.compensations == ["refund_customer", "revert_inventory"]
    assert description.status == WorkflowExecutionStatus.CANCELED
    timeline = await local_timeline(handle)
    assert timeline[-3:] == [
        ("process_credit_card", "cancelled"),
        ("refund_customer", "completed"),
        ("revert_inventory", "completed"),
    ]
    assert quantities(ledger) == before
    (row,) = ledger.orders()
    assert row.charged - row.refunded == 0 and row.billed == 0


@pytest.mark.parametrize(
    ("spec", "step"),
    [
        ("process_credit_card=lost:1", "process_credit_card"),
        ("update_inventory=late:1", "update_inventory"),
    ],
    ids=["lost", "late"],
)
async def test_a_lost_answer_or_a_late_write_on_a_local_step_changes_nothing(
    worker, start, ledger, faults_file, spec, step
):
    """The worker retries the local step after its timeout: the same idempotency key
    makes the retry (or the late first attempt) a no-op."""
    write_faults(faults_file, parse_faults(spec))
    async with worker():
        handle = await start(fast())
        confirmation = await handle.result()
    (row,) = ledger.orders()
    assert row.charged == row.billed == confirmation.amount == 3500 and row.refunded == 0
    assert Counter(e["step"] for e in ledger.effects()) == {
        "update_inventory": 1,
        "process_credit_card": 1,
        "send_bill": 1,
    }
    # The fault struck the local attempt (the worker's fault interceptor sees local
    # activities too), and the worker made a second one.
    attempts = {record.name: record.attempts for record in await local_records(handle)}
    assert attempts[step] == 2


# -- a worker killed in the middle of a local activity ------------------------------------------


def start_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    worker = WorkerProcess([*pizzeria_command(), "worker"], log, env)
    worker.start()
    worker.wait_until_polling()
    return worker


async def event_counts(address: str, workflow_id: str) -> Counter[str]:
    client = await Client.connect(address)  # no codec: event types are enough
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    counts: Counter[str] = Counter(EventType.Name(e.event_type) for e in history.events)
    counts.update(
        "scheduled " + e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    return counts


@pytest.mark.timeout(180)
def test_a_worker_killed_in_a_local_charge_leaves_the_order_to_another_charged_once(
    tmp_path: Path,
):
    """Worker A charges, then holds the answer (a lost-answer fault) and is SIGKILLed.
    The workflow task times out; worker B replays the order, runs the charge again under
    the same idempotency key, and finishes it: one charge, one bill, no violation."""
    number = f"KILL-{int(time.time() * 1000) % 10**8}"
    with dev_server(None, headless=True) as server:
        env = stack_env(tmp_path, TEMPORAL_ADDRESS=server.address)
        first = start_worker(
            {**env, "PIZZERIA_FAULTS": "process_credit_card=lost"}, tmp_path / "a.log"
        )
        try:
            placing = subprocess.Popen(
                [
                    PIZZERIA,
                    "order",
                    "--fast-path",
                    "--prep-seconds",
                    "0",
                    "--json",
                    "--order-number",
                    number,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            wait_until(lambda: charged(tmp_path), "worker A to charge the card", 60)
            first.kill()
        finally:
            first.stop()
        second = start_worker({**env, "PIZZERIA_FAULTS": ""}, tmp_path / "b.log")
        try:
            out, errors = placing.communicate(timeout=90)
        finally:
            second.stop()
        assert placing.returncode == 0, out + errors
        assert json.loads(out)["status"] == "COMPLETED"
        status = run_pizzeria("status", number, "--json", env=env)
        counts = asyncio.run(event_counts(server.address, f"pizza-workflow-order-{number}"))
        check = run_pizzeria("check", "--json", "--closed", env=env)
    timeline = [(e["name"], e["outcome"]) for e in json.loads(status.stdout)["timeline"]]
    assert timeline == [
        *((name, "completed") for name in LEDGER_STEPS),
        ("notify_delivery_driver", "completed"),
    ]
    assert counts["EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT"] >= 1  # A died holding the task
    assert counts["scheduled notify_delivery_driver"] == 1
    assert counts["scheduled process_credit_card"] == 0  # the charge stayed local
    ledger = open_ledger(tmp_path / "ledger.db", read_only=True)
    try:
        (row,) = ledger.orders()
        steps = Counter(e["step"] for e in ledger.effects())
    finally:
        ledger.close()
    assert row.charged == row.billed == 3500 and row.refunded == 0
    assert steps == {"update_inventory": 1, "process_credit_card": 1, "send_bill": 1}
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["violations"] == []


def charged(data: Path) -> bool:
    if not (data / "ledger.db").exists():
        return False
    ledger = open_ledger(data / "ledger.db", read_only=True)
    try:
        return any(e["step"] == "process_credit_card" for e in ledger.effects())
    finally:
        ledger.close()


@pytest.mark.parametrize("is_delivery", [True, False], ids=["delivery", "pickup"])
async def test_a_cancel_after_a_first_task_lost_with_its_local_steps_still_undoes_them(
    client: Client, worker, task_queue: str, ledger, activities, gateway, is_delivery: bool
):
    """On the fast path the stock and the hold are taken inside the first workflow task,
    before the history records anything: a worker killed there leaves effects that no
    history shows. An order cancelled before another worker runs it again must still undo
    them (chaos met this: a cancelled order keeping its stock and its card hold)."""
    before = quantities(ledger)
    placed = dataclasses.replace(fast(is_delivery=is_delivery), order_number=unique_number("LOST"))
    handle = await client.start_workflow(
        PizzaOrderWorkflow.order_pizza,
        placed,
        id=workflow_id_for(placed.order_number),
        task_queue=task_queue,
    )  # no worker yet: what the lost first task did, done by hand, with its keys
    run = order_ref(handle.id, (await handle.describe()).run_id)
    number = placed.order_number
    amount = menu.billed_for(placed.items)
    lost_task = ActivityEnvironment()
    await lost_task.run(activities.update_inventory, StockRequest(run, number, placed.items))
    await lost_task.run(
        activities.process_credit_card, CardCharge(run, number, amount, placed.credit_card_info)
    )
    assert quantities(ledger) != before
    await handle.cancel()  # before any worker runs the order again
    async with worker():
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert quantities(ledger) == before
    money = await money_of(gateway, ledger, run)
    assert [p.state for p in money.payments] == [MoneyState.RELEASED]
    assert money.ledger.charged == money.ledger.refunded == amount


async def test_a_cancel_after_a_task_lost_with_its_bill_is_too_late_and_the_order_goes_on(
    client: Client, worker, task_queue: str, ledger, activities, gateway
):
    """On the fast path the bill too runs inside a workflow task: a worker killed after the
    bill and before the task completed leaves the order billed with nothing in its history.
    A cancel then must not undo it (chaos met this: a billed order cancelled, its capture
    refunded). The cancel asks the ledger first, finds the bill, and is too late; the order
    sends its bill again under the same key, which answers the same capture."""
    number = unique_number("BILLED")
    placed = sample_order(number, prep_seconds=4, fast_path=True, is_delivery=False)
    async with worker():
        handle = await client.start_workflow(
            PizzaOrderWorkflow.order_pizza,
            placed,
            id=workflow_id_for(number),
            task_queue=task_queue,
        )
        run = order_ref(handle.id, (await handle.describe()).run_id)
        held = lambda: any(  # noqa: E731
            e["step"] == "process_credit_card" and e["order_ref"] == run for e in ledger.effects()
        )
        await eventually(held, "the card to be held")
        # In the kitchen's wait: what a lost task would have done next, done by hand.
        total = menu.order_total(placed.items)
        bill = Bill(placed.customer.customer_id, number, "Pizza order", total, run)
        billed = await ActivityEnvironment().run(activities.send_bill, bill)
        result = await handle.execute_update(PizzaOrderWorkflow.cancel_order, "changed my mind")
        confirmation = await handle.result()
    assert (result.accepted, result.reason) == (False, TOO_LATE_TO_CANCEL)
    assert confirmation.status == "SUCCESS"
    assert confirmation.confirmation_number == billed.confirmation_number  # the same bill
    money = await money_of(gateway, ledger, run)
    assert [p.state for p in money.payments] == [MoneyState.CAPTURED]
    amount = menu.billed_amount(total)
    assert (money.ledger.charged, money.ledger.billed, money.ledger.refunded) == (amount, amount, 0)
    steps = [name for name, _ in await local_timeline(handle)]
    assert "refund_customer" not in steps and "revert_inventory" not in steps
    assert steps.count("send_bill") == 1
