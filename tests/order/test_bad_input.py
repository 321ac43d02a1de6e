"""Malformed orders: refused at once, never a stuck workflow, never a ledger change.

The same corpus of bad orders arrives two ways. Through the CLI (`pizzeria order` with bad
flags), each gets one ``error: ...`` line and exit code 2 before any server is contacted.
As raw JSON sent straight to the workflow with the Temporal client (what any client of the
exercise can do), the workflow fails fast with a typed, non-retryable ``ApplicationError``
before its first activity: no workflow task keeps failing and retrying, and the ledger
does not change.

What is *not* malformed, and so accepted: extra JSON fields (the wire contract lets new
fields be added, so an old worker ignores them), and names in any script or with emoji.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from pizzeria import menu, order_fields
from pizzeria.cli.common import UserError
from pizzeria.cli.order_input import build_order
from pizzeria.models import Address, OrderSettings
from pizzeria.ops.processes import free_port
from pizzeria.samples import GOOD_CARD, sample_order
from tests.helpers import failure_of, run_pizzeria
from tests.helpers.orders import (
    assert_refused_before_any_effect,
    changed,
    send_raw,
    setting,
)
from tests.helpers.stack import stack_env

# Full-width digits: digits to str.isdigit() and to the regex \d, not to a card gateway.
FULL_WIDTH_CARD = "\uff14\uff12" * 8

pytestmark = pytest.mark.timeout(120)


# -- through the CLI -------------------------------------------------------------------------


CLI_CORPUS: dict[str, list[str]] = {
    "card missing its value": ["--card"],
    "card with spaces": ["--card", "4242 4242 4242 4242"],
    "card with letters": ["--card", "4242abcd42424242"],
    "card too short": ["--card", "4242"],
    "card too long": ["--card", "4" * 25],
    "card empty": ["--card", ""],
    "item missing its value": ["--item"],
    "item empty": ["--item", ""],
    "item price not a number": ["--item", "Large=abc"],
    "item negative price": ["--item", "Large=-1500"],
    "item price only": ["--item", "=1200"],
    "item unknown size": ["--item", "Gigantic, with ham"],
    "order number with spaces": ["--order-number", "bad number!"],
    "order number non-ASCII": ["--order-number", "ORD\u00c9R-1"],
    "order number too long": ["--order-number", "X" * 65],
    "order number empty": ["--order-number", ""],
    "prep seconds not a number": ["--prep-seconds", "soon"],
    "prep seconds negative": ["--prep-seconds", "-1"],
    "compensation attempts zero": ["--compensation-attempts", "0"],
    "compensation attempts not a number": ["--compensation-attempts", "many"],
    "unknown option": ["--bogus"],
    "extra argument": ["extra"],
}

# Well-formed flags, but an order the menu refuses: menu.validate_order, which
# `pizzeria order` calls before connecting, answers them.
CLI_CORPUS_MENU: dict[str, list[str]] = {
    "card of full-width digits": ["--card", FULL_WIDTH_CARD],
    "item zero price": ["--item", "Large=0"],
    "item huge price": ["--item", "Large=99999999999"],
    "item superscript price": ["--item", "Large=\u00b2"],
    "item unknown topping": ["--item", "Large, with anchovies"],
    "item non-ASCII topping": ["--item", "Large, with jalape\u00f1os"],
    "item very long description": ["--item", "Large, with " + "ham and " * 300 + "olives"],
    "thousands of items": ["--item", "Small"] * 3000,
}


@pytest.fixture(scope="module")
def cli_env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, str]:
    """Nothing listens at this address: a bad order must be refused before connecting."""
    if request.config.getoption("--workflow-environment") == "local":
        pytest.skip("no server involved: runs once, in the default pass")
    data = tmp_path_factory.mktemp("bad-input")
    return stack_env(data, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")


def order_from_cli(cli_env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    defaults = ["--order-number", "BAD-1", "--prep-seconds", "0"]
    if args and args[0] in ("--order-number", "--prep-seconds"):
        defaults = []
    return run_pizzeria("order", *defaults, *args, env=cli_env, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("args", list(CLI_CORPUS.values()), ids=list(CLI_CORPUS))
def test_a_bad_order_from_the_cli_is_one_error_line_and_exit_2(cli_env, args):
    assert_one_line_error(order_from_cli(cli_env, args))


@pytest.mark.parametrize("args", list(CLI_CORPUS_MENU.values()), ids=list(CLI_CORPUS_MENU))
def test_an_order_the_menu_refuses_is_refused_by_the_cli_before_connecting(cli_env, args):
    assert_one_line_error(order_from_cli(cli_env, args))


# -- raw JSON straight to the workflow -------------------------------------------------------


def without(*path: str | int) -> dict[str, Any]:
    def edit(order: dict[str, Any]) -> None:
        target: Any = order
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return changed(edit)


def item(description: str = "Large, with ham", price: Any = 1500) -> dict[str, Any]:
    return {"description": description, "price": price}


LONG = "x" * 10_000
DECODE = "InvalidOrderError"  # does not decode into a PizzaOrder (missing field, wrong type)
INVALID = "InvalidOrderError"
RAW_CORPUS: dict[str, tuple[Any, str]] = {
    # missing fields
    "no address": (without("address"), DECODE),
    "no items": (without("items"), DECODE),
    "no card": (without("credit_card_info"), DECODE),
    "no customer name": (without("customer", "name"), DECODE),
    "no item price": (without("items", 0, "price"), DECODE),
    "empty object": ({}, DECODE),
    # wrong types
    "price as a string": (setting(("items", 0, "price"), "1500"), DECODE),
    "price as null": (setting(("items", 0, "price"), None), DECODE),
    "price as NaN": (setting(("items", 0, "price"), math.nan), DECODE),
    "customer id as a string": (setting(("customer", "customer_id"), "abc"), DECODE),
    "delivery as a string": (setting(("is_delivery",), "yes"), DECODE),
    "items as an object": (setting(("items",), {"a": 1}), DECODE),
    "items as a string": (setting(("items",), "pizza"), DECODE),
    "items as numbers": (setting(("items",), [1, 2]), DECODE),
    "order number as a number": (setting(("order_number",), 42), DECODE),
    "card number as a number": (setting(("credit_card_info", "number"), 4242424242424242), DECODE),
    "customer as a list": (setting(("customer",), ["Lisa"]), DECODE),
    "settings as a string": (setting(("settings",), "fast"), DECODE),
    "prep seconds as a string": (setting(("settings",), {"prep_seconds": "x"}), DECODE),
    # values
    "zero price": (setting(("items",), [item(price=0)]), INVALID),
    "negative price": (setting(("items",), [item(price=-1500)]), "InvalidChargeAmountError"),
    "huge price": (setting(("items",), [item(price=10**12)]), INVALID),
    "price beyond 64 bits": (setting(("items",), [item(price=2**70)]), INVALID),
    "no items at all": (setting(("items",), []), INVALID),
    "thousands of items": (setting(("items",), [item()] * 5000), INVALID),
    "very long name": (setting(("customer", "name"), LONG), INVALID),
    "very long email": (setting(("customer", "email"), LONG), INVALID),
    "very long city": (setting(("address", "city"), LONG), INVALID),
    "very long description": (
        setting(("items",), [item("Large, with " + "ham and " * 500)]),
        INVALID,
    ),
    "name with a NUL": (setting(("customer", "name"), "Lisa\x00Anderson"), INVALID),
    "name with a newline": (setting(("customer", "name"), "Lisa\nAnderson"), INVALID),
    "name with a lone surrogate": (setting(("customer", "name"), "Lisa \ud800"), INVALID),
    "empty name": (setting(("customer", "name"), "   "), INVALID),
    "empty delivery address": (setting(("address", "line1"), ""), INVALID),
    "order number non-ASCII": (setting(("order_number",), "ORD\u00c9R-1"), INVALID),
    "order number very long": (setting(("order_number",), "X" * 1000), INVALID),
    "customer id negative": (setting(("customer", "customer_id"), -5), INVALID),
    "customer id beyond 64 bits": (setting(("customer", "customer_id"), 2**64), INVALID),
    "card with spaces": (setting(("credit_card_info", "number"), "4242 4242 4242 4242"), INVALID),
    "card with letters": (setting(("credit_card_info", "number"), "4242abcd42424242"), INVALID),
    "card of full-width digits": (
        setting(("credit_card_info", "number"), FULL_WIDTH_CARD),
        INVALID,
    ),
    "card empty": (setting(("credit_card_info", "number"), ""), INVALID),
    "card too long": (setting(("credit_card_info", "number"), "4" * 30), INVALID),
    "unknown topping": (
        setting(("items",), [item("Large, with anchovies")]),
        "UnknownToppingError",
    ),
    "non-ASCII topping": (
        setting(("items",), [item("Large, with jalape\u00f1os")]),
        "UnknownToppingError",
    ),
    "unknown size": (setting(("items",), [item("Gigantic, with ham")]), INVALID),
    "negative prep seconds": (setting(("settings",), {"prep_seconds": -1}), INVALID),
    "endless prep seconds": (setting(("settings",), {"prep_seconds": math.inf}), INVALID),
    "prep seconds NaN": (setting(("settings",), {"prep_seconds": math.nan}), INVALID),
    "zero compensation attempts": (setting(("settings",), {"compensation_attempts": 0}), INVALID),
    "a billion step attempts": (setting(("settings",), {"step_attempts": 10**9}), INVALID),
    # not an order at all
    "a JSON string": ("pizza", DECODE),
    "a JSON list": ([1, 2], DECODE),
    "a JSON number": (42, DECODE),
    "JSON null": (None, INVALID),  # the SDK hands the workflow None: validate_order refuses it
}

# The SDK's JSON decoder would turn 1500.5 into 1500 and true into 1 for an ``int`` field
# (an order charged a truncated amount); the worker's strict converter refuses them.
TRUNCATED_CORPUS: dict[str, Any] = {
    "price with a fraction of a cent": setting(("items", 0, "price"), 1500.5),
    "price as true": setting(("items", 0, "price"), True),
    "customer id with a fraction": setting(("customer", "customer_id"), 1.5),
}


def raw_payload(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


# Not JSON an order can be read from: left to the SDK, these fail the workflow *task* over
# and over; the worker's StrictPayloadConverter fails the order instead.
UNDECODABLE_CORPUS: dict[str, RawValue] = {
    "broken JSON": raw_payload(b'{"order_number": "XD001", '),
    "invalid UTF-8": raw_payload(b'{"order_number": "\xff\xfe"}'),
    "unknown encoding": raw_payload(b"{}", b"pizza/unknown"),
}


@pytest.mark.parametrize(("raw", "kind"), list(RAW_CORPUS.values()), ids=list(RAW_CORPUS))
async def test_raw_malformed_json_fails_the_order_at_once_before_any_effect(
    client, worker, ledger, task_queue, raw, kind
):
    await assert_refused_before_any_effect(client, worker, ledger, task_queue, raw, kind)


@pytest.mark.parametrize("raw", list(UNDECODABLE_CORPUS.values()), ids=list(UNDECODABLE_CORPUS))
async def test_a_payload_that_is_not_json_fails_the_order_at_once(
    client, worker, ledger, task_queue, raw
):
    await assert_refused_before_any_effect(client, worker, ledger, task_queue, raw, None)


@pytest.mark.parametrize("raw", list(TRUNCATED_CORPUS.values()), ids=list(TRUNCATED_CORPUS))
async def test_a_number_that_is_not_a_whole_number_is_refused(
    client, worker, ledger, task_queue, raw
):
    await assert_refused_before_any_effect(client, worker, ledger, task_queue, raw, DECODE)


async def test_an_order_that_does_not_decode_fails_non_retryably(client, worker, task_queue):
    """Matters when a client starts the order with a retry policy: each retry fails again."""
    async with worker():
        cause = await failure_of(await send_raw(client, task_queue, without("address")), 10)
    assert isinstance(cause, ApplicationError) and cause.non_retryable is True


ACCEPTED: dict[str, dict[str, Any]] = {
    "extra top-level field": changed(lambda o: o.update(coupon="PIZZA10", loyalty={"tier": 3})),
    "extra item field": changed(lambda o: o["items"][0].update(notes="well done")),
    "extra settings field": changed(lambda o: o["settings"].update(oven="wood")),
    "names in other scripts and emoji": changed(
        lambda o: o["customer"].update(
            name="Zo\u00eb \u00d1\u00fa\u00f1ez \u674e \U0001f469\u200d\U0001f373"
        )
    ),
}


@pytest.mark.parametrize("raw", list(ACCEPTED.values()), ids=list(ACCEPTED))
async def test_extra_fields_and_any_script_are_not_malformed_and_the_order_completes(
    client, worker, ledger, task_queue, raw
):
    async with worker():
        handle = await send_raw(client, task_queue, raw)
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result["amount"] == 3500 and result["status"] == "SUCCESS"
    (row,) = ledger.orders()
    assert (row.charged, row.billed) == (3500, 3500)


def test_the_corpus_is_json_the_wire_can_carry():
    """Guard: every raw case survives the JSON encoding a client applies (NaN included)."""
    for raw, _ in RAW_CORPUS.values():
        assert json.loads(json.dumps(raw)) is not None or raw is None


# -- where the line is drawn (pure) ------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["424242424242424", "4242424242424241", "424242424242", "4" * 19]
)
def test_a_card_number_of_12_to_19_digits_is_left_to_the_card_gateway(number: str) -> None:
    """The exercise's 15-digit card must still fail at process_credit_card, compensated."""
    menu.validate_order(sample_order(card=number))


