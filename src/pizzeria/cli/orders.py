"""Placing an order, listing orders, and following or acting on one: order, orders,
status, cancel, repair."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from temporalio.service import RPCError

from pizzeria import menu
from pizzeria.cli.common import (
    UserError,
    address_option,
    client_or_fail,
    err,
    fail,
    json_option,
    ledger_at,
    ledger_option,
    out,
    run,
)
from pizzeria.client import (
    Abandoned,
    OrderAlreadyCompleted,
    OrderOutcome,
    abandon_order,
    cancel_order,
    order_handle,
    outcome_of,
    place_order,
    recent_orders,
    resolve_by_hand,
    retry_compensations,
)
from pizzeria.history.timeline import order_report
from pizzeria.models import (
    ORDER_STATUSES,
    CancelResult,
    OrderSettings,
    Pizza,
    PizzaOrder,
    RepairResult,
    dollars,
    mask_card_number,
    workflow_id_for,
)
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.devserver import quiet_runtime
from pizzeria.temporal.waiting import OrderStillRunning, Unanswered

#: The order's fields that `order` fills from a flag: menu.py's refusals name the field,
#: the user is shown the flag they typed.
FLAG_OF_FIELD = {"order_number": "--order-number", "credit_card_info.number": "--card"}
#: How long `order` waits for an outcome by default, and its exit code when it gives up.
DEFAULT_PATIENCE = 300.0
STILL_RUNNING = 3


# -- order -------------------------------------------------------------------------------


def parse_item(text: str) -> Pizza:
    """``DESCRIPTION`` or ``DESCRIPTION=CENTS``; the price defaults by size."""
    description, sep, price_text = text.rpartition("=") if "=" in text else (text, "", "")
    description = description.strip()
    if not description:
        raise UserError("--item needs a description such as 'Large, with mushrooms'")
    if sep:
        if not (price_text.strip().isascii() and price_text.strip().isdigit()):
            raise UserError(f"--item price must be whole cents, got {price_text.strip()!r}")
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
        menu.validate_order(placed)
    except menu.OrderRejected as rejected:
        field, _, rest = str(rejected).partition(" ")
        flag = FLAG_OF_FIELD.get(field)
        raise UserError(f"{flag} {rest}" if flag else str(rejected)) from None
    return placed


def print_outcome(outcome: OrderOutcome, card: str | None = None, *, delivery: bool = True) -> None:
    color = {"COMPLETED": "green", "FAILED": "red", "CANCELLED": "yellow"}.get(outcome.status, "")
    out.print(
        f"Order {outcome.order_number}: [{color}]{outcome.status}[/{color}]"
        if color
        else f"Order {outcome.order_number}: {outcome.status}"
    )
    if card:
        out.print(f"  card:          {mask_card_number(card)}")
    if outcome.confirmation:
        out.print(f"  amount:        {dollars(outcome.amount)}")
        if delivery:
            out.print(f"  delivery:      {outcome.confirmation['status']}")
        else:
            out.print("  pickup:        ready at the counter (no delivery)")
        out.print(f"  confirmation:  {outcome.confirmation['confirmation_number']}")
    if outcome.error_type:
        out.print(f"  error:         {outcome.error_type}: {outcome.error}", markup=False)
    if outcome.compensations or outcome.status != "COMPLETED":
        ran = " -> ".join(outcome.compensations) or "none"
        out.print(f"  compensations: {ran}")
    if outcome.failed_compensations:
        out.print(f"  failed compensation attempts: {', '.join(outcome.failed_compensations)}")
    out.print(f"  Web UI:        {outcome.web_ui}")


@click.command()
@click.option(
    "--card",
    default=GOOD_CARD,
    show_default=True,
    help=f"Card number (the exercise's bad card: {BAD_CARD})",
)
@click.option("--pickup", is_flag=True, help="Pick up instead of delivery (no driver)")
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
    "--prep-seconds", type=float, help="The short wait after the distance check [default: 3]"
)
@click.option(
    "--compensation-attempts",
    type=click.IntRange(min=1),
    help="Attempts per compensation before the order asks for repair [default: 10]",
)
@click.option(
    "--step-attempts",
    type=click.IntRange(min=1),
    help="Attempts per step before the order gives up and compensates [default: 10]",
)
@click.option(
    "--again",
    is_flag=True,
    help="Start a new run even if this order number already completed (charges again)",
)
@click.option(
    "--timeout",
    "patience",
    type=click.FloatRange(min=1),
    default=DEFAULT_PATIENCE,
    show_default=True,
    help="Seconds to wait for the outcome, through server restarts; then the order is "
    f"still running (exit {STILL_RUNNING})",
)
@click.option(
    "--fast-path",
    is_flag=True,
    help="Run the ledger steps and their compensations as local activities (faster; "
    "they show as markers in the Web UI, see the README)",
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
    cancelled, 2 bad input, 3 still running after --timeout.
    """
    defaults = OrderSettings()
    settings = OrderSettings(
        prep_seconds=defaults.prep_seconds if prep_seconds is None else prep_seconds,
        compensation_attempts=compensation_attempts or defaults.compensation_attempts,
        step_attempts=step_attempts or defaults.step_attempts,
        fast_path=fast_path,
    )
    placed = build_order(order_number, card, pickup, items, settings)
    try:
        outcome, placed_before = run(place_or_show(placed, again, patience, address, as_json))
    except OrderStillRunning as running:
        if as_json:
            still = {"order_number": order_number, "status": "RUNNING", "message": str(running)}
            out.print_json(json.dumps(still))
        fail(str(running), STILL_RUNNING)
    if as_json:
        out.print_json(json.dumps({**outcome.to_json(), "already_completed": placed_before}))
    else:
        print_outcome(outcome, card, delivery=not pickup)
    if outcome.status != "COMPLETED":
        raise SystemExit(1)


