"""Free text under attack: no field takes a control or format character, and no terminal is
sent one to act on.

A cancel reason or a repair note holding ESC sequences, or a name holding U+202E or U+2028,
is refused by every door: menu.validate_order (the API, the CLI and the workflow for the
exercise's raw clients), the API's bodies (a 422 naming the field), the CLI (one line,
exit 2, nothing sent) and the workflow's Update validators. What reaches a terminal from
a history or the ledger anyway (a workflow id, an old order) is printed escaped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import subprocess
from typing import Any

import pytest
from rich.console import Console
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from pizzeria import menu, order_fields, text
from pizzeria.cli.orders import render_report
from pizzeria.client import start_order
from pizzeria.models import Address, workflow_id_for
from pizzeria.ops.check.report import CheckReport, Violation, print_check_report
from pizzeria.ops.processes import free_port
from pizzeria.samples import GOOD_CARD, sample_order
from pizzeria.temporal.connection import connect
from pizzeria.workflows import TEXT_RULE_PATCH, PizzaOrderWorkflow
from tests.helpers import pizzeria, run_pizzeria, unique_number
from tests.helpers.orders import assert_refused_before_any_effect, setting
from tests.helpers.stack import stack_env

pytestmark = pytest.mark.timeout(120)

# What an attacker puts in a field: a window title (OSC), a screen clear (CSI), a bidi
# override, a line separator, a paragraph separator, an invisible zero-width space.
HOSTILE = {
    "OSC title": "Lisa\x1b]0;you are pwned\x07",
    "CSI clear": "Lisa\x1b[2J",
    "C1 CSI": "Lisa\x9b2J",
    "RTL override": "Lisa \u202egnp.exe",
    "line separator": "Lisa\u2028Anderson",
    "paragraph separator": "Lisa\u2029Anderson",
    "zero-width space": "Li\u200bsa",
    "lone joiner": "\u200dLisa",
}
# The free-text fields of an order and how menu.py names them in its refusal.
ORDER_FIELDS = {
    "customer.name": lambda order, value: setattr(order.customer, "name", value),
    "customer.email": lambda order, value: setattr(order.customer, "email", value),
    "customer.phone": lambda order, value: setattr(order.customer, "phone", value),
    "address.line1": lambda order, value: setattr(order.address, "line1", value),
    "address.line2": lambda order, value: setattr(order.address, "line2", value),
    "address.city": lambda order, value: setattr(order.address, "city", value),
    "address.state": lambda order, value: setattr(order.address, "state", value),
    "address.postal_code": lambda order, value: setattr(order.address, "postal_code", value),
    "credit_card_info.holderName": lambda order, value: setattr(
        order.credit_card_info, "holderName", value
    ),
    "items[0].description": lambda order, value: setattr(
        order.items[0], "description", "Large, with ham " + value
    ),
}
ESCAPED = {
    "OSC title": "Lisa\\x1b]0;you are pwned\\x07",
    "RTL override": "Lisa \\u202egnp.exe",
    "line separator": "Lisa\\u2028Anderson",
}


# -- one rule for every field (pure) -----------------------------------------------------


@pytest.mark.parametrize("field", list(ORDER_FIELDS))
@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_every_free_text_field_of_an_order_refuses_control_and_format_characters(field, value):
    order = sample_order(card=GOOD_CARD)
    ORDER_FIELDS[field](order, value)
    with pytest.raises(order_fields.OrderRejected) as refused:
        menu.validate_order(order)
    assert refused.value.kind == "InvalidOrderError"
    # menu.py names an item by its place (it named it "item description" before).
    names = (field, "item description") if field.startswith("items[") else (field,)
    assert str(refused.value).startswith(tuple(f"{name} holds " for name in names)), refused
    assert "\x1b" not in str(refused.value) and "pwned" not in str(refused.value)


def test_accents_scripts_and_joined_emoji_stay_welcome():
    order = sample_order(card=GOOD_CARD, is_delivery=False)
    order.address = Address("", "", "", "", "")
    order.customer.name = "Zo\u00eb \u00d1\u00fa\u00f1ez \u674e \U0001f469\u200d\U0001f373"
    order.address.city = (
        "\u062a\u0647\u0631\u0627\u0646 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    )
    menu.validate_order(order)
    assert text.for_terminal(order.customer.name) == order.customer.name


# What shows as nothing, or is no text at all: refused in an order placed now.
UNREADABLE = {
    "Hangul filler": ("\u3164", "holds nothing visible"),
    "halfwidth filler and braille blank": ("\uffa0 \u2800", "holds nothing visible"),
    "private use": ("\ue000\uf8ff", "holds nothing visible"),
    "a combining mark alone": ("\u0301", "holds nothing visible"),
    "noncharacter U+FFFF": ("Ada\uffff", "holds a noncharacter"),
    "noncharacter U+FDD0": ("\ufdd0Ada", "holds a noncharacter"),
    "noncharacter U+10FFFF": ("Ada \U0010ffff", "holds a noncharacter"),
    "Zalgo text": ("Z" + "\u0336\u0317\u035b" * 3 + "algo", "stacks more than 6 combining"),
}
PLAIN_FIELDS = [field for field in ORDER_FIELDS if not field.startswith("items[")]


@pytest.mark.parametrize("field", PLAIN_FIELDS)
@pytest.mark.parametrize(("value", "reason"), list(UNREADABLE.values()), ids=list(UNREADABLE))
def test_an_order_placed_now_refuses_a_field_that_shows_as_nothing(field, value, reason):
    order = sample_order(card=GOOD_CARD)
    ORDER_FIELDS[field](order, value)
    with pytest.raises(order_fields.OrderRejected) as refused:
        menu.validate_order(order, new_number=True)
    assert refused.value.field == field
    assert str(refused.value) == f"{field} {text.unreadable_problem(value)}"
    assert reason in str(refused.value)
    # The workflow's rule is the older one: an order started before still replays.
    menu.validate_order(order)


def test_readable_text_with_a_filler_or_a_private_character_in_it_stays_welcome():
    order = sample_order(card=GOOD_CARD)
    order.customer.name = "\ud55c\u3164\uae00 \ue000 Zo\u00eb \U0001f469\u200d\U0001f373"
    order.address.line2 = "   "  # blank, as an empty optional field may be
    menu.validate_order(order, new_number=True)
    assert text.unreadable_problem("e\u0301") is None  # a mark on a letter
    # Vietnamese stacks two marks on a letter; Devanagari and Thai carry a few.
    assert text.unreadable_problem("Nguy\u1ec5n \u1ec7 \u0915\u094d\u0937\u093f") is None
    assert text.unreadable_problem("a" + "\u0301" * 6) is None


@pytest.mark.parametrize(
    ("name", "differs"),
    [
        ("Ada Lovelace", False),
        ("Ada\x1b[31m Lovelace", False),  # a control character: refused by both rules
        ("Zo\u00eb \u674e \U0001f469\u200d\U0001f373", False),  # a joiner between two
        ("Ada \u202eecalevoL", True),  # refused only since format characters are
        ("Ada\u2028Lovelace", True),
        ("\u200dAda", True),  # a joiner with nothing before it
    ],
)
def test_the_workflow_asks_the_text_rule_patch_only_of_an_order_whose_verdict_differs(
    name, differs
):
    """`refused_characters_in` decides whether the workflow records the text rule's patch
    marker: it must answer the same way on every worker, for every string of the order."""
    order = sample_order(card=GOOD_CARD)
    order.address.line2 = name
    assert text.refused_characters_in(order) is differs
    assert text.refused_characters_in(name) is differs


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_reason_or_a_note_is_checked_by_the_same_rule(value):
    for field in ("reason", "note"):
        with pytest.raises(text.TextRefused) as refused:
            text.check_text(field, value)
        assert refused.value.field == field and str(refused.value).startswith(f"{field} holds")
    assert text.check_text("reason", "changed my mind, sorry \U0001f355") is not None


@pytest.mark.parametrize("name", list(ESCAPED))
def test_for_terminal_shows_what_a_terminal_would_act_on_as_visible_escapes(name):
    shown = text.for_terminal(HOSTILE[name])
    assert shown == ESCAPED[name]
    assert all(ch.isprintable() for ch in shown)


# -- the CLI: one line, exit 2, nothing sent -----------------------------------------------


@pytest.fixture(scope="module")
def nowhere(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Nothing listens at this address: refused text must be refused before connecting."""
    return stack_env(tmp_path_factory.mktemp("text"), TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")


def assert_one_line(done: subprocess.CompletedProcess[str], names: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {names} holds "), done.stderr
    assert "\x1b" not in done.stderr and "\u202e" not in done.stderr
    assert "Traceback" not in done.stderr and "cannot reach" not in done.stderr


@pytest.mark.parametrize("value", [HOSTILE["OSC title"], HOSTILE["RTL override"]])
def test_the_cli_refuses_a_hostile_cancel_reason_or_repair_note_before_sending(nowhere, value):
    assert_one_line(run_pizzeria("cancel", "X1", "--reason", value, env=nowhere), "--reason")
    assert_one_line(run_pizzeria("repair", "X1", "--resolve", value, env=nowhere), "--resolve")


# -- the workflow, for the exercise's raw clients --------------------------------------------


@pytest.mark.parametrize(
    "path",
    [("customer", "name"), ("address", "line1"), ("credit_card_info", "holderName")],
    ids=lambda path: ".".join(path),
)
async def test_a_raw_order_with_format_characters_fails_before_any_effect(
    client, worker, ledger, task_queue, path
):
    raw = setting(path, HOSTILE["RTL override"])
    await assert_refused_before_any_effect(
        client, worker, ledger, task_queue, raw, "InvalidOrderError"
    )


async def test_the_workflow_refuses_a_hostile_reason_or_note_sent_past_our_clients(worker, start):
    """Any client can send the Update: the workflow's own validators refuse it, and the
    order goes on as if nothing was asked (nothing is cancelled)."""
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=3600))
        try:
            with pytest.raises(WorkflowUpdateFailedError) as cancel:
                await handle.execute_update(PizzaOrderWorkflow.cancel_order, HOSTILE["OSC title"])
            with pytest.raises(WorkflowUpdateFailedError) as resolve:
                await handle.execute_update(
                    PizzaOrderWorkflow.resolve_manually, HOSTILE["line separator"]
                )
            state = await handle.query(PizzaOrderWorkflow.saga_state)
        finally:
            await handle.terminate("test over")
    assert "reason holds control characters" in str(cancel.value.cause)
    assert "note holds a line separator" in str(resolve.value.cause)
    assert state["cancel_reason"] is None


