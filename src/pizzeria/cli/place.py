"""Placing an order: the ``order`` command, which waits for the outcome and prints it."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import textwrap
import time
from dataclasses import asdict
from typing import Any

import click
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from pizzeria import menu
from pizzeria.cli.common import UserError, client_or_fail, err, fail, out, run
from pizzeria.cli.options import address_option, flag_option, float_option, int_option, json_option
from pizzeria.cli.orders import print_outcome
from pizzeria.client import (
    OrderAlreadyCompleted,
    OrderAlreadyRunning,
    OrderOutcome,
    before_attention,
    outcome_of,
)
from pizzeria.client.placing import answer_within, start_with_answer
from pizzeria.models import (
    ORDER_STATUS,
    OrderSettings,
    Pizza,
    PizzaOrder,
    dollars,
    mask_card_number,
    order_number_of,
    workflow_id_for,
)
from pizzeria.order_hold import CardHold
from pizzeria.order_visibility import NEEDS_ATTENTION_STATUS
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal import tracing
from pizzeria.temporal.codec import key_file, no_key_yet
from pizzeria.temporal.devserver import quiet_runtime
from pizzeria.temporal.tracing import TRACE_MEMO
from pizzeria.temporal.waiting import OrderNeedsAttention, OrderStillRunning, Unanswered

#: The order's fields that `order` fills from a flag: menu.py's refusals name the field,
#: the user is shown the flag they typed.
FLAG_OF_FIELD = {
    "order_number": "--order-number",
    "credit_card_info.number": "--card",
    "settings.prep_seconds": "--prep-seconds",
    "settings.step_attempts": "--step-attempts",
    "settings.compensation_attempts": "--compensation-attempts",
}
#: How long `order` waits for an outcome by default, and its exit code when it gives up.
DEFAULT_PATIENCE = 300.0
STILL_RUNNING = 3
#: Ctrl-C (or SIGTERM): the exit code of a command a signal interrupted.
INTERRUPTED = 130


def parse_item(text: str) -> Pizza:
    """``DESCRIPTION`` or ``DESCRIPTION=CENTS``; the price defaults by size."""
    description, sep, price_text = text.rpartition("=") if "=" in text else (text, "", "")
    description = description.strip()
    if not description:
        raise UserError("--item needs a description such as 'Large, with mushrooms'")
    if sep:
        said = price_text.strip()
        if not (said.isascii() and said.isdigit()):
            if not said:
                raise UserError(f"--item {text!r}: the price is missing after '='")
            raise UserError(f"--item price must be a positive number of cents, got {said!r}")
        return Pizza(description=description, price=int(price_text))
    size = description.split(",")[0].split()[0].lower()
    if size not in menu.PRICE_BY_SIZE:
        raise UserError(f"--item {description!r}: start with Small, Medium or Large")
    return Pizza(description=description, price=menu.PRICE_BY_SIZE[size])


def build_order(
    order_number: str,
    card: str,
    pickup: bool,
    items: tuple[str, ...],
    settings: OrderSettings,
) -> PizzaOrder:
    """The exercise's order with what the flags changed, refused here as the workflow would
    refuse it: a user deserves the answer before connecting."""
    if settings.prep_seconds < 0:
        raise UserError("--prep-seconds cannot be negative")
    pizzas = [parse_item(item) for item in items] if items else None
    placed = sample_order(order_number, card=card, is_delivery=not pickup, items=pizzas)
    placed.settings = settings
    try:
        menu.validate_order(placed, new_number=True)
    except menu.OrderRejected as rejected:
        raise UserError(said_with_flags(rejected, typed_items=bool(items))) from None
    return placed


def said_with_flags(rejected: menu.OrderRejected, *, typed_items: bool) -> str:
    """The refusal, naming the flag the user typed instead of the order's field:
    ``--prep-seconds must be between 0 and 3600.0``, ``--item #2: Unknown topping ...``."""
    field, message = rejected.field, str(rejected)
    flag = FLAG_OF_FIELD.get(field)
    item = re.fullmatch(r"(items\[(\d+)\])(?:\.\w+)?", field) if typed_items else None
    if item:  # the user typed --item, not items[0]: say which of them
        flag = f"--item #{int(item.group(2)) + 1}"
    if flag is None:
        return message
    # The message names the field, or the item ("items[1] ('Large') costs ..."): the flag
    # takes its place.
    for named in (field, item.group(1) if item else None):
        if named and message.startswith(named + " "):
            return f"{flag} {message[len(named) + 1 :]}"
    return f"{flag}: {message}"


