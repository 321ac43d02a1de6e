"""Listing orders, and following or acting on one: orders, status, cancel, repair; and
how an outcome is printed (placing an order is `pizzeria.cli.place`)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from pizzeria.cli.common import (
    UserError,
    cell,
    checked_text,
    client_or_fail,
    err,
    fail,
    order_column,
    out,
    run,
    run_with_ledger,
    shown,
)
from pizzeria.cli.options import (
    address_option,
    flag_option,
    float_option,
    int_option,
    json_option,
    ledger_option,
    order_number_argument,
    run_option,
)
from pizzeria.cli.refund import refund_lines, refunds_of_run
from pizzeria.client import (
    ANSWER_SECONDS,
    Abandoned,
    OrderOutcome,
    abandon_order,
    cancel_order,
    order_handle,
    recent_orders,
    resolve_by_hand,
    retry_compensations,
)
from pizzeria.history.timeline import order_report
from pizzeria.ledger import Ledger
from pizzeria.models import (
    ORDER_STATUSES,
    STATUS_DELIVERY_FAILURE,
    CancelResult,
    RepairResult,
    dollars,
    mask_card_number,
    short_run,
)
from pizzeria.refunds import staff_gateway


def print_outcome(outcome: OrderOutcome, card: str | None = None) -> None:
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
        if outcome.delivery is not False:  # as the run went, not as a new request asks
            out.print(f"  delivery:      {outcome.confirmation['status']}")
            if outcome.confirmation["status"] == STATUS_DELIVERY_FAILURE:
                out.print(f"  refunded:      {dollars(outcome.amount)} (no driver took it)")
        else:
            out.print("  pickup:        ready at the counter (no delivery)")
        out.print(f"  confirmation:  {outcome.confirmation['confirmation_number']}")
    if outcome.cancel_reason:  # rather than the engine's "CancelledError: Workflow cancelled"
        out.print(f"  cancelled:     {shown(outcome.cancel_reason)}", markup=False)
    elif outcome.error_type or outcome.error:  # a timeout has a message and no type
        said = f"{outcome.error_type}: {outcome.error}" if outcome.error_type else outcome.error
        out.print(f"  error:         {shown(str(said))}", markup=False)
    if outcome.compensations or outcome.status != "COMPLETED":
        ran = " -> ".join(outcome.compensations) or "none"
        out.print(f"  compensations: {ran}")
    if outcome.failed_compensations:
        out.print(f"  failed compensation attempts: {', '.join(outcome.failed_compensations)}")
    if outcome.web_ui:  # unknown for a server elsewhere, unless PIZZERIA_WEB_UI says
        out.print(f"  Web UI:        {outcome.web_ui}")


# -- orders ------------------------------------------------------------------------------


@click.command()
@click.option(
    "--status",
    "order_status",
    type=click.Choice(ORDER_STATUSES, case_sensitive=False),
    help="Only orders whose OrderStatus is this",
)
@int_option("--limit", 1, 1000, default=20, help="How many orders to list, the newest first")
@address_option
@json_option
def orders(order_status: str | None, limit: int, address: str | None, as_json: bool) -> None:
    """Recent orders from Temporal's visibility: status, amount, compensation outcome."""

    async def listed() -> list[dict[str, Any]]:
        client = await client_or_fail(address, create_key=False)  # a reader: makes no key
        return await recent_orders(client, order_status, limit)

    rows = run(listed())
    if as_json:
        out.print_json(json.dumps({"orders": rows}))
        return
    numbers = order_column(row["order_number"] for row in rows)
    # At 80 columns the words wrap (never cut to "OrderSta…"): a status is read whole.
    table = Table(
        numbers,
        "started",
        "status",
        Column("OrderStatus", overflow="fold"),
        "amount",
        Column("compensation", overflow="fold", ratio=1),
    )
    for row in rows:
        table.add_row(
            cell(row["order_number"]),
            row["started"][5:19].replace("T", " "),
            cell(row["status"]),
            cell(row["order_status"] or "-"),
            dollars(row["amount"]),
            cell(row["compensation"] or "-"),
        )
    out.print(table)
    if not rows:
        out.print("No orders found.")


# -- status ------------------------------------------------------------------------------


