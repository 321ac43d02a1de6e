"""``pizzeria chaos``: crash everything on purpose, then prove nothing was lost or doubled.

One command starts a private Temporal dev server (history in a file) and worker processes
on 127.0.0.1, places N orders with a seeded random mix of good and bad cards, pickups,
pizzas and faults (a flaky and declining card gateway, out-of-stock ingredients, refused
bills, steps that write after their timeout or whose answer is lost, compensations that
fail a few times), cancels some of them, kills a worker with SIGKILL and starts it again
at intervals, restarts the server on the same history file, waits (bounded) for every
order to close, and then runs ``pizzeria check`` against the ledger. Only processes it
started are ever signalled.

Faults on compensations are limited to fewer attempts than an order's
``compensation_attempts``, so orders never have to park as "needs attention". Should one
park anyway (a worker killed once too often), chaos answers it like an operator would,
with the ``retry_compensations`` Update, and counts it as ``repaired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.client import STATUS_NAMES, static_summary
from pizzeria.devserver import DevServer, DevServerError
from pizzeria.faults import SEED_VARIABLE, FaultSyntaxError, parse_faults
from pizzeria.ledger import open_ledger
from pizzeria.menu import INITIAL_STOCK
from pizzeria.models import (
    TASK_QUEUE,
    Address,
    CreditCardInfo,
    Customer,
    OrderSettings,
    Pizza,
    PizzaOrder,
    workflow_id_for,
)
from pizzeria.ops.check.reconcile import check_orders
from pizzeria.ops.check.report import CheckReport, print_check_report
from pizzeria.worker import connect
from pizzeria.workflows import PizzaOrderWorkflow

T = TypeVar("T")

# Compensation faults strike at most 3 attempts, below the 10 compensation attempts an
# order has, so every order can undo itself without an operator.
DEFAULT_FAULTS = ",".join(
    [
        "get_distance=fail:1@0.05",
        "update_inventory=fail:2@0.1",
        "update_inventory=out_of_stock@0.03",
        "update_inventory=late:1@0.04",
        "update_inventory=lost:1@0.03",
        "process_credit_card=fail:3@0.2",
        "process_credit_card=decline@0.05",
        "process_credit_card=late:1@0.04",
        "process_credit_card=lost:1@0.03",
        "send_bill=fail:2@0.2",
        "send_bill=refuse@0.03",
        "send_bill=lost:1@0.03",
        "revert_inventory=fail:2@0.3",
        "refund_customer=fail:3@0.3",
    ]
)
GOOD_CARDS = ("4242424242424242", "5555555555554444", "4000056655665556", "2223003122003222")
BAD_CARDS = ("424242424242424", "4242424242424241")  # the exercise's 15 digits; bad Luhn
SIZES = {"Small": 1200, "Medium": 1300, "Large": 1500}
TOPPINGS = (
    "mushrooms",
    "onions",
    "pepperoni",
    "extra cheese",
    "olives",
    "peppers",
    "ham",
    "pineapple",
    "sausage",
    "basil",
)
CUSTOMERS = ("Lisa Anderson", "Zoë Ñúñez", "Marge Simpson", "José Álvarez", "Ned Flanders")
NEAR = Address("741 Evergreen Terrace", "Apartment 221B", "Albuquerque", "NM", "87101")
FAR = Address("12345 Very Long Road Far Beyond The Hills", "Unit 9", "Santa Fe", "NM", "87501")
RETRYABLE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.INTERNAL,
    RPCStatusCode.CANCELLED,
}
CLOSED = ("COMPLETED", "FAILED", "CANCELLED", "TERMINATED", "TIMED_OUT")
ATTENTION_CHECK_SECONDS = 30.0  # an order open this long is asked whether it needs help
MAX_UNEXPECTED_EXITS = 20


@dataclass
class ChaosSettings:
    orders: int = 300
    concurrency: int = 20
    workers: int = 2
    worker_kills: int = 3
    server_restarts: int = 1
    cancel_rate: float = 0.1
    bad_card_rate: float = 0.1
    seed: int = 0
    faults: str = DEFAULT_FAULTS
    stock: int = INITIAL_STOCK
    timeout: float = 900.0
    data_dir: Path | None = None
    keep_data: bool = False


@dataclass
class PlannedOrder:
    order: PizzaOrder
    cancel_after: float | None = None  # seconds after the start
    cancel_by_update: bool = True


@dataclass
class ChaosResult:
    orders: int
    outcomes: Counter[str]
    worker_kills: int
    server_restarts: int
    repaired: int
    seconds: float
    seed: int
    report: CheckReport | None
    data_dir: Path | None
    notes: list[str] = field(default_factory=list)
    late_writes: int = 0  # attempts that wrote after their timeout (from the worker logs)
    late_writes_refused: int = 0  # ... and found their compensation's tombstone
    lost_answers: int = 0  # steps that took effect while their answer was lost

    @property
    def open(self) -> int:
        """Orders not seen closed: still running, or lost track of (see ``notes``)."""
        return self.orders - sum(self.outcomes[status] for status in CLOSED)

    @property
    def violations(self) -> int:
        if self.report is None:
            return self.orders  # never checked: nothing is proven
        return len(self.report.violations)

    @property
    def ok(self) -> bool:
        return self.violations == 0 and self.open == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "completed": self.outcomes["COMPLETED"],
            "failed": self.outcomes["FAILED"],
            "cancelled": self.outcomes["CANCELLED"],
            "worker_kills": self.worker_kills,
            "server_restarts": self.server_restarts,
            "violations": self.violations,
            "seconds": round(self.seconds, 1),
            "open": self.open,
            "repaired": self.repaired,
            "late_writes": self.late_writes,
            "late_writes_refused": self.late_writes_refused,
            "lost_answers": self.lost_answers,
            "seed": self.seed,
            "failures": self.report.failures if self.report else {},
            "data_dir": str(self.data_dir) if self.data_dir else None,
        }


# -- the orders --------------------------------------------------------------------------


def plan_orders(settings: ChaosSettings) -> list[PlannedOrder]:
    """N orders from the seed alone: the same seed gives the same orders."""
    rng = random.Random(settings.seed)
    planned = []
    for number in range(settings.orders):
        items = []
        for _ in range(rng.randint(1, 3)):
            size = rng.choice(list(SIZES))
            toppings = rng.sample(TOPPINGS, rng.randint(0, 2))
            description = size + (", with " + " and ".join(toppings) if toppings else "")
            items.append(Pizza(description, SIZES[size] + rng.choice((0, 0, 0, 150))))
        bad = rng.random() < settings.bad_card_rate
        card = rng.choice(BAD_CARDS if bad else GOOD_CARDS)
        is_delivery = rng.random() < 0.7
        cancel = rng.random() < settings.cancel_rate
        name = rng.choice(CUSTOMERS)
        order = PizzaOrder(
            order_number=f"CHAOS-{settings.seed}-{number:04d}",
            customer=Customer(8675309 + number, name, "customer@example.com", "555-555-0000"),
            items=items,
            is_delivery=is_delivery,
            address=FAR if rng.random() < 0.03 else NEAR,
            credit_card_info=CreditCardInfo(name, card),
            settings=OrderSettings(
                # An order to cancel waits a little longer, so the cancel can come before
                # its bill as often as after.
                prep_seconds=1.5 if cancel else round(rng.uniform(0, 0.5), 2),
                # Few attempts: a step can fail for good after the charge (a refund to
                # make), and a late step meets its compensation's tombstone.
                step_attempts=rng.choices((1, 3, 10), weights=(10, 20, 70))[0],
                compensation_attempts=10,
            ),
        )
        planned.append(
            PlannedOrder(
                order,
                cancel_after=round(rng.uniform(0.2, 2.5), 2) if cancel else None,
                cancel_by_update=rng.random() < 2 / 3,
            )
        )
    return planned


# -- processes we started ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pizzeria_command() -> list[str]:
    beside = Path(sys.executable).parent / "pizzeria"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from pizzeria.cli import main; main()"]


class Processes:
    """The dev server and the workers this run started: the only ones it ever signals."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        self.data_dir = data_dir
        self.server = DevServer(
            data_dir / "temporal.db",
            port=free_port(),
            ui_port=free_port(),
            log_file=data_dir / "server.log",
            headless=True,
        )
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.resting: set[int] = set()  # workers killed on purpose, not yet started again
        self.unexpected_exits = 0

    def start_server(self) -> None:
        for attempt in range(10):  # the port may take a moment to be free again
            try:
                self.server.start()
                return
            except DevServerError:
                if attempt == 9:
                    raise
                time.sleep(0.5)

    def start_worker(self, index: int) -> None:
        self.resting.discard(index)
        with open(self.data_dir / f"worker-{index}.log", "ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches chaos, which stops the
            # workers itself, in order.
            self.workers[index] = subprocess.Popen(
                [*pizzeria_command(), "worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill_worker(self, index: int) -> int:
        """SIGKILL: no goodbye, activities die mid-flight. Started again by the caller."""
        process = self.workers[index]
        assert process is not None
        self.resting.add(index)
        process.kill()
        process.wait(timeout=10)
        return process.pid

    def restart_dead_workers(self) -> None:
        for index, process in enumerate(self.workers):
            if index in self.resting or process is None or process.poll() is None:
                continue
            self.unexpected_exits += 1
            self.start_worker(index)

    def stop_workers(self, grace: float = 20.0) -> None:
        """SIGTERM first (a late write in flight still lands), SIGKILL after ``grace``."""
        running = [p for p in self.workers if p is not None and p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop_all(self, grace: float = 20.0) -> None:
        try:
            self.stop_workers(grace)
        finally:
            self.server.stop()


# -- the run -----------------------------------------------------------------------------


def quiet_runtime() -> Runtime:
    """The SDK warns on every call retried while the server is down: here that is the plan."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


@contextlib.contextmanager
def private_environment(variables: dict[str, str]) -> Iterator[None]:
    """This run's settings for us and our workers; none of the caller's Temporal ones."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def retrying(call: Callable[[], Awaitable[T]], until: float) -> T:
    """Call again while the server is unreachable (it restarts), until ``until``."""
    delay = 0.2
    while True:
        try:
            return await call()
        except RPCError as error:
            if error.status not in RETRYABLE or time.monotonic() > until:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


class ChaosRun:
    def __init__(
        self,
        settings: ChaosSettings,
        data_dir: Path,
        progress: Progress | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.processes = Processes(data_dir, settings.workers)
        self.progress = progress
        self.say = say or (lambda text: None)
        self.deadline = time.monotonic() + settings.timeout
        self.client: Client | None = None
        self.started = 0
        self.outcomes: Counter[str] = Counter()
        self.worker_kills = 0
        self.server_restarts = 0
        self.repaired = 0
        self.notes: list[str] = []
        self._task_id: Any = None
        self._server_down = asyncio.Event()
        self._started_more = asyncio.Event()

    # -- progress ------------------------------------------------------------------------

    def _show(self, advance: int = 0) -> None:
        if self.progress is None:
            return
        if self._task_id is None:
            self._task_id = self.progress.add_task("chaos", total=self.settings.orders, status="")
        status = (
            f"ok {self.outcomes['COMPLETED']} failed {self.outcomes['FAILED']} cancelled "
            f"{self.outcomes['CANCELLED']} | kills {self.worker_kills} restarts "
            f"{self.server_restarts}"
        )
        self.progress.update(self._task_id, advance=advance, status=status)

    # -- one order -----------------------------------------------------------------------

    async def _start(self, order: PizzaOrder) -> WorkflowHandle[Any, Any]:
        assert self.client is not None
        client = self.client
        workflow_id = workflow_id_for(order.order_number)

        async def attempt() -> WorkflowHandle[Any, Any]:
            try:
                return await client.start_workflow(
                    PizzaOrderWorkflow.order_pizza,
                    order,
                    id=workflow_id,
                    task_queue=TASK_QUEUE,
                    static_summary=static_summary(order),
                    # A start retried after a lost reply must never make a second run.
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                description = await client.get_workflow_handle(workflow_id).describe()
                return client.get_workflow_handle(workflow_id, run_id=description.run_id)

        return await retrying(attempt, self.deadline)

    async def _cancel(self, handle: WorkflowHandle[Any, Any], planned: PlannedOrder) -> None:
        """Like `pizzeria cancel`: the cancel_order Update, then the cancellation request."""
        assert planned.cancel_after is not None
        await asyncio.sleep(planned.cancel_after)
        until = min(self.deadline, time.monotonic() + 120)
        try:
            if planned.cancel_by_update:
                try:
                    result = await retrying(
                        lambda: handle.execute_update(
                            PizzaOrderWorkflow.cancel_order,
                            "chaos: the customer changed their mind",
                            id="chaos-cancel",  # a retried Update is the same Update
                        ),
                        until,
                    )
                except WorkflowUpdateFailedError as error:
                    if "already being cancelled" not in str(error.cause):
                        return  # refused: past the bill, or already closed
                else:
                    if not result.accepted:
                        return
            await retrying(handle.cancel, until)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it closed meanwhile
                self.notes.append(f"cancel of {handle.id}: {error}")

    async def _repair_if_parked(self, handle: WorkflowHandle[Any, Any]) -> None:
        try:
            state = await handle.query(
                PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=5)
            )
            if not state.get("needs_attention"):
                return
            await handle.execute_update(
                PizzaOrderWorkflow.retry_compensations,
                id=f"chaos-repair-{self.repaired}",
                rpc_timeout=timedelta(seconds=60),
            )
            self.repaired += 1
            self.say(f"{handle.id} needed attention: compensations retried")
        except Exception as error:  # a worker down, a server restarting: ask again later
            self.notes.append(f"repair of {handle.id}: {type(error).__name__}")

    async def _wait_closed(self, handle: WorkflowHandle[Any, Any]) -> str:
        while time.monotonic() < self.deadline:
            wait = min(ATTENTION_CHECK_SECONDS, max(1.0, self.deadline - time.monotonic()))
            try:
                await asyncio.wait_for(handle.result(follow_runs=False), timeout=wait)
                break
            except WorkflowFailureError:
                break
            except TimeoutError:
                await self._repair_if_parked(handle)
            except RPCError as error:
                if error.status not in RETRYABLE:
                    raise
                await asyncio.sleep(0.5)
        description = await retrying(handle.describe, self.deadline + 30)
        status = description.status
        return STATUS_NAMES.get(status, "UNKNOWN") if status else "UNKNOWN"

    async def _one_order(self, planned: PlannedOrder, gate: asyncio.Semaphore) -> None:
        try:
            await self._place(planned, gate)
        except Exception as error:  # counted as open: the run then fails, with a note
            self.notes.append(f"{planned.order.order_number}: {type(error).__name__}: {error}")

    async def _place(self, planned: PlannedOrder, gate: asyncio.Semaphore) -> None:
        async with gate:
            handle = await self._start(planned.order)
            self.started += 1
            self._started_more.set()
            self._show()
            canceller = None
            if planned.cancel_after is not None:
                canceller = asyncio.create_task(self._cancel(handle, planned))
            try:
                status = await self._wait_closed(handle)
            finally:
                if canceller is not None:
                    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(canceller, timeout=30)
            self.outcomes[status] += 1
            self._show(advance=1 if status in CLOSED else 0)

    # -- the monkey ----------------------------------------------------------------------

    def _events(self) -> list[tuple[int, str]]:
        """(orders started, what to break): spread over the run, the restart mid-way."""
        kinds = ["kill"] * self.settings.worker_kills
        kinds[len(kinds) // 2 : len(kinds) // 2] = ["restart"] * self.settings.server_restarts
        count = len(kinds)
        return [
            (max(1, round(self.settings.orders * (n + 1) / (count + 1))), kind)
            for n, kind in enumerate(kinds)
        ]

    async def _monkey(self) -> None:
        rng = random.Random(self.settings.seed + 1)
        for threshold, kind in self._events():
            while self.started < threshold:
                self._started_more.clear()
                left = self.deadline - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._started_more.wait(), timeout=left)
            await asyncio.sleep(rng.uniform(0, 1.0))  # not always at a tidy moment
            if kind == "kill":
                index = self.worker_kills % len(self.processes.workers)
                pid = self.processes.kill_worker(index)
                self.worker_kills += 1
                self.say(f"killed worker {index} (pid {pid}) with SIGKILL")
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                self.processes.start_worker(index)
            else:
                self._server_down.set()
                try:
                    await asyncio.to_thread(self.processes.server.stop)
                    self.say("stopped the Temporal dev server")
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    await asyncio.to_thread(self.processes.start_server)
                finally:
                    self._server_down.clear()
                self.server_restarts += 1
                self.say("restarted the Temporal dev server on the same history file")
            self._show()

    async def _supervise(self) -> None:
        """A worker that died without being killed (it should not) is started again."""
        while time.monotonic() < self.deadline:
            if not self._server_down.is_set():
                self.processes.restart_dead_workers()
                if self.processes.unexpected_exits > MAX_UNEXPECTED_EXITS:
                    raise RuntimeError("workers keep exiting on their own: see worker-*.log")
            await asyncio.sleep(0.5)

    # -- all of it -----------------------------------------------------------------------

    async def run(self) -> ChaosResult:
        started = time.monotonic()
        planned = plan_orders(self.settings)
        open_ledger(self.data_dir / "ledger.db", initial_stock=self.settings.stock).close()
        await asyncio.to_thread(self.processes.start_server)
        self.say(f"Temporal dev server on {self.processes.server.address}, data in {self.data_dir}")
        report: CheckReport | None = None
        with private_environment(self._environment()):
            self.client = await connect(
                self.processes.server.address, "default", runtime=quiet_runtime()
            )
            for index in range(self.settings.workers):
                self.processes.start_worker(index)
            self._show()
            gate = asyncio.Semaphore(self.settings.concurrency)
            supervisor = asyncio.create_task(self._supervise())
            monkey = asyncio.create_task(self._monkey())
            orders = [asyncio.create_task(self._one_order(p, gate)) for p in planned]

            async def every_order() -> None:
                await asyncio.gather(*orders)

            closing = asyncio.create_task(every_order())
            try:
                # A monkey or a supervisor that fails (a server that will not start again,
                # workers that keep dying) ends the run at once, instead of at the deadline.
                pending: set[asyncio.Task[None]] = {closing, supervisor, monkey}
                while closing in pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                await asyncio.wait_for(monkey, timeout=max(1.0, self.deadline - time.monotonic()))
            finally:
                for task in (monkey, supervisor, closing, *orders):
                    task.cancel()
                await asyncio.gather(monkey, supervisor, closing, *orders, return_exceptions=True)
            self.say("orders done; stopping the workers (a late write in flight still lands)")
            await asyncio.to_thread(self.processes.stop_workers)
            ledger = open_ledger(self.data_dir / "ledger.db", read_only=True)
            try:
                report = await check_orders(self.client, ledger, require_closed=True)
            finally:
                ledger.close()
        late, refused, lost = self._from_worker_logs()
        return ChaosResult(
            late_writes=late,
            late_writes_refused=refused,
            lost_answers=lost,
            orders=self.settings.orders,
            outcomes=self.outcomes,
            worker_kills=self.worker_kills,
            server_restarts=self.server_restarts,
            repaired=self.repaired,
            seconds=time.monotonic() - started,
            seed=self.settings.seed,
            report=report,
            data_dir=self.data_dir,
            notes=self.notes,
        )

    def _from_worker_logs(self) -> tuple[int, int, int]:
        """Late writes, late writes refused, lost answers: what the workers logged."""
        late = refused = lost = 0
        for log in self.data_dir.glob("worker-*.log"):
            with open(log, errors="replace") as lines:
                for line in lines:
                    late += "takes effect late" in line
                    refused += "Late step refused" in line
                    lost += "its answer is lost" in line
        return late, refused, lost

    def _environment(self) -> dict[str, str]:
        data = str(self.data_dir)
        return {
            "TEMPORAL_ADDRESS": self.processes.server.address,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_CONFIG_FILE": str(self.data_dir / "no-temporal-profile.toml"),
            "PIZZERIA_DATA_DIR": data,
            "PIZZERIA_LEDGER": str(self.data_dir / "ledger.db"),
            "PIZZERIA_FAULTS_FILE": str(self.data_dir / "faults.json"),
            "PIZZERIA_FAULTS": self.settings.faults,
            SEED_VARIABLE: str(self.settings.seed),
            "PIZZERIA_DRIVER_SECONDS": "0",
        }


# -- the command -------------------------------------------------------------------------


def print_summary(result: ChaosResult, console: Console) -> None:
    if result.report is not None:
        print_check_report(result.report, console)
    console.print(
        f"Chaos: {result.orders} orders in {result.seconds:.1f} s (seed {result.seed}): "
        f"completed {result.outcomes['COMPLETED']}, failed {result.outcomes['FAILED']}, "
        f"cancelled {result.outcomes['CANCELLED']}, still open {result.open}; "
        f"{result.worker_kills} worker kills, {result.server_restarts} server restarts, "
        f"{result.repaired} orders repaired; {result.late_writes} late writes, "
        f"{result.late_writes_refused} of them refused; {result.lost_answers} lost answers"
    )
    verdict = "[green]nothing lost, nothing doubled[/green]" if result.ok else "[red]FAILED[/red]"
    console.print(f"Verdict: {verdict} ({result.violations} violations)")


@click.command()
@click.option("--orders", default=300, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--concurrency",
    default=20,
    show_default=True,
    type=click.IntRange(1, 500),
    help="Orders open at once",
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option("--worker-kills", default=3, show_default=True, type=click.IntRange(0, 1000))
@click.option("--server-restarts", default=1, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--cancel-rate", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Share"
)
@click.option("--bad-card-rate", default=0.1, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", type=int, help="Seed of orders, faults and timing [default: random]")
@click.option(
    "--faults",
    default=DEFAULT_FAULTS,
    help="Faults for the workers, STEP=MODE[:N][@RATE],... [default: a mix of every kind]",
)
@click.option(
    "--stock",
    default=INITIAL_STOCK,
    show_default=True,
    type=click.IntRange(0, 10**9),
    help="Portions of each ingredient at the start",
)
@click.option(
    "--timeout",
    default=900.0,
    show_default=True,
    type=click.FloatRange(10, 24 * 3600),
    help="Seconds before giving up on orders still open",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the history, ledger and logs here (new or empty) [default: a temporary folder]",
)
@click.option("--keep-data", is_flag=True, help="Keep the temporary folder afterwards")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
def chaos(
    orders: int,
    concurrency: int,
    workers: int,
    worker_kills: int,
    server_restarts: int,
    cancel_rate: float,
    bad_card_rate: float,
    seed: int | None,
    faults: str,
    stock: int,
    timeout: float,
    data_dir: Path | None,
    keep_data: bool,
    as_json: bool,
) -> None:
    """Place orders while killing workers and restarting the server, then check the ledger."""
    try:
        parse_faults(faults)
    except FaultSyntaxError as error:
        raise click.BadParameter(str(error), param_hint="--faults") from None
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise click.BadParameter(f"{data_dir} is not empty", param_hint="--data-dir")
    settings = ChaosSettings(
        orders=orders,
        concurrency=concurrency,
        workers=workers,
        worker_kills=worker_kills,
        server_restarts=server_restarts,
        cancel_rate=cancel_rate,
        bad_card_rate=bad_card_rate,
        seed=seed if seed is not None else random.SystemRandom().randrange(1_000_000),
        faults=faults,
        stock=stock,
        timeout=timeout,
        data_dir=data_dir,
        keep_data=keep_data,
    )
    folder = data_dir or Path(tempfile.mkdtemp(prefix="pizzeria-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    try:
        result = run_with_progress(settings, folder, err)
    except (KeyboardInterrupt, DevServerError):
        raise
    except Exception as error:
        err.print(f"error: chaos stopped: {type(error).__name__}: {error}", markup=False)
        err.print(f"History, ledger and logs kept in {folder}", markup=False)
        raise SystemExit(1) from None
    keep = keep_data or data_dir is not None or not result.ok
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        result.data_dir = None
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        print_summary(result, out)
        if keep:
            out.print(f"History, ledger and logs kept in {folder}")
    if not result.ok:
        raise SystemExit(1)


def run_with_progress(settings: ChaosSettings, folder: Path, console: Console) -> ChaosResult:
    """Run with a progress bar on stderr; stop everything started, whatever happens."""
    progress = Progress(
        TextColumn("[bold]chaos[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    run = ChaosRun(settings, folder, progress, say=lambda text: progress.console.print(text))

    async def main() -> ChaosResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await run.run()

    try:
        with progress:
            return asyncio.run(main())
    except asyncio.CancelledError:  # SIGTERM: stopped like a Ctrl-C
        raise KeyboardInterrupt from None
    finally:
        # Also after Ctrl-C: a second Ctrl-C must not leave a worker or the server behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            run.processes.stop_all(grace=10.0)
        finally:
            signal.signal(signal.SIGINT, previous)
