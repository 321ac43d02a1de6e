"""``pizzeria``: run the server and the worker, place and inspect orders, run the demo.

Every error a user can cause ends in one line on stderr and a non-zero exit (2 for bad
input, 1 for everything else), never a traceback. Card numbers are shown masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from pizzeria import __version__, config, menu
from pizzeria.activities import PizzaOrderActivities
from pizzeria.client import (
    STATUS_NAMES,
    OrderAlreadyRunning,
    OrderOutcome,
    order_handle,
    place_order,
)
from pizzeria.codec import CodecKeyError, EncryptionCodec, load_keys
from pizzeria.codec_server import DEFAULT_ORIGINS, CodecServer, serve_for_web_ui
from pizzeria.codec_server import DEFAULT_PORT as DEFAULT_CODEC_PORT
from pizzeria.demo import run_demo
from pizzeria.devserver import GRPC_PORT, UI_PORT, DevServer, DevServerError
from pizzeria.faults import FaultPlan, FaultSyntaxError, parse_faults, write_faults
from pizzeria.ledger import Ledger
from pizzeria.metrics import prometheus_runtime
from pizzeria.models import (
    ORDER_STATUS,
    ORDER_STATUSES,
    TASK_QUEUE,
    WORKFLOW_ID_PREFIX,
    WORKFLOW_TYPE,
    CancelResult,
    OrderConfirmation,
    OrderSettings,
    Pizza,
    PizzaOrder,
    RepairResult,
    mask_card_number,
    workflow_id_for,
)
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.timeline import order_timeline
from pizzeria.worker import build_worker, connect
from pizzeria.workflows import PizzaOrderWorkflow


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pizzeria")
def app() -> None:
    """pizzeria: the pizza-order Saga of the exercise on Temporal, with a real ledger."""


@app.group(name="faults")
def faults_app() -> None:
    """Make steps or compensations fail on purpose (read by workers at each attempt)."""


out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

PRICES_BY_SIZE = {"small": 1200, "medium": 1300, "large": 1500}


class UserError(Exception):
    """A mistake in what the user asked for: one line, exit code 2."""


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise SystemExit(code)


def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


async def client_or_fail(
    address: str | None = None, runtime: Runtime | None = None, encrypt: bool = True
) -> Client:
    try:
        return await connect(address, runtime=runtime, encrypt=encrypt)
    except RuntimeError as error:
        target = address or os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
        reason = "connection refused" if "refused" in str(error).lower() else str(error)[:120]
        raise ConnectionError(
            f"cannot reach Temporal at {target} ({reason}); start it with `pizzeria server`"
        ) from None


def ledger_or_fail(path: Path | None) -> Ledger:
    return Ledger(path or config.ledger_path())


async def running_order(
    client: Client, order_number: str
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    await order_handle(client, order_number)
    handle = client.get_workflow_handle_for(
        PizzaOrderWorkflow.order_pizza, workflow_id_for(order_number)
    )
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = description.status.name if description.status else "closed"
        raise UserError(f"refused: order {order_number} is already closed ({state})")
    return handle


def update_refusal(error: WorkflowUpdateFailedError) -> str:
    cause = error.cause
    return str(getattr(cause, "message", None) or cause or error)


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so `finally` blocks stop what this command started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def dollars(cents: int | None) -> str:
    return "-" if cents is None else f"${cents / 100:,.2f}"


# -- server and worker ------------------------------------------------------------------


@app.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Folder of the history file [default: .pizzeria]",
)
@click.option("--port", default=GRPC_PORT, show_default=True, help="gRPC port on 127.0.0.1")
@click.option("--ui-port", default=UI_PORT, show_default=True, help="Web UI port on 127.0.0.1")
@click.option("--in-memory", is_flag=True, help="Keep no history file (lost on exit)")
@click.option(
    "--codec-port",
    default=DEFAULT_CODEC_PORT,
    show_default=True,
    help="Also serve the codec endpoint here, so the Web UI shows decrypted payloads",
)
@click.option("--no-codec", is_flag=True, help="No codec endpoint: the Web UI shows ciphertext")
def server(
    data_dir: Path | None,
    port: int,
    ui_port: int,
    in_memory: bool,
    codec_port: int,
    no_codec: bool,
) -> None:
    """Run the Temporal dev server (with its Web UI) until Ctrl-C."""
    stop_on_sigterm()
    history = None if in_memory else (data_dir or config.data_dir()) / "temporal.db"
    codec_server = None
    if not no_codec:
        codec_server = start_codec_server(codec_port, ui_port)
    dev = DevServer(
        history,
        port=port,
        ui_port=ui_port,
        codec_endpoint=codec_server.url if codec_server else None,
    )
    try:
        dev.start()
    except DevServerError as error:
        if codec_server:
            codec_server.stop()
        fail(str(error))
    out.print(f"Temporal dev server on 127.0.0.1:{port}, Web UI http://localhost:{ui_port}")
    out.print(f"History file: {history}" if history else "History: in memory")
    if codec_server:
        out.print(f"Codec endpoint {codec_server.url}: the Web UI shows decrypted payloads")
    out.print("Press Ctrl-C to stop.")
    try:
        assert dev.process is not None
        dev.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
        if codec_server:
            codec_server.stop()


def start_codec_server(port: int, ui_port: int) -> CodecServer:
    try:
        return serve_for_web_ui(ui_port, port)
    except OSError as error:
        raise UserError(
            f"cannot serve the codec endpoint on 127.0.0.1:{port}: {error.strerror}"
        ) from None


@app.command(name="codec-server")
@click.option("--port", default=DEFAULT_CODEC_PORT, show_default=True, help="Port on 127.0.0.1")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    help="Browser origin allowed to call it [default: the local Web UI, port 8233]",
)
def codec_server_command(port: int, origins: tuple[str, ...]) -> None:
    """Serve the codec endpoint (localhost only) so the Web UI can decrypt payloads."""
    stop_on_sigterm()
    allowed = origins or DEFAULT_ORIGINS
    try:
        codec_server = CodecServer(EncryptionCodec(load_keys()), port=port, origins=allowed)
    except OSError as error:
        raise UserError(f"cannot serve on 127.0.0.1:{port}: {error.strerror}") from None
    out.print(f"Codec endpoint on {codec_server.url} for {', '.join(allowed)}. Ctrl-C stops.")
    out.print(f"Start the dev server with --ui-codec-endpoint {codec_server.url}")
    try:
        codec_server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        codec_server.httpd.server_close()


ADDRESS = click.option(
    "--address", help="Temporal address [default: SDK env config, else localhost:7233]"
)
LEDGER = click.option(
    "--ledger",
    "ledger_file",
    type=click.Path(path_type=Path),
    help="Ledger file [default: .pizzeria/ledger.db]",
)
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object")


@app.command()
@ADDRESS
@LEDGER
@click.option("--task-queue", default=TASK_QUEUE, show_default=True, help="Task queue to poll")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics (the SDK's and ours) on 127.0.0.1:PORT/metrics",
)
@click.option(
    "--plain-payloads",
    is_flag=True,
    help="Answer in plain JSON, for clients without the codec (the exercise's, `temporal`)",
)
def worker(
    address: str | None,
    ledger_file: Path | None,
    task_queue: str,
    metrics_port: int | None,
    plain_payloads: bool,
) -> None:
    """Run the worker: the order workflow and its activities, against the ledger."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ledger = ledger_or_fail(ledger_file)
    activities = PizzaOrderActivities(
        ledger,
        faults=FaultPlan(config.faults_file()),
        driver=config.DriverSimulation.from_env(),
    )

    async def serve() -> None:
        runtime = prometheus_runtime(metrics_port) if metrics_port else None
        client = await client_or_fail(address, runtime, encrypt=not plain_payloads)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with build_worker(client, activities, task_queue=task_queue):
            out.print(
                f"Worker polling task queue {task_queue!r}, ledger {ledger.path}. Ctrl-C stops."
            )
            if metrics_port:
                out.print(f"Metrics on http://127.0.0.1:{metrics_port}/metrics")
            await stop.wait()
        out.print("Worker stopped.")

    run(serve())