@click.command()
@order_number_argument
@flag_option("--watch", help="Keep refreshing until the order closes (Ctrl-C stops)")
@run_option(
    "Show this run of the order number (an order placed again has a run per placing) "
    "[default: its latest run]"
)
@address_option
@ledger_option
@json_option
def status(
    order_number: str,
    watch: bool,
    run_id: str | None,
    address: str | None,
    ledger_location: str | None,
    as_json: bool,
) -> None:
    """An order's timeline: each step and compensation with start, duration, attempts,
    outcome; and the refunds staff gave it once it completed (from the ledger)."""

    async def follow() -> None:
        client = await client_or_fail(address, create_key=False)  # a reader: makes no key
        handle = await order_handle(client, order_number, run_id)
        last = ""
        while True:
            report = await order_report(client, handle)
            if report["status"] != "RUNNING":  # refunds come once it completed
                report["refunds"] = await asyncio.to_thread(
                    refunds_of_run, ledger_location, order_number, report["run_id"]
                )
            rendered = json.dumps(report) if as_json else render_report(report)
            if rendered != last:  # with --watch, printed again only when it changed
                if as_json and watch:  # JSON Lines: one object a line, each time
                    print(rendered, flush=True)  # json.dumps: ASCII, one line
                elif as_json:
                    out.print_json(rendered)
                else:
                    # Already rendered, text from the history in it: printed as it is, never
                    # read as markup again (a customer's "[link=...]" would be a link).
                    out.print(rendered, markup=False, highlight=False, emoji=False)
                last = rendered
            if not watch or report["status"] != "RUNNING":
                return
            await asyncio.sleep(1.0)

    try:
        run(follow())
    except KeyboardInterrupt:  # watching stops; the order is Temporal's and goes on
        if not watch:
            raise
        fail(
            f"stopped watching; order {order_number} goes on: look again with "
            f"`pizzeria status {order_number}`",
            130,
        )


def render_report(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, highlight=False, soft_wrap=True, width=140)
    # Everything in a report comes from the order's history: shown escaped, never acted on.
    order_number, stuck = shown(report["order_number"]), report.get("failing_workflow_task")
    # A closed order says why it ended; an open one, what it is doing.
    now = report.get("error") or report["details"]
    if report["status"] == "COMPLETED" and report.get("outcome") == STATUS_DELIVERY_FAILURE:
        now = f"{STATUS_DELIVERY_FAILURE}: no driver took it, its amount was refunded"
    if stuck:
        now = f"STUCK: its workflow task keeps failing ({stuck['attempts']} attempts)"
    now = f" - {now}" if now and now.lower() != report["status"].lower() else ""
    console.print(shown(f"Order {order_number}: {report['status']}{now}"), markup=False)
    if report["summary"]:
        console.print(f"  {shown(report['summary'])}", markup=False)
    if report.get("cancel_reason"):  # the reason given to `cancel` (or the API's DELETE)
        console.print(f"  cancel asked: {shown(report['cancel_reason'])}", markup=False)
    if report.get("trace_id"):
        console.print(f"  trace {report['trace_id']}", markup=False)
    if stuck:
        failing = shown(f"failing since {stuck['since'][:19]}: {stuck['error']}")
        console.print(f"  {failing}", markup=False)
        console.print(
            "  It resumes once a worker can run it (the right code, the right key); or "
            f"`pizzeria repair {order_number} --abandon` ends it and undoes its effects.",
            markup=False,
        )
    if report["needs_attention"]:
        console.print(
            "NEEDS ATTENTION: a compensation failed for good; fix the cause, then "
            f"`pizzeria repair {order_number} --retry` or `--resolve NOTE`",
            markup=False,
        )
    table = Table("started", "kind", "name", "took", "attempts", "outcome", "detail")
    for entry in report["timeline"]:
        took = "" if entry["duration_ms"] is None else f"{entry['duration_ms']:,.0f} ms"
        table.add_row(
            cell(entry["started_at"][11:23]),
            cell(entry["kind"]),
            cell(entry["name"]),
            took,
            str(entry["attempts"]),
            cell(entry["outcome"]),
            cell(entry["error"] or entry["summary"]),
        )
    console.print(table)
    if report.get("repaired_by") == "retry":
        console.print("Compensations retried by an operator", markup=False)
    elif report.get("repaired_by"):
        note = report.get("resolution_note") or ""
        console.print(shown(f"Resolved by hand: {note}".rstrip(": ")), markup=False)
    if report.get("refunds"):
        console.print("Refunds by staff:", markup=False)
        for line in refund_lines(report["refunds"]):
            console.print(line, markup=False)
    return buffer.getvalue().rstrip()


