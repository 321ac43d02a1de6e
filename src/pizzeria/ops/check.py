"""``pizzeria check``: does the ledger agree with Temporal's record of every order?

Temporal knows how each order ended (the visibility list of ``PizzaOrderWorkflow`` runs,
then ``describe`` and the result of each); the ledger knows what each run did (its rows
are keyed by ``<workflow id>/<run id>/<step>``). The invariants of docs/design.md must hold
between the two, at any moment:

* stock is never negative and is conserved: per ingredient, initial = in stock + what the
  runs still hold (consumed by completed orders, held by open ones, nothing by undone ones);
* per run, charged - refunded is the billed amount for a completed order (and the bill is
  the amount of its confirmation), and 0 for a failed, cancelled or terminated one, which
  holds no stock and has no bill;
* nothing is refunded above what was charged; no effect is written twice, and no step
  took effect after its compensation left a tombstone;
* the ledger holds no money or stock for a run Temporal does not know.

Temporal is read first and the ledger afterwards, in one transaction: an order closed in
Temporal has finished writing, and a consistent snapshot keeps conservation exact while
workers write. An order still open is only a violation with ``--closed``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import config
from pizzeria.client import STATUS_NAMES
from pizzeria.failures import error_type_of
from pizzeria.ledger import Ledger, LedgerNotFound, LedgerSnapshot, open_ledger
from pizzeria.models import COMPENSATE_REFUND_CUSTOMER as REFUND
from pizzeria.models import COMPENSATE_REVERT_INVENTORY as PUT_BACK
from pizzeria.models import STEP_PROCESS_CREDIT_CARD as CHARGE
from pizzeria.models import STEP_SEND_BILL as BILL
from pizzeria.models import STEP_UPDATE_INVENTORY as TAKE
from pizzeria.models import WORKFLOW_ID_PREFIX, WORKFLOW_TYPE, OrderConfirmation
from pizzeria.worker import connect
from pizzeria.workflows import PizzaOrderWorkflow

DEFAULT_QUERY = f'WorkflowType = "{WORKFLOW_TYPE}"'
OPEN = "RUNNING"
# Closed without completing: every effect must have been undone.
UNDONE = ("FAILED", "CANCELLED", "TERMINATED", "TIMED_OUT")
OUTCOMES = ("COMPLETED", *UNDONE, OPEN)
CONCURRENCY = 16  # describe and result calls in flight at once


@dataclass
class OrderRecord:
    """What Temporal says about one run of an order."""

    workflow_id: str
    run_id: str
    status: str
    amount: int | None = None  # a completed order's confirmation
    error_type: str | None = None  # how a failed order failed
    settled_by_hand: str | None = None  # a compensation resolved by an operator, with note
    details: str = ""  # an open order: what it is doing (e.g. "Needs attention: ...")

    @property
    def order_ref(self) -> str:
        return f"{self.workflow_id}/{self.run_id}"


@dataclass
class Violation:
    kind: str
    order: str  # the order number (or ingredient, for stock)
    run_id: str
    detail: str


@dataclass
class RunLedger:
    """One run's rows in the ledger, added up."""

    order_number: str = ""
    charged: int = 0
    refunded: int = 0
    billed: int = 0
    held: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)  # written (not tombstone) per step
    tombstones: set[str] = field(default_factory=set)
    refund_at: float | None = None
    bill_at: float | None = None

    @property
    def net(self) -> int:
        return self.charged - self.refunded

    @property
    def touches_anything(self) -> bool:
        return bool(self.charged or self.refunded or self.billed or +self.held)


@dataclass
class CheckReport:
    orders: dict[str, int]
    failures: dict[str, int]
    stock: dict[str, dict[str, Any]]
    money: dict[str, int]
    double_effects: int
    refunds_above_charges: int
    open_orders: list[str]
    violations: list[Violation]
    warnings: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "orders": self.orders,
            "failures": self.failures,
            "stock": self.stock,
            "money": self.money,
            "double_effects": self.double_effects,
            "refunds_above_charges": self.refunds_above_charges,
            "open_orders": self.open_orders,
            "violations": [asdict(v) for v in self.violations],
            "warnings": [asdict(w) for w in self.warnings],
        }


# -- the ledger's side -------------------------------------------------------------------