# -- orders -----------------------------------------------------------------------------


def parse_item(text: str) -> Pizza:
    """``DESCRIPTION`` or ``DESCRIPTION=CENTS``; the price defaults by size."""
    description, sep, price_text = text.rpartition("=") if "=" in text else (text, "", "")
    description = description.strip()
    if not description:
        raise UserError("--item needs a description such as 'Large, with mushrooms'")
    if sep:
        if not (price_text.strip().isascii() and price_text.strip().isdigit()):
            raise UserError(f"--item price must be whole cents, got {price_text.strip()!r}")
        price = int(price_text)
    else:
        size = description.split(",")[0].split()[0].lower()
        if size not in PRICES_BY_SIZE:
            raise UserError(f"--item {description!r}: start with Small, Medium or Large")
        price = PRICES_BY_SIZE[size]
    return Pizza(description=description, price=price)


def check_card(number: str) -> str:
    if not re.fullmatch(r"\d{12,19}", number):
        raise UserError("--card must be 12 to 19 digits, with no spaces or letters")
    return number


def build_order(
    order_number: str,
    card: str,
    pickup: bool,
    items: list[str] | None,
    prep_seconds: float | None,
) -> PizzaOrder:
    if items is not None and len(items) == 0:
        raise UserError("an order needs at least one --item")
    if prep_seconds is not None and prep_seconds < 0:
        raise UserError("--prep-seconds cannot be negative")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", order_number):
        raise UserError("--order-number may hold only letters, digits, '.', '_' and '-'")
    pizzas = [parse_item(item) for item in items] if items else None
    defaults = OrderSettings()
    placed = sample_order(
        order_number,
        card=check_card(card),
        is_delivery=not pickup,
        items=pizzas,
        prep_seconds=defaults.prep_seconds if prep_seconds is None else prep_seconds,
    )
    try:  # the workflow checks the same, but a user deserves the answer before connecting
        menu.validate_order(placed)
    except menu.OrderRejected as rejected:
        raise UserError(str(rejected)) from None
    return placed


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
        out.print(f"  delivery:      {outcome.confirmation['status']}")
        out.print(f"  confirmation:  {outcome.confirmation['confirmation_number']}")
    if outcome.error_type:
        out.print(f"  error:         {outcome.error_type}: {outcome.error}", markup=False)
    if outcome.compensations or outcome.status != "COMPLETED":
        ran = " -> ".join(outcome.compensations) or "none"
        out.print(f"  compensations: {ran}")
    if outcome.failed_compensations:
        out.print(f"  failed compensation attempts: {', '.join(outcome.failed_compensations)}")
    out.print(f"  Web UI:        {outcome.web_ui}")


