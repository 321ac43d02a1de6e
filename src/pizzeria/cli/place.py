"""Placing an order: the ``order`` command, which waits for the outcome and prints it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click
from temporalio.client import Client

from pizzeria.cli.common import client_or_fail, err, fail, out, run
from pizzeria.cli.options import address_option, flag_option, float_option, int_option, json_option
from pizzeria.cli.order_input import build_order, card_typed
from pizzeria.cli.order_said import (
    held_line,
    say_if_another_order,
    trace_of,
    waiting_notice,
    why_still_running,
)
from pizzeria.cli.orders import print_outcome
from pizzeria.client import (
    OrderAlreadyCompleted,
    OrderAlreadyRunning,
    OrderOutcome,
    before_attention,
    outcome_of,
)
from pizzeria.client.early_answers import answer_within
from pizzeria.client.placing import start_with_answer
from pizzeria.models import (
    OrderSettings,
    PizzaOrder,
    mask_card_number,
    workflow_id_for,
)
from pizzeria.order_hold import CardHold
from pizzeria.samples import BAD_CARD, GOOD_CARD
from pizzeria.temporal.codec import key_file, no_key_yet
from pizzeria.temporal.devserver import quiet_runtime
from pizzeria.temporal.waiting import OrderNeedsAttention, OrderStillRunning, Unanswered

#: How long `order` waits for an outcome by default, and its exit code when it gives up.
DEFAULT_PATIENCE = 300.0
STILL_RUNNING = 3
#: Ctrl-C (or SIGTERM): the exit code of a command a signal interrupted.
INTERRUPTED = 130


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
    card = card_typed(card)
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
    show_result(placed, outcome, placed_before, hold, trace_id, as_json)
    if outcome.status != "COMPLETED":
        raise SystemExit(1)


def show_result(
    placed: PizzaOrder,
    outcome: OrderOutcome,
    placed_before: bool,
    hold: CardHold | None,
    trace_id: str | None,
    as_json: bool,
) -> None:
    """The outcome, as text or as one JSON object with the hold (and the trace id)."""
    if as_json:
        held = asdict(hold) if hold is not None else None
        shown = {**outcome.to_json(), "already_completed": placed_before, "hold": held}
        if trace_id is not None:
            shown["trace_id"] = trace_id
        out.print_json(json.dumps(shown))
    else:
        # A run placed before was paid by its own card, not necessarily the one typed now.
        print_outcome(outcome, None if placed_before else placed.credit_card_info.number)
    if placed_before:
        say_if_another_order(placed, outcome)


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
    try:
        return await place_and_follow(client, placed, again, patience, notice, as_json)
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


async def place_and_follow(
    client: Client,
    placed: PizzaOrder,
    again: bool,
    patience: float,
    notice: Unanswered,
    as_json: bool,
) -> tuple[OrderOutcome, bool, CardHold | None, str | None]:
    """Start the order, say its hold (and trace) as soon as they are known, and wait for
    its outcome within ``patience`` in all."""
    number = placed.order_number
    started_at = time.monotonic()
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
    following = outcome_of(
        client,
        started.handle.id,
        number,
        run_id=started.run_id,
        patience=patience_left,
        on_unanswered=notice,
    )
    try:
        outcome = await before_attention(following, run, OrderNeedsAttention(number))
    except OrderNeedsAttention:
        raise  # said as it is (it is also an OrderStillRunning)
    except OrderStillRunning as running:  # said with the --timeout given, not what was left
        hint = "" if running.unreachable else await why_still_running(started.handle)
        raise OrderStillRunning(number, patience, running.unreachable, hint) from None
    return outcome, False, hold, trace_id