@click.command()
@click.option(
    "--card",
    default=GOOD_CARD,
    show_default=True,
    help=f"Card number (the exercise's bad card: {BAD_CARD}); '-' reads it from the first "
    "line of standard input, so that it is not in the process list nor in the shell's history",
)
@flag_option("--pickup", help="Pick up instead of delivery (no driver)")
@click.option(
    "--item",
    "items",
    multiple=True,
    help="A pizza, 'DESCRIPTION' or 'DESCRIPTION=CENTS'; repeat for more "
    "[default: the exercise's three]",
)
@click.option(
    "--order-number",
    default="XD001",
    show_default=True,
    help="Order number (one running order each)",
)
@click.option(
    "--prep-seconds",
    type=float,
    help="The kitchen's wait, once the card is held [default: 3]",
)
@int_option(
    "--compensation-attempts",
    1,
    help="Attempts per compensation before the order asks for repair [default: 10]",
)
@int_option(
    "--step-attempts",
    1,
    help="Attempts per step before the order gives up and compensates [default: 10]",
)
@flag_option(
    "--again",
    help="Start a new run even if this order number already completed (charges again)",
)
@float_option(
    "--timeout",
    1,
    name="patience",
    default=DEFAULT_PATIENCE,
    help="Seconds to wait for the outcome, through server restarts; then the order is "
    f"still running (exit {STILL_RUNNING})",
)
@flag_option(
    "--fast-path",
    help="Run the ledger steps and their compensations as local activities (faster; "
    "they show as markers in the Web UI: docs/design.md, the fast path)",
)
@address_option
@json_option
def order(
    card: str,
    pickup: bool,
    items: tuple[str, ...],
    order_number: str,
    prep_seconds: float | None,
    compensation_attempts: int | None,
    step_attempts: int | None,
    again: bool,
    patience: float,
    fast_path: bool,
    address: str | None,
    as_json: bool,
) -> None:
    """Place an order (the exercise's three pizzas by default) and wait for its outcome.

    An order number whose last run completed is not placed again (its confirmation is
    shown) unless --again; a failed or cancelled one may be. Exit 0 completed, 1 failed or
    cancelled, 2 bad input, 3 still running (after --timeout, once it needs attention, or
    placed already and not finished), 130 interrupted (the order goes on).
    """
    defaults = OrderSettings()
    settings = OrderSettings(
        prep_seconds=defaults.prep_seconds if prep_seconds is None else prep_seconds,
        compensation_attempts=compensation_attempts or defaults.compensation_attempts,
        step_attempts=step_attempts or defaults.step_attempts,
        fast_path=fast_path,
    )
    if card == "-":  # at a terminal: asked without echo, as a password is
        typed = getpass.getpass("Card number: ") if sys.stdin.isatty() else sys.stdin.readline()
        card = typed.strip()
        if not card:
            raise UserError("--card -: no card number on the first line of standard input")
    placed = build_order(order_number, card, pickup, items, settings)
    try:
        placing = place_or_show(placed, again, patience, address, as_json)
        outcome, placed_before, hold, trace_id = run(placing)
    except OrderAlreadyRunning as already:
        # Not a failure: the order runs (a retry after a lost answer, say), placed once.
        fail(
            f"{already}; it is running: follow it with `pizzeria status {order_number} --watch`",
            STILL_RUNNING,
        )
    except OrderStillRunning as running:
        if as_json:
            still = {"order_number": order_number, "status": "RUNNING", "message": str(running)}
            out.print_json(json.dumps(still))
        fail(str(running), STILL_RUNNING)
    except KeyboardInterrupt:  # the order is Temporal's: it goes on without this command
        fail(
            f"interrupted; order {order_number} goes on if it was placed: follow it with "
            f"`pizzeria status {order_number} --watch`, or cancel it with "
            f"`pizzeria cancel {order_number}`",
            INTERRUPTED,
        )
    if as_json:
        held = asdict(hold) if hold is not None else None
        shown = {**outcome.to_json(), "already_completed": placed_before, "hold": held}
        if trace_id is not None:
            shown["trace_id"] = trace_id
        out.print_json(json.dumps(shown))
    else:
        # A run placed before was paid by its own card, not necessarily the one typed now.
        print_outcome(outcome, None if placed_before else card)
    if placed_before:
        say_if_another_order(placed, outcome)
    if outcome.status != "COMPLETED":
        raise SystemExit(1)