def outcome_json(outcome: OrderOutcome) -> dict[str, Any]:
    return {
        "order_number": outcome.order_number,
        "workflow_id": outcome.workflow_id,
        "run_id": outcome.run_id,
        "status": outcome.status,
        "amount": outcome.amount,
        "error_type": outcome.error_type,
        "error": outcome.error,
        "compensations": outcome.compensations,
        "web_ui": outcome.web_ui,
    }


@app.command()
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
@ADDRESS
@AS_JSON
def order(
    card: str,
    pickup: bool,
    items: tuple[str, ...],
    order_number: str,
    prep_seconds: float | None,
    compensation_attempts: int | None,
    step_attempts: int | None,
    address: str | None,
    as_json: bool,
) -> None:
    """Place an order (the exercise's three pizzas by default) and wait for its outcome."""
    placed = build_order(order_number, card, pickup, list(items) or None, prep_seconds)
    assert placed.settings is not None
    if compensation_attempts is not None:
        placed.settings.compensation_attempts = compensation_attempts
    if step_attempts is not None:
        placed.settings.step_attempts = step_attempts

    async def go() -> OrderOutcome:
        client = await client_or_fail(address)
        if not as_json:
            err.print(f"Placing order {order_number} (card {mask_card_number(card)})...")
        return await place_order(client, placed)

    outcome = run(go())
    if as_json:
        out.print_json(json.dumps(outcome_json(outcome)))
    else:
        print_outcome(outcome, card)
    if outcome.status != "COMPLETED":
        raise SystemExit(1)