def runs_in(snapshot: LedgerSnapshot) -> tuple[dict[str, RunLedger], int]:
    """Per order_ref, its rows added up; and how many keys hold more than one row."""
    runs: dict[str, RunLedger] = defaultdict(RunLedger)
    keys = Counter(effect["idempotency_key"] for effect in snapshot.effects)
    taken: dict[str, Counter[str]] = defaultdict(Counter)
    for effect in snapshot.effects:
        run = runs[effect["order_ref"]]
        run.order_number = effect["order_number"]
        step = effect["step"]
        if step == REFUND:
            run.refund_at = effect["created_at"]
        if effect["tombstone"]:
            run.tombstones.add(step)
            continue
        run.rows[step] += 1
        if step == CHARGE:
            run.charged += effect["amount"]
        elif step == REFUND:
            run.refunded += effect["amount"]
        elif step == BILL:
            run.billed += effect["amount"]
            run.bill_at = effect["created_at"]
        elif step == TAKE:
            taken[effect["order_ref"]].update(effect["ingredients"])
    for ref, ingredients in taken.items():
        if not runs[ref].rows[PUT_BACK]:
            runs[ref].held = ingredients
    return dict(runs), sum(1 for count in keys.values() if count > 1)


def order_number_of(workflow_id: str) -> str:
    return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


# -- comparing ---------------------------------------------------------------------------


def reconcile(
    records: list[OrderRecord], snapshot: LedgerSnapshot, *, require_closed: bool = False
) -> CheckReport:
    """Every invariant between Temporal's records and one ledger snapshot."""
    runs, duplicate_keys = runs_in(snapshot)
    violations: list[Violation] = []
    warnings: list[Violation] = []

    def violation(kind: str, order: str, run_id: str, detail: str) -> None:
        violations.append(Violation(kind, order, run_id, detail))

    # Effects written twice, or after their compensation found nothing to undo.
    double_effects = duplicate_keys
    for ref, run in runs.items():
        workflow_id, _, run_id = ref.rpartition("/")
        run.order_number = order_number_of(workflow_id) or run.order_number
        for step, compensation in ((TAKE, PUT_BACK), (CHARGE, REFUND)):
            if run.rows[step] and compensation in run.tombstones:
                double_effects += 1
                violation(
                    "late effect after tombstone",
                    run.order_number,
                    run_id,
                    f"{step} took effect after {compensation} found nothing to undo",
                )
        if run.bill_at is not None and run.refund_at is not None and run.bill_at > run.refund_at:
            double_effects += 1
            violation(
                "late effect after tombstone",
                run.order_number,
                run_id,
                "billed after the charge was refunded",
            )
        for step, count in run.rows.items():
            if count > 1:
                violation("double effect", run.order_number, run_id, f"{step} written {count}x")
    if duplicate_keys:
        violation("double effect", "-", "-", f"{duplicate_keys} idempotency keys hold 2+ rows")

    refunds_above_charges = 0
    for ref, run in runs.items():
        if run.refunded > run.charged:
            refunds_above_charges += 1
            violation(
                "refund above charge",
                run.order_number,
                ref.rsplit("/", 1)[-1],
                f"refunded {run.refunded} of {run.charged} charged",
            )

    # Per order: what Temporal says it became against what the ledger shows.
    outcomes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    held_by: dict[str, Counter[str]] = defaultdict(Counter)
    settled: Counter[str] = Counter()  # orders whose charged - refunded is as it must be
    open_orders: list[str] = []
    known = {record.order_ref for record in records}
    for record in records:
        run = runs.get(record.order_ref, RunLedger())
        order = order_number_of(record.workflow_id)
        outcomes[record.status] += 1
        if record.status == "FAILED":
            failures[record.error_type or "unknown"] += 1
        if record.status == "COMPLETED":
            held_by["consumed"].update(run.held)
            if record.amount is not None and run.billed != record.amount:
                violation(
                    "bill differs from confirmation",
                    order,
                    record.run_id,
                    f"billed {run.billed}, confirmed {record.amount}",
                )
            confirmed = run.billed if record.amount is None else record.amount
            settled["completed"] += run.net == run.billed == confirmed
            if run.net != run.billed:
                violation(
                    "charge differs from bill",
                    order,
                    record.run_id,
                    f"charged {run.charged} - refunded {run.refunded} != billed {run.billed}",
                )
        elif record.status == OPEN:
            held_by["open"].update(run.held)
            open_orders.append(order)
            if require_closed:
                violation("still open", order, record.run_id, record.details or "running")
        else:
            held_by["undone"].update(run.held)
            settled["undone"] += run.net == 0
            kept = []
            if run.net:
                kept.append(f"charged {run.charged} - refunded {run.refunded} = {run.net}")
            if +run.held:
                kept.append(f"holds {sum(run.held.values())} portions of stock")
            if run.billed:
                kept.append(f"billed {run.billed}")
            if kept:
                detail = f"{record.status.lower()} but " + "; ".join(kept)
                if record.settled_by_hand is not None and not run.billed:
                    detail += f" (resolved by hand: {record.settled_by_hand})"
                    warnings.append(
                        Violation("settled outside the ledger", order, record.run_id, detail)
                    )
                else:
                    violation("effects kept by an undone order", order, record.run_id, detail)

    for ref, run in runs.items():
        if ref not in known:
            held_by["unknown"].update(run.held)
            if run.touches_anything:
                violation(
                    "unknown run",
                    run.order_number,
                    ref.rsplit("/", 1)[-1],
                    f"the ledger holds effects of {ref}, which Temporal does not know",
                )

    stock: dict[str, dict[str, Any]] = {}
    for name, row in snapshot.stock.items():
        held = {kind: held_by[kind][name] for kind in ("consumed", "open", "undone", "unknown")}
        conserved = row["initial"] == row["quantity"] + sum(held.values())
        stock[name] = {
            "initial": row["initial"],
            "in_stock": row["quantity"],
            **{f"held_{kind}" if kind != "consumed" else kind: n for kind, n in held.items()},
            "conserved": conserved,
        }
        if row["quantity"] < 0:
            violation("negative stock", name, "-", f"{row['quantity']} in stock")
        if not conserved:
            violation(
                "stock not conserved",
                name,
                "-",
                f"initial {row['initial']} != in stock {row['quantity']} + held "
                f"{sum(held.values())}",
            )

    completed_billed = sum(
        runs[r.order_ref].billed for r in records if r.status == "COMPLETED" and r.order_ref in runs
    )
    charged = sum(run.charged for run in runs.values())
    refunded = sum(run.refunded for run in runs.values())
    return CheckReport(
        orders={
            "total": len(records),
            **{status.lower(): outcomes[status] for status in OUTCOMES if status != OPEN},
            "open": outcomes[OPEN],
            **{s.lower(): n for s, n in outcomes.items() if s not in OUTCOMES},
        },
        failures=dict(failures.most_common()),
        stock=stock,
        money={
            "charged": charged,
            "refunded": refunded,
            "net": charged - refunded,
            "billed_completed": completed_billed,
            # per order: charged - refunded is the bill (completed) or 0 (undone)
            "completed_orders_settled": settled["completed"],
            "undone_orders_settled": settled["undone"],
        },
        double_effects=double_effects,
        refunds_above_charges=refunds_above_charges,
        open_orders=sorted(open_orders),
        violations=violations,
        warnings=warnings,
    )


