"""Prices come from the menu: a client's other price is refused before any effect, by the
workflow, the CLI and (through order_fields.OrderRejected's field) the API; orders started before
the rule keep their path on replay."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from pizzeria.workflows import (
    FULL_ADDRESS_PATCH,
    MENU_PRICES_PATCH,
    TOPPINGS_ONCE_PATCH,
    PizzaOrderWorkflow,
)
from tests.helpers import run_pizzeria

HISTORIES = Path(__file__).parents[1] / "histories"


def first_price_1000(order: dict[str, Any]) -> None:
    order["items"][0]["price"] = 1000  # the menu says 1500


def no_city(order: dict[str, Any]) -> None:
    assert order["is_delivery"] is True
    order["address"]["city"] = ""  # delivered, completed, as the old rule let it


def a_topping_twice(order: dict[str, Any]) -> None:
    order["items"][0]["description"] = "Large, with mushrooms and mushrooms"


@pytest.mark.parametrize(
    ("patch", "change"),
    [
        (MENU_PRICES_PATCH, first_price_1000),
        (FULL_ADDRESS_PATCH, no_city),
        (TOPPINGS_ONCE_PATCH, a_topping_twice),
    ],
    ids=["another-price", "no-city", "a-topping-twice"],
)
async def test_an_order_started_before_a_rule_it_breaks_replays_its_path(
    patch: str, change: Callable[[dict[str, Any]], None]
) -> None:
    """The recorded good order, changed as the rule now refuses: it completed under the
    old rule, and replays so (the workflow asks for the rule's patch only of such an
    order, and the history has no marker)."""
    recorded = json.loads((HISTORIES / "good_order.json").read_text())
    assert patch not in json.dumps(recorded)  # recorded before the rule
    started = recorded["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    order = json.loads(base64.b64decode(payload["data"]))
    change(order)
    payload["data"] = base64.b64encode(json.dumps(order).encode()).decode()
    history = WorkflowHistory.from_json("pizza-workflow-order-good_order", json.dumps(recorded))
    replayer = Replayer(workflows=[PizzaOrderWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_order_item_at_another_price_is_refused_in_one_line_before_connecting() -> None:
    # No server anywhere: the refusal comes before the connection.
    env = {"PATH": "/usr/bin:/bin", "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    done = run_pizzeria(
        "order", "--item", "Small", "--item", "Large, with ham=1000", env=env, timeout=60
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    # The item is named as the user typed it: the second --item, not items[1].
    assert lines[0] == (
        "error: --item #2 ('Large, with ham') costs 1500 cents on the menu ($15.00), not 1000"
    )
    assert "Traceback" not in done.stderr


def test_order_item_at_the_menus_price_is_accepted_by_the_same_check() -> None:
    env = {"PATH": "/usr/bin:/bin", "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    done = run_pizzeria(
        "order", "--item", "Large, with ham=1500", "--timeout", "1", env=env, timeout=60
    )
    # Past the menu: it then fails to reach the server (not a price refusal).
    assert done.returncode == 1 and "cannot reach Temporal" in done.stderr, done
    assert "on the menu" not in done.stderr