@app.command()
@LEDGER
@AS_JSON
def ledger(ledger_file: Path | None, as_json: bool) -> None:
    """Stock per ingredient, and per order the amounts charged, refunded and billed."""
    book = ledger_or_fail(ledger_file)
    snapshot = ledger_snapshot(book)
    book.close()
    if as_json:
        out.print_json(json.dumps(snapshot))
        return
    stock = Table("ingredient", "initial", "in stock", title="Stock")
    for name, row in snapshot["stock"].items():
        stock.add_row(name, str(row["initial"]), str(row["quantity"]))
    out.print(stock)
    orders = Table("order", "run", "charged", "refunded", "billed", "stock held", title="Orders")
    for row in snapshot["orders"]:
        held = sum(row["stock_held"].values())
        orders.add_row(
            row["order_number"],
            row["run_id"][:8],
            dollars(row["charged"]),
            dollars(row["refunded"]),
            dollars(row["billed"]),
            str(held),
        )
    out.print(orders)


def ledger_snapshot(book: Ledger) -> dict[str, Any]:
    return {
        "stock": book.stock(),
        "orders": [
            {
                "order_number": o.order_number,
                "workflow_id": o.order_ref.rsplit("/", 1)[0],
                "run_id": o.order_ref.rsplit("/", 1)[-1],
                "charged": o.charged,
                "refunded": o.refunded,
                "billed": o.billed,
                "stock_held": o.stock_held,
            }
            for o in book.orders()
        ],
    }


# -- operating on one order -------------------------------------------------------------


@app.command()
@click.option(
    "--status",
    "order_status",
    type=click.Choice(ORDER_STATUSES, case_sensitive=False),
    help="Only orders whose OrderStatus is this",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@ADDRESS
@AS_JSON
def orders(order_status: str | None, limit: int, address: str | None, as_json: bool) -> None:
    """Recent orders from Temporal's visibility: status, amount, compensation outcome."""

    async def go() -> list[dict[str, Any]]:
        client = await client_or_fail(address)
        query = f"WorkflowType = '{WORKFLOW_TYPE}'"
        if order_status:
            query += f" AND {ORDER_STATUS.name} = '{order_status.upper()}'"
        found: list[dict[str, Any]] = []
        async for execution in client.list_workflows(query, limit=limit):
            memo = await execution.memo()
            found.append(
                {
                    "workflow_id": execution.id,
                    "run_id": execution.run_id,
                    "order_number": execution.id.removeprefix(WORKFLOW_ID_PREFIX),
                    "started": execution.start_time.isoformat(),
                    "status": STATUS_NAMES.get(execution.status, "UNKNOWN")
                    if execution.status
                    else "UNKNOWN",
                    "order_status": execution.typed_search_attributes.get(ORDER_STATUS),
                    "amount": memo.get("amount"),
                    "compensation": memo.get("compensation"),
                }
            )
        return found

    rows = run(go())
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


@app.command()
@click.argument("order_number")
@click.option("--watch", is_flag=True, help="Keep refreshing until the order closes (Ctrl-C stops)")
@ADDRESS
@AS_JSON
def status(order_number: str, watch: bool, address: str | None, as_json: bool) -> None:
    """An order's timeline: each step and compensation with start, duration, attempts, outcome."""

    async def go() -> None:
        client = await client_or_fail(address)
        handle = await order_handle(client, order_number)
        last = ""
        while True:
            report = await order_report(client, handle, order_number)
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

    run(go())


async def order_report(
    client: Client, handle: WorkflowHandle[Any, Any], order_number: str
) -> dict[str, Any]:
    description = await handle.describe()
    run_handle = client.get_workflow_handle(handle.id, run_id=description.run_id)
    entries = await order_timeline(client, run_handle)
    pending = {
        activity.activity_type.name: activity
        for activity in description.raw_description.pending_activities
    }
    for entry in entries:
        if entry.outcome == "running" and entry.name in pending:
            activity = pending[entry.name]
            entry.attempts = activity.attempt
            if activity.HasField("last_failure"):
                entry.error = f"last attempt: {activity.last_failure.message}"
    state: dict[str, Any] = {}
    # The query needs a worker; an order without one still has its history.
    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        state = await run_handle.query(
            PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=3)
        )
    status_name = (
        STATUS_NAMES.get(description.status, "UNKNOWN") if description.status else "UNKNOWN"
    )
    return {
        "order_number": order_number,
        "workflow_id": handle.id,
        "run_id": description.run_id,
        "status": status_name,
        "summary": await description.static_summary(),
        "details": state.get("details", ""),
        "needs_attention": bool(state.get("needs_attention")),
        "timeline": [entry.to_json() for entry in entries],
        **{key: value for key, value in state.items() if key not in ("details", "needs_attention")},
    }