async def place_or_show(
    placed: PizzaOrder, again: bool, patience: float, address: str | None, as_json: bool
) -> tuple[OrderOutcome, bool]:
    """The outcome of the run started now, or of the completed run already there (True)."""
    client = await client_or_fail(address, runtime=quiet_runtime())
    number = placed.order_number
    if not as_json:
        card = mask_card_number(placed.credit_card_info.number)
        err.print(f"Placing order {number} (card {card})...")
    notice = waiting_notice(number, patience)
    try:
        outcome = await place_order(
            client, placed, again=again, patience=patience, on_unanswered=notice
        )
        return outcome, False
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
        return shown, True


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


# -- orders ------------------------------------------------------------------------------


@click.command()
@click.option(
    "--status",
    "order_status",
    type=click.Choice(ORDER_STATUSES, case_sensitive=False),
    help="Only orders whose OrderStatus is this",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@address_option
@json_option
def orders(order_status: str | None, limit: int, address: str | None, as_json: bool) -> None:
    """Recent orders from Temporal's visibility: status, amount, compensation outcome."""

    async def listed() -> list[dict[str, Any]]:
        return await recent_orders(await client_or_fail(address), order_status, limit)

    rows = run(listed())
    if as_json:
        out.print_json(json.dumps({"orders": rows}))
        return
    table = Table("order", "started", "status", "OrderStatus", "amount", "compensation")
    for row in rows:
        table.add_row(
            row["order_number"],
            row["started"][5:19].replace("T", " "),
            row["status"],
            row["order_status"] or "-",
            dollars(row["amount"]),
            row["compensation"] or "-",
        )
    out.print(table)
    if not rows:
        out.print("No orders found.")


# -- status ------------------------------------------------------------------------------


@click.command()
@click.argument("order_number")
@click.option("--watch", is_flag=True, help="Keep refreshing until the order closes (Ctrl-C stops)")
@address_option
@json_option
def status(order_number: str, watch: bool, address: str | None, as_json: bool) -> None:
    """An order's timeline: each step and compensation with start, duration, attempts, outcome."""

    async def follow() -> None:
        client = await client_or_fail(address)
        handle = await order_handle(client, order_number)
        last = ""
        while True:
            report = await order_report(client, handle)
            if as_json:
                out.print_json(json.dumps(report))
            else:
                rendered = render_report(report)
                if rendered != last:
                    out.print(rendered)
                    last = rendered
            if not watch or report["status"] != "RUNNING":
                return
            await asyncio.sleep(1.0)

    run(follow())


def render_report(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, highlight=False, soft_wrap=True, width=140)
    order_number, stuck = report["order_number"], report.get("failing_workflow_task")
    # A closed order says why it ended; an open one, what it is doing.
    now = report.get("error") or report["details"]
    if stuck:
        now = f"STUCK: its workflow task keeps failing ({stuck['attempts']} attempts)"
    now = f" - {now}" if now and now.lower() != report["status"].lower() else ""
    console.print(f"Order {order_number}: {report['status']}{now}", markup=False)
    if report["summary"]:
        console.print(f"  {report['summary']}", markup=False)
    if report.get("trace_id"):
        console.print(f"  trace {report['trace_id']}", markup=False)
    if stuck:
        console.print(f"  failing since {stuck['since'][:19]}: {stuck['error']}", markup=False)
        console.print(
            "  It resumes once a worker can run it (the right code, the right key); or "
            f"`pizzeria repair {order_number} --abandon` ends it and undoes its effects.",
            markup=False,
        )
    if report["needs_attention"]:
        console.print(
            "NEEDS ATTENTION: a compensation failed for good; fix the cause, then "
            f"`pizzeria repair {report['order_number']} --retry` or `--resolve NOTE`",
            markup=False,
        )
    table = Table("started", "kind", "name", "took", "attempts", "outcome", "detail")
    for entry in report["timeline"]:
        took = "" if entry["duration_ms"] is None else f"{entry['duration_ms']:,.0f} ms"
        table.add_row(
            entry["started_at"][11:23],
            entry["kind"],
            entry["name"],
            took,
            str(entry["attempts"]),
            entry["outcome"],
            entry["error"] or entry["summary"],
        )
    console.print(table)
    if report.get("repaired_by"):
        note = report.get("resolution_note") or ""
        console.print(f"Repaired by hand: {report['repaired_by']} {note}", markup=False)
    return buffer.getvalue().rstrip()


# -- cancel and repair -------------------------------------------------------------------


@click.command()
@click.argument("order_number")
@click.option("--reason", default="cancelled by the customer", show_default=True, help="Why")
@address_option
def cancel(order_number: str, reason: str, address: str | None) -> None:
    """Cancel an order before it is billed: its effects are undone and it ends Cancelled."""

    async def cancelled() -> CancelResult:
        return await cancel_order(await client_or_fail(address), order_number, reason)

    result = run(cancelled())
    undone = ", ".join(result.compensations) or "nothing to undo"
    out.print(f"Order {order_number}: cancel accepted ({result.reason}); compensations: {undone}")


@click.command()
@click.argument("order_number")
@click.option("--retry", is_flag=True, help="Run the failed compensations again")
@click.option("--resolve", metavar="NOTE", help="Mark them handled by hand, with a note")
@click.option(
    "--abandon",
    is_flag=True,
    help="End an order that cannot finish (see `pizzeria status`): undo what the ledger "
    "holds for it, then terminate it",
)
@address_option
@ledger_option
def repair(
    order_number: str,
    retry: bool,
    resolve: str | None,
    abandon: bool,
    address: str | None,
    ledger_location: str | None,
) -> None:
    """Finish an order whose compensation failed for good ("needs attention"), or abandon
    one that cannot go on (a workflow task failing for good)."""
    if retry + (resolve is not None) + abandon != 1:
        raise UserError("choose one: --retry, --resolve NOTE or --abandon")
    if abandon:
        abandon_and_report(order_number, address, ledger_location)
        return

    async def repaired() -> RepairResult:
        client = await client_or_fail(address)
        if resolve is None:
            return await retry_compensations(client, order_number)
        return await resolve_by_hand(client, order_number, resolve)

    result = run(repaired())
    out.print(f"Order {order_number}: {result.action} -> {result.outcome}")
    if result.outcome == "needs attention":
        raise SystemExit(1)


def abandon_and_report(order_number: str, address: str | None, location: str | None) -> None:
    book = ledger_at(location)

    async def abandoned() -> Abandoned:
        client = await client_or_fail(address)
        return await abandon_order(
            client, book, order_number, "abandoned by an operator (pizzeria repair --abandon)"
        )

    try:
        result = run(abandoned())
    finally:
        book.close()
    ended = "terminated" if result.status == "RUNNING" else f"already {result.status}"
    portions = sum(result.put_back.values())
    out.print(
        f"Order {order_number}: abandoned (run {result.run_id[:8]} {ended}); "
        f"put back {portions} portions of stock, refunded {dollars(result.refunded)}; "
        "any late step of that run is refused"
    )