async def test_an_order_placed_before_the_rule_replays_under_the_old_rule(
    client: Client, worker, start, monkeypatch
):
    """An order with U+202E in its name, started (and accepted) by a worker from before
    the rule, replays on today's worker without non-determinism (the patch keeps it)."""
    placed = sample_order(card=GOOD_CARD, prep_seconds=0)
    placed.customer.name = HOSTILE["RTL override"]
    with monkeypatch.context() as before_the_rule:
        # The sandbox imports its own copy of pizzeria.text: without it, the rule patched
        # here is the one the workflow runs (the replay below runs sandboxed, as workers do).
        before_the_rule.setattr(text, "REFUSED", text.REFUSED_BEFORE)
        async with worker(workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await start(placed)
            result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.status == "SUCCESS"
    history = await handle.fetch_history()
    assert TEXT_RULE_PATCH.encode() not in history.to_json().encode()
    replayed = await Replayer(workflows=[PizzaOrderWorkflow]).replay_workflow(
        WorkflowHistory.from_json(handle.id, history.to_json()), raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None, replayed.replay_failure


# -- what a terminal is shown ------------------------------------------------------------


def report_with(hostile: str) -> dict[str, Any]:
    return {
        "order_number": "X1" + hostile,
        "status": "FAILED",
        "details": "",
        "error": "Order cancelled: " + hostile,
        "summary": hostile,
        "failing_workflow_task": None,
        "needs_attention": False,
        "timeline": [
            {
                "started_at": "2024-01-01T00:00:00.000000",
                "kind": "step",
                "name": "process_credit_card",
                "duration_ms": 5.0,
                "attempts": 1,
                "outcome": "failed",
                "error": "[link=http://evil.example]click[/link] " + hostile,
                "summary": "",
            }
        ],
        "repaired_by": "operator",
        "resolution_note": hostile,
    }


@pytest.mark.parametrize("name", list(ESCAPED))
def test_status_prints_text_from_the_history_escaped(name):
    rendered = render_report(report_with(HOSTILE[name]))
    assert HOSTILE[name] not in rendered and "\x1b" not in rendered
    assert ESCAPED[name] in rendered
    assert rendered.count(ESCAPED[name]) >= 4  # number, error, summary, note (a cell wraps)


def test_a_status_table_cell_is_never_read_as_markup():
    """Read as markup, ``[link=...]`` would print an OSC 8 hyperlink on a terminal."""
    assert "[link=http://evil.example]click[/link] x" in render_report(report_with("x"))


def test_the_check_report_prints_order_numbers_and_details_escaped():
    hostile = HOSTILE["OSC title"]
    report = CheckReport(
        orders={"total": 1, "completed": 0, "failed": 0, "cancelled": 0, "open": 1}
        | {"terminated": 0, "timed_out": 0},
        stock={},
        money={
            "charged": 0,
            "refunded": 0,
            "net": 0,
            "refunded_after_bill": 0,
            "kept": 0,
            "billed_completed": 0,
            "completed_orders_settled": 0,
            "undone_orders_settled": 0,
        },
        failures={},
        double_effects=0,
        refunds_above_charges=0,
        open_orders=["X1" + hostile],
        violations=[Violation("double effect", "X1" + hostile, "run-1234", hostile)],
        warnings=[Violation("unknown run", "X1" + hostile, "run-1234", hostile)],
    )
    buffer = io.StringIO()
    print_check_report(report, Console(file=buffer, force_terminal=True, width=200))
    printed = buffer.getvalue()
    assert "\x1b]0;" not in printed and "\x07" not in printed
    assert printed.count(ESCAPED["OSC title"]) >= 4


def test_status_prints_a_customers_markup_as_text_even_on_a_colour_terminal(stack, monkeypatch):
    """A customer's name is the order's summary: read as markup by the terminal's console,
    it printed an OSC 8 hyperlink and styles an operator would click or miss."""
    for name, value in stack["env"].items():  # the stack's codec key, as its clients have it
        if name.startswith("PIZZERIA_"):
            monkeypatch.setenv(name, value)
    number = unique_number("MARKUP")
    order = sample_order(number, card=GOOD_CARD, prep_seconds=0, is_delivery=False)
    order.customer.name = "[link=https://evil.example/pay]Lisa[/link] [reverse]x[/reverse]"

    async def place() -> None:
        client = await connect(stack["address"])
        handle = await start_order(client, order)
        await asyncio.wait_for(handle.result(), timeout=60)

    asyncio.run(place())
    coloured = {**stack, "env": {**stack["env"], "FORCE_COLOR": "1", "COLUMNS": "200"}}
    shown = pizzeria(coloured, "status", number)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b]8;" not in shown.stdout  # no hyperlink
    assert "for [link=https://evil.example/pay]Lisa[/link] [reverse]x[/reverse]:" in shown.stdout


def test_orders_and_status_escape_a_hostile_workflow_id_end_to_end(stack):
    """Any client can start the workflow under any id: the listing and the status of the
    order print it escaped."""
    number = unique_number("ESC") + HOSTILE["OSC title"]

    async def start_raw() -> None:
        raw_client = await Client.connect(stack["address"])
        order = dataclasses.asdict(sample_order(number, card=GOOD_CARD, prep_seconds=0))
        handle = await raw_client.start_workflow(
            "PizzaOrderWorkflow", order, id=workflow_id_for(number), task_queue="pizza-tasks"
        )
        with pytest.raises(WorkflowFailureError):  # refused: the number is no order number
            await asyncio.wait_for(handle.result(), timeout=60)

    asyncio.run(start_raw())
    listed = pizzeria(stack, "orders", "--limit", "50")
    shown = pizzeria(stack, "status", number)
    for done in (listed, shown):
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
        assert "pwned" in done.stdout  # shown, escaped (a table may wrap it)
    # --json is for programs: the JSON encoder escapes it already.
    listed_json = json.loads(pizzeria(stack, "orders", "--json", "--limit", "50").stdout)
    assert number in [row["order_number"] for row in listed_json["orders"]]


def test_a_count_takes_its_noun_in_the_number_it_needs() -> None:
    assert [text.counted(n, "violation") for n in (0, 1, 2)] == [
        "0 violations",
        "1 violation",
        "2 violations",
    ]
    assert text.counted(1, "rolling restart") == "1 rolling restart"
    assert text.counted(2, "order", "orders repaired") == "2 orders repaired"