def render_report(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, highlight=False, soft_wrap=True, width=140)
    now = f" - {report['details']}" if report["details"] else ""
    console.print(f"Order {report['order_number']}: {report['status']}{now}", markup=False)
    if report["summary"]:
        console.print(f"  {report['summary']}", markup=False)
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


@app.command()
@click.argument("order_number")
@click.option("--reason", default="cancelled by the customer", show_default=True, help="Why")
@ADDRESS
def cancel(order_number: str, reason: str, address: str | None) -> None:
    """Cancel an order before it is billed: its effects are undone and it ends Cancelled."""

    async def go() -> CancelResult:
        client = await client_or_fail(address)
        handle = await running_order(client, order_number)
        try:
            result = await handle.execute_update(PizzaOrderWorkflow.cancel_order, reason)
        except WorkflowUpdateFailedError as error:
            raise UserError(f"refused: {update_refusal(error)}") from None
        if not result.accepted:
            raise UserError(f"refused: {result.reason}")
        # The order is already undone; the request makes it end Cancelled (not Failed).
        await handle.cancel()
        return result

    result = run(go())
    undone = ", ".join(result.compensations) or "nothing to undo"
    out.print(f"Order {order_number}: cancel accepted ({result.reason}); compensations: {undone}")


@app.command()
@click.argument("order_number")
@click.option("--retry", is_flag=True, help="Run the failed compensations again")
@click.option("--resolve", metavar="NOTE", help="Mark them handled by hand, with a note")
@ADDRESS
def repair(order_number: str, retry: bool, resolve: str | None, address: str | None) -> None:
    """Finish an order whose compensation failed for good ("needs attention")."""
    if retry == (resolve is not None):
        raise UserError("choose one: --retry or --resolve NOTE")
    note = resolve or ""

    async def go() -> RepairResult:
        client = await client_or_fail(address)
        handle = await running_order(client, order_number)
        try:
            if retry:
                return await handle.execute_update(PizzaOrderWorkflow.retry_compensations)
            return await handle.execute_update(PizzaOrderWorkflow.resolve_manually, note)
        except WorkflowUpdateFailedError as error:
            raise UserError(f"refused: {update_refusal(error)}") from None

    result = run(go())
    out.print(f"Order {order_number}: {result.action} -> {result.outcome}")
    if result.outcome == "needs attention":
        raise SystemExit(1)


# -- faults -----------------------------------------------------------------------------