@pytest.mark.parametrize(
    "number", ["42424242424", "4" * 20, "4242-4242-4242-4242", " 4242424242424242", FULL_WIDTH_CARD]
)
def test_a_card_number_that_is_no_card_number_is_refused_before_any_effect(number: str) -> None:
    with pytest.raises(order_fields.OrderRejected) as refused:
        menu.validate_order(sample_order(card=number))
    assert refused.value.kind == "InvalidOrderError"


def test_optional_text_may_be_empty_and_names_may_use_any_script() -> None:
    order = sample_order(card=GOOD_CARD, is_delivery=False)
    order.customer.email = order.customer.phone = ""
    order.address = Address("", "", "", "", "")
    order.customer.name = "Zo\u00eb \u674e \U0001f469\u200d\U0001f373"
    menu.validate_order(order)


@pytest.mark.parametrize(
    ("items", "settings", "said"),
    [
        ((), OrderSettings(prep_seconds=1e12), "--prep-seconds must be between 0 and 3600.0"),
        ((), OrderSettings(step_attempts=10**20), "--step-attempts must be between 1 and 1000"),
        (
            ("Large", "Large, with anchovies"),
            OrderSettings(),
            "--item #2: Unknown topping 'anchovies'",
        ),
    ],
)
def test_the_cli_names_the_flag_the_user_typed_not_the_orders_field(items, settings, said):
    with pytest.raises(UserError) as refused:
        build_order("BAD-1", GOOD_CARD, False, items, settings)
    assert str(refused.value) == said


@pytest.mark.parametrize(
    "item", ["x" * 100_000, "Large=" + "9" * 100_000 + "x", "y" * 100_000 + "="]
)
def test_a_huge_item_is_quoted_by_its_start_only(item: str) -> None:
    # `--item "$(python3 -c 'print("x"*100000)')"` was printed back whole: 100 KB on one line.
    with pytest.raises(UserError) as refused:
        build_order("BAD-1", GOOD_CARD, False, (item,), OrderSettings())
    said = str(refused.value)
    assert said.startswith("--item") and len(said) < 200, said[:300]
