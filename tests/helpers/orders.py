"""The exercise's order as its own clients send it, and ways to watch and refuse one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError

from pizzeria.ledger import Ledger
from pizzeria.models import workflow_id_for
from pizzeria.samples import BAD_CARD, GOOD_CARD
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import event_types, eventually, failure_of, unique_number

#: 32 random bytes (43 base64url characters): a secret or codec key good enough to use.
GOOD_SECRET = "m8Jx1Z2v7Qf0yKcP4bWnR9tLsE6hA3dUoVgXiNrCq5M"
CODEC_SECRET = GOOD_SECRET


RECIPE_OF_EXERCISE = {
    "cheese": 8,
    "dough": 6,
    "mushrooms": 3,
    "onions": 3,
    "pepperoni": 1,
    "tomato sauce": 6,
}


def quantities(ledger: Ledger) -> dict[str, int]:
    return {name: row["quantity"] for name, row in ledger.stock().items()}


async def showing(handle: WorkflowHandle[Any, Any], details: str) -> bool:
    state = await handle.query(PizzaOrderWorkflow.saga_state)
    return bool(state["details"] == details)


async def charging(handle: WorkflowHandle[Any, Any]) -> None:
    """Wait until the stock is taken (and known to be) and the card gateway is called."""
    await eventually(lambda: showing(handle, "Charging card"), "the order to charge the card")


def exercise_json(card: str = BAD_CARD) -> dict[str, Any]:
    """The exercise's order as its clients send it: plain JSON, no optional fields."""
    return {
        "order_number": "XD001",
        "customer": {
            "customer_id": 8675309,
            "name": "Lisa Anderson",
            "email": "lisa@example.com",
            "phone": "555-555-0000",
        },
        "items": [
            {"description": "Large, with mushrooms and onions", "price": 1500},
            {"description": "Small, with pepperoni", "price": 1200},
            {"description": "Medium, with extra cheese", "price": 1300},
        ],
        "is_delivery": True,
        "address": {
            "line1": "741 Evergreen Terrace",
            "line2": "Apartment 221B",
            "city": "Albuquerque",
            "state": "NM",
            "postal_code": "87101",
        },
        "credit_card_info": {"holderName": "Lisa Anderson", "number": card},
    }


def good() -> dict[str, Any]:
    order = exercise_json(GOOD_CARD)
    order["settings"] = {"prep_seconds": 0}
    return order


def changed(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    order = copy.deepcopy(good())
    edit(order)
    return order


def setting(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    def edit(order: dict[str, Any]) -> None:
        target: Any = order
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return changed(edit)


def numbered(raw: Any) -> tuple[Any, str]:
    """The raw order under an order number of its own, and the workflow id that number
    gives (one order number, one order); input without a usable number gets a fresh id."""
    number = unique_number("RAW")
    if isinstance(raw, dict) and raw.get("order_number") == good()["order_number"]:
        raw = {**raw, "order_number": number}
    given = raw.get("order_number") if isinstance(raw, dict) else None
    # A number the workflow refuses anyway (too long for an id, say) needs no id of its own.
    if isinstance(given, str) and 0 < len(given) <= 64:
        return raw, workflow_id_for(given)
    return raw, workflow_id_for(number)


async def send_raw(client: Client, task_queue: str, raw: Any) -> WorkflowHandle[Any, Any]:
    raw, workflow_id = numbered(raw)
    return await client.start_workflow(
        "PizzaOrderWorkflow", raw, id=workflow_id, task_queue=task_queue
    )


async def assert_refused_before_any_effect(
    client: Client, worker: Any, ledger: Ledger, task_queue: str, raw: Any, kind: str | None
) -> None:
    before = ledger.stock()
    async with worker():
        handle = await send_raw(client, task_queue, raw)
        cause = await failure_of(handle, seconds=10)
    assert isinstance(cause, ApplicationError), repr(cause)
    if kind is not None:
        assert cause.type == kind, (cause.type, cause.message)
    assert cause.non_retryable is True
    history = await event_types(handle)
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in history  # never stuck retrying
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in history  # before any effect
    assert ledger.effects() == [] and ledger.stock() == before