@faults_app.command("set")
@click.argument("spec")
def faults_set(spec: str) -> None:
    """Turn faults on: SPEC is STEP=MODE[:N][@RATE], several separated by commas.

    MODE is fail, timeout, refuse, decline, out_of_stock, lost or late (see the README).
    """
    try:
        new = parse_faults(spec)
    except FaultSyntaxError as error:
        raise UserError(str(error)) from None
    plan = FaultPlan(config.faults_file(), env_value="")
    merged = {**plan.current(), **new}
    write_faults(config.faults_file(), merged)
    out.print("Faults: " + ", ".join(str(f) for f in merged.values()))


@faults_app.command("clear")
def faults_clear() -> None:
    """Turn every fault off."""
    write_faults(config.faults_file(), {})
    out.print("Faults cleared.")


@faults_app.command("show")
def faults_show() -> None:
    """List the faults in force (file and PIZZERIA_FAULTS)."""
    try:
        current = FaultPlan(config.faults_file()).current()
    except FaultSyntaxError as error:
        raise UserError(str(error)) from None
    out.print("Faults: " + (", ".join(str(f) for f in current.values()) or "none"))


# -- the demo ---------------------------------------------------------------------------


@app.command()
@AS_JSON
@click.option(
    "--keep-running/--no-keep-running",
    default=None,
    help="Keep server and worker up afterwards [default: only in a terminal]",
)
def demo(as_json: bool, keep_running: bool | None) -> None:
    """The whole exercise: server, worker, a good order and a bad-card order, compensated."""
    stop_on_sigterm()
    if keep_running is None:
        keep_running = sys.stdin.isatty() and not as_json

    def say(text: str) -> None:
        err.print(f"[dim]>[/dim] {text}")

    def show(report: dict[str, Any], outcomes: list[OrderOutcome]) -> None:
        if as_json:
            return
        out.print()
        for outcome, row in zip(outcomes, report["orders"], strict=True):
            print_outcome(outcome)
            book = row["ledger"]
            out.print(
                f"  ledger:        charged {dollars(book['charged'])}, refunded "
                f"{dollars(book['refunded'])}, billed {dollars(book['billed'])}, "
                f"net {dollars(book['net'])}; stock: {book['stock_taken']} portions taken, "
                f"{book['stock_put_back']} put back"
            )
            out.print()
        change = ", ".join(f"{name} {delta:+d}" for name, delta in report["stock_change"].items())
        out.print(f"Stock change over both orders: {change or 'none'}")
        out.print(f"Web UI: {report['web_ui']}")

    report = run(run_demo(say, show, keep_running))
    if as_json:
        out.print_json(json.dumps(report))


# -- commands that live in their own modules ----------------------------------------------
# (each module defines one click command; add one line per command here)
from pizzeria.ops.bench import bench as bench_command  # noqa: E402

app.add_command(bench_command)

from pizzeria.ops.chaos import chaos as chaos_command  # noqa: E402
from pizzeria.ops.check import check as check_command  # noqa: E402

app.add_command(chaos_command)
app.add_command(check_command)

# -- entry point ------------------------------------------------------------------------


def main() -> None:
    """Console entry point: one-line errors, exit 2 for bad input, never a traceback."""
    code = _run_app()
    # The SDK's Rust threads can outlive the event loop and abort the interpreter while it
    # finalizes ("PyGILState_Release ... finalizing", sdk-python#300), which would turn a
    # finished command into a crash. Nothing is left to clean up here: flush and leave.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_app() -> int:
    def error_line(message: str) -> None:
        err.print(f"error: {message}", markup=False, soft_wrap=True)

    try:
        app.main(prog_name="pizzeria", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "pizzeria"
        message = error.format_message().replace("\n", " ")
        error_line(f"{message} (see `{command} --help`)")
        return 2
    except UserError as error:
        error_line(str(error))
        return 2
    except (
        OrderAlreadyRunning,
        LookupError,
        ConnectionError,
        DevServerError,
        CodecKeyError,
    ) as error:
        error_line(str(error))
        return 1
    except RPCError as error:
        error_line(f"Temporal refused the request: {error}")
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0