# -- cancel and repair -------------------------------------------------------------------


answer_timeout_option = float_option(
    "--timeout",
    0.1,
    3600,
    name="patience",
    default=ANSWER_SECONDS,
    help="Seconds to wait for the order's answer (a worker runs it) before giving up",
)


@click.command()
@order_number_argument
@click.option("--reason", default="cancelled by the customer", show_default=True, help="Why")
@answer_timeout_option
@address_option
def cancel(order_number: str, reason: str, patience: float, address: str | None) -> None:
    """Cancel an order before it is billed: its effects are undone and it ends Cancelled."""
    checked_text("--reason", reason)

    def waiting() -> None:
        err.print(
            f"> Waiting for order {order_number} to answer (up to {patience:g} s; Ctrl-C "
            "stops waiting, the cancel stays with the order)...",
            markup=False,
        )

    async def cancelled() -> CancelResult:
        client = await client_or_fail(address)
        return await cancel_order(client, order_number, reason, patience, waiting)

    try:
        result = run(cancelled())
    except KeyboardInterrupt:  # the cancel was sent: it stays with the order
        fail(
            f"stopped waiting; the cancel stays with order {order_number} and is carried out "
            f"once a worker takes it (before the bill, the order then ends Cancelled): "
            f"`pizzeria status {order_number}` says",
            130,
        )
    undone = ", ".join(result.compensations) or "nothing to undo"
    accepted = f"Order {order_number}: cancel accepted ({result.reason}); compensations: {undone}"
    out.print(shown(accepted), markup=False)


@click.command()
@order_number_argument
@flag_option("--retry", help="Run the failed compensations again")
@click.option("--resolve", metavar="NOTE", help="Mark them handled by hand, with a note")
@flag_option(
    "--abandon",
    help="End an order that cannot finish (see `pizzeria status`): undo what the ledger "
    "holds for it, then terminate it",
)
@answer_timeout_option
@address_option
@ledger_option
def repair(
    order_number: str,
    retry: bool,
    resolve: str | None,
    abandon: bool,
    patience: float,
    address: str | None,
    ledger_location: str | None,
) -> None:
    """Finish an order whose compensation failed for good ("needs attention"), or abandon
    one that cannot go on (a workflow task failing for good)."""
    if retry + (resolve is not None) + abandon != 1:
        raise UserError("choose one: --retry, --resolve NOTE or --abandon")
    if resolve is not None:
        checked_text("--resolve", resolve)
    if abandon:
        abandon_and_report(order_number, address, ledger_location)
        return

    async def repaired() -> RepairResult:
        client = await client_or_fail(address)
        if resolve is None:
            return await retry_compensations(client, order_number, patience)
        return await resolve_by_hand(client, order_number, resolve, patience)

    result = run(repaired())
    out.print(f"Order {order_number}: {result.action} -> {result.outcome}")
    if result.outcome == "needs attention":
        raise SystemExit(1)


def abandon_and_report(order_number: str, address: str | None, location: str | None) -> None:
    async def abandoned(book: Ledger) -> Abandoned:
        gateway = staff_gateway()  # the workers' provider: the card hold is let go too
        try:
            client = await client_or_fail(address)
            return await abandon_order(
                client,
                book,
                order_number,
                "abandoned by an operator (pizzeria repair --abandon)",
                gateway=gateway,
            )
        finally:
            await gateway.close()

    result = run_with_ledger(location, abandoned)
    ended = "terminated" if result.status == "RUNNING" else f"already {result.status}"
    portions = sum(result.put_back.values())
    # Never billed (a billed order is refused): what went back is its card hold, let go.
    hold = (
        f"released its card hold of {dollars(result.refunded)}"
        if result.refunded
        else "no card hold to release"
    )
    out.print(
        f"Order {order_number}: abandoned (run {short_run(result.run_id)} {ended}); "
        f"put back {portions} portions of stock, {hold}; any late step of that run is refused"
    )
