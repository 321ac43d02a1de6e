"""Prices come from the menu: a client's other price is refused before any effect, by the
workflow, the CLI and (through menu.OrderRejected's field) the API; orders started before
the rule keep their path on replay."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

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


def with_first_price(history: dict[str, Any], price: int) -> dict[str, Any]:
    """The recorded history, its order's first item claiming ``price``."""
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    order = json.loads(base64.b64decode(payload["data"]))
    order["items"][0]["price"] = price
    payload["data"] = base64.b64encode(json.dumps(order).encode()).decode()
    return history


async def test_an_order_started_before_the_rule_with_another_price_replays_its_path() -> None:
    recorded = json.loads((HISTORIES / "good_order.json").read_text())
    assert MENU_PRICES_PATCH not in json.dumps(recorded)  # recorded before the rule
    changed = with_first_price(recorded, 1000)  # the menu says 1500
    history = WorkflowHistory.from_json("pizza-workflow-order-good_order", json.dumps(changed))
    replayer = Replayer(workflows=[PizzaOrderWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_a_delivery_started_before_the_address_rule_without_a_city_replays_its_path():
    recorded = json.loads((HISTORIES / "good_order.json").read_text())
    assert FULL_ADDRESS_PATCH not in json.dumps(recorded)  # recorded before the rule
    started = recorded["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    order = json.loads(base64.b64decode(payload["data"]))
    assert order["is_delivery"] is True
    order["address"]["city"] = ""  # delivered, completed, as the old rule let it
    payload["data"] = base64.b64encode(json.dumps(order).encode()).decode()
    history = WorkflowHistory.from_json("pizza-workflow-order-good_order", json.dumps(recorded))
    replayer = Replayer(workflows=[PizzaOrderWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_an_order_started_before_the_topping_rule_with_a_topping_twice_replays():
    recorded = json.loads((HISTORIES / "good_order.json").read_text())
    assert TOPPINGS_ONCE_PATCH not in json.dumps(recorded)  # recorded before the rule
    started = recorded["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    order = json.loads(base64.b64decode(payload["data"]))
    order["items"][0]["description"] = "Large, with mushrooms and mushrooms"  # the old rule's
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