async def place_or_show(
    placed: PizzaOrder, again: bool, patience: float, address: str | None, as_json: bool
) -> tuple[OrderOutcome, bool, CardHold | None, str | None]:
    """The outcome of the run started now, with its card hold as soon as it is held (the
    order's Update, sent with the start) and its trace id when this command traces (the
    ``OTEL_*`` variables), or of the completed run already there (True)."""
    new_key = no_key_yet()
    client = await client_or_fail(address, runtime=quiet_runtime())
    if new_key and not as_json:
        err.print(
            f"Made a new codec key in {key_file()}: the workers must hold the same key to "
            "run this order (a worker started in this folder will)",
            markup=False,
        )
    number = placed.order_number
    if not as_json:
        card = mask_card_number(placed.credit_card_info.number)
        err.print(f"Placing order {number} (card {card})...")
    notice = waiting_notice(number, patience)
    started_at = time.monotonic()
    try:
        started = await start_with_answer(
            client,
            placed,
            again=again,
            patience=patience,
            on_unanswered=notice,
            started_within=patience,  # no worker polling: Temporal's own wait is longer
        )
        waited = time.monotonic() - started_at
        answer = await answer_within(started.answer, max(0.0, patience - waited))
        hold = answer.hold if answer is not None else None
        if hold is not None and not as_json:
            err.print(held_line(hold), markup=False)
        run = client.get_workflow_handle(started.handle.id, run_id=started.run_id)
        trace_id = await trace_of(run)
        if trace_id is not None and not as_json:
            err.print(f"Trace {trace_id}", markup=False)
        patience_left = max(1.0, patience - (time.monotonic() - started_at))
        try:
            outcome = await before_attention(
                outcome_of(
                    client,
                    started.handle.id,
                    number,
                    run_id=started.run_id,
                    patience=patience_left,
                    on_unanswered=notice,
                ),
                run,
                OrderNeedsAttention(number),
            )
        except OrderNeedsAttention:
            raise
        except OrderStillRunning as running:  # said with the --timeout given, not what was left
            hint = "" if running.unreachable else await why_still_running(started.handle)
            raise OrderStillRunning(number, patience, running.unreachable, hint) from None
        return outcome, False, hold, trace_id
    except OrderAlreadyCompleted as completed:
        if not as_json:
            err.print(f"{completed}; its confirmation follows (--again places it again)")
        shown = await outcome_of(
            client,
            workflow_id_for(number),
            number,
            run_id=completed.run_id,
            patience=patience,
            on_unanswered=notice,
        )
        return shown, True, None, None


async def trace_of(run: WorkflowHandle[Any, Any]) -> str | None:
    """The order's trace id, as the client wrote it in its memo at the start; None when
    this command does not trace (or the server cannot say now: `status` shows it later)."""
    if not tracing.enabled():
        return None
    try:
        trace_id = await (await run.describe()).memo_value(TRACE_MEMO, None)
    except RPCError:
        return None
    return str(trace_id) if trace_id else None


#: How much of a workflow task's failure `order` repeats at its timeout (`status` has all).
WORKFLOW_TASK_FAILURE_CHARS = 400


async def why_still_running(handle: WorkflowHandle[Any, Any]) -> str:
    """Why an order has no outcome yet, when it is not only slow: no worker ever took it
    (none runs, or none for this server), or it waits for an operator; "" otherwise, or
    when that cannot be told."""
    number = order_number_of(handle.id)
    try:
        description = await handle.describe()
        if description.typed_search_attributes.get(ORDER_STATUS) == NEEDS_ATTENTION_STATUS:
            return (
                "it needs attention, a compensation failed for good: see `pizzeria status "
                f"{number}`, then `pizzeria repair {number} --retry` once the cause is fixed"
            )
        taken = False
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failure = event.workflow_task_failed_event_attributes.failure.message
                # Shortened at a word, and said to be: a cut in mid-word reads as the
                # whole message (the codec's names every key this process holds).
                said = textwrap.shorten(failure, WORKFLOW_TASK_FAILURE_CHARS, placeholder=" ...")
                used = "PIZZERIA_CODEC_KEY" if os.environ.get("PIZZERIA_CODEC_KEY") else key_file()
                hint = (
                    f" (the workers must hold the codec key this command used: {used})"
                    if "key" in said.lower()
                    else ""
                )
                return (
                    f"a worker took it but cannot run it: {said}{hint}; see `pizzeria status "
                    f"{number}`"
                )
            taken = taken or event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    except RPCError:
        return ""
    return "" if taken else "no worker has taken it yet: is `pizzeria worker` running?"


def say_if_another_order(typed: PizzaOrder, completed: OrderOutcome) -> None:
    """The order typed now is not placed when its number completed before: say so when it
    differs from the one that completed, rather than let its confirmation pass for it."""
    amount = menu.billed_for(typed.items)
    differs = []
    if completed.amount is not None and completed.amount != amount:
        differs.append(f"{dollars(amount)} where it was {dollars(completed.amount)}")
    if completed.delivery is not None and completed.delivery != typed.is_delivery:
        differs.append("a delivery" if typed.is_delivery else "a pickup")
    if differs:
        err.print(
            f"The order typed now ({', '.join(differs)}) is not the one that completed, and "
            f"was not placed: `--again` places it as a new, billed run, or choose another "
            "--order-number",
            markup=False,
        )


def held_line(hold: CardHold) -> str:
    payment = f", payment {hold.payment_id}" if hold.payment_id else ""
    return (
        f"Card ending {hold.card_last4} {hold.state}: {dollars(hold.amount)}{payment}; "
        "the kitchen prepares the order..."
    )


def waiting_notice(order_number: str, patience: float) -> Unanswered:
    """Say when the server stops answering that we keep waiting (again every tenth try)."""

    def notice(error: RPCError, attempt: int) -> None:
        if attempt == 1 or attempt % 10 == 0:
            err.print(
                f"Temporal is not answering ({error}); still waiting for order "
                f"{order_number} (up to {patience:.0f} s in all)...",
                markup=False,
            )

    return notice