# -- Temporal's side ---------------------------------------------------------------------


def failure_type(error: BaseException | None) -> str:
    """The typed error clients see, else the innermost cause (say, an activity timeout)."""
    typed = error_type_of(error)
    if typed is not None or error is None:
        return typed or "unknown"
    while error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__


def _hand_resolution(error: BaseException | None) -> str | None:
    """The operator's note when a compensation was resolved by hand (not retried)."""
    while error is not None:
        if isinstance(error, ApplicationError) and error.details:
            first = error.details[0]
            if isinstance(first, dict) and first.get("repaired_by") == "resolved manually":
                return str(first.get("note") or "")
        error = error.__cause__
    return None


async def order_record(client: Client, workflow_id: str, run_id: str) -> OrderRecord | None:
    """Describe one run and read how it ended; None when Temporal does not know it."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id, result_type=OrderConfirmation)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    status = STATUS_NAMES.get(description.status, "UNKNOWN") if description.status else "UNKNOWN"
    record = OrderRecord(workflow_id, run_id, status)
    if status == OPEN:
        try:
            state = await handle.query(
                PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=5)
            )
            record.details = str(state.get("details") or "")
        except Exception:  # no worker to answer: the order is open all the same
            record.details = ""
        return record
    try:
        confirmation = await handle.result(follow_runs=False)
        record.amount = confirmation.amount
    except WorkflowFailureError as failure:
        record.error_type = failure_type(failure.cause)
        record.settled_by_hand = _hand_resolution(failure.cause)
    return record


async def temporal_records(
    client: Client, query: str = DEFAULT_QUERY, *, limit: int | None = None
) -> list[OrderRecord]:
    """Every run of the order workflow that the visibility store lists, described."""
    executions = [
        (execution.id, execution.run_id)
        async for execution in client.list_workflows(query, limit=limit)
    ]
    return await describe_all(client, executions)


async def describe_all(client: Client, runs: list[tuple[str, str]]) -> list[OrderRecord]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(workflow_id: str, run_id: str) -> OrderRecord | None:
        async with gate:
            return await order_record(client, workflow_id, run_id)

    found = await asyncio.gather(*(one(w, r) for w, r in runs))
    return [record for record in found if record is not None]


async def check_orders(
    client: Client, ledger: Ledger, *, query: str = DEFAULT_QUERY, require_closed: bool = False
) -> CheckReport:
    """Temporal first, then the ledger: see the module docstring for why."""
    records = await temporal_records(client, query)
    snapshot = await asyncio.to_thread(ledger.snapshot)
    # A run can be missing from the list while visibility catches up: ask for it directly.
    listed = {record.order_ref for record in records}
    missing = sorted(
        {effect["order_ref"] for effect in snapshot.effects} - listed,
    )
    pairs = [tuple(ref.rsplit("/", 1)) for ref in missing if "/" in ref]
    records += await describe_all(client, [(w, r) for w, r in pairs])
    return reconcile(records, snapshot, require_closed=require_closed)


# -- printing ----------------------------------------------------------------------------


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def print_report(report: CheckReport, console: Console) -> None:
    orders = report.orders
    console.print(
        f"Orders: {orders['total']} - completed {orders['completed']}, failed "
        f"{orders['failed']}, cancelled {orders['cancelled']}"
        + "".join(
            f", {name.replace('_', ' ')} {count}"
            for name, count in orders.items()
            if name not in ("total", "completed", "failed", "cancelled", "open") and count
        )
        + f", still open {orders['open']}"
    )
    if report.failures:
        console.print(
            "  failed by error: "
            + ", ".join(f"{kind} {count}" for kind, count in report.failures.items())
        )
    stock = Table("ingredient", "initial", "in stock", "consumed", "open", "undone", "ok")
    for name, row in report.stock.items():
        stock.add_row(
            name,
            str(row["initial"]),
            str(row["in_stock"]),
            str(row["consumed"]),
            str(row["held_open"]),
            str(row["held_undone"] + row["held_unknown"]),
            "yes" if row["conserved"] else "[red]NO[/red]",
        )
    console.print(stock)
    money = report.money
    console.print(
        f"Money: charged {dollars(money['charged'])}, refunded {dollars(money['refunded'])}, "
        f"net {dollars(money['net'])}; billed by completed orders "
        f"{dollars(money['billed_completed'])}"
    )
    undone = sum(orders[s.lower()] for s in UNDONE)
    console.print(
        f"Per order, charged - refunded: the bill for {money['completed_orders_settled']} of "
        f"{orders['completed']} completed, 0 for {money['undone_orders_settled']} of {undone} "
        "failed, cancelled or terminated"
    )
    console.print(
        f"Double effects: {report.double_effects}; refunds above charges: "
        f"{report.refunds_above_charges}; orders still open: {len(report.open_orders)}"
        + (f" ({', '.join(report.open_orders[:20])})" if report.open_orders else "")
    )
    for warning in report.warnings:
        console.print(
            f"[yellow]warning[/yellow]: {warning.kind}: order {warning.order}: {warning.detail}"
        )
    if report.ok:
        console.print("[green]No violations[/green]: the ledger agrees with Temporal.")
        return
    table = Table(
        "violation", "order", "run", "detail", title=f"{len(report.violations)} violations"
    )
    for item in report.violations:
        table.add_row(item.kind, item.order, item.run_id[:8], item.detail)
    console.print(table)


# -- the command -------------------------------------------------------------------------


async def connect_or_fail(address: str | None) -> Client:
    try:
        return await connect(address)
    except RuntimeError as error:
        reason = "connection refused" if "refused" in str(error).lower() else str(error)[:120]
        raise ConnectionError(
            f"cannot reach Temporal at {address or 'the configured address'} ({reason})"
        ) from None


async def run_check(
    address: str | None, ledger: Ledger, *, require_closed: bool = False
) -> CheckReport:
    client = await connect_or_fail(address)
    try:
        return await check_orders(client, ledger, require_closed=require_closed)
    finally:
        ledger.close()


@click.command()
@click.option("--address", help="Temporal address [default: SDK env config, else localhost:7233]")
@click.option(
    "--ledger",
    "ledger_location",
    metavar="FILE|URL",
    help="The ledger: a SQLite file or a postgresql:// URL "
    "[default: $PIZZERIA_LEDGER, else .pizzeria/ledger.db]",
)
@click.option("--closed", "require_closed", is_flag=True, help="An order still open is a violation")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
def check(
    address: str | None, ledger_location: str | None, require_closed: bool, as_json: bool
) -> None:
    """Compare the ledger with Temporal's record of every order; exit 1 on any violation."""
    try:
        ledger = open_ledger(ledger_location or config.ledger_location(), read_only=True)
    except LedgerNotFound as error:
        raise click.UsageError(str(error)) from None
    report = asyncio.run(run_check(address, ledger, require_closed=require_closed))
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        print_report(report, Console(highlight=False, soft_wrap=True))
    if not report.ok:
        raise SystemExit(1)
