"""One chaos run: the fleet up, the orders placed while the monkey breaks things, the check."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.progress import Progress
from temporalio.client import Client

from pizzeria.ledger import open_ledger
from pizzeria.ops.chaos.fleet import ChaosFleet
from pizzeria.ops.chaos.monkey import Monkey
from pizzeria.ops.chaos.orders import ChaosOrders
from pizzeria.ops.chaos.plan import ChaosSettings, PlannedOrder, plan_orders
from pizzeria.ops.chaos.result import (
    CLOSED,
    ChaosResult,
    provider_log_counts,
    worker_log_counts,
)
from pizzeria.ops.check.provider import check_gateway
from pizzeria.ops.check.reconcile import check_orders
from pizzeria.ops.check.report import CheckReport
from pizzeria.temporal.connection import connect
from pizzeria.temporal.devserver import quiet_runtime
from pizzeria.temporal.faults import SEED_VARIABLE


@contextlib.contextmanager
def private_environment(variables: dict[str, str]) -> Iterator[None]:
    """This run's settings for us and our workers; none of the caller's Temporal ones."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("TEMPORAL_") or name == "STRIPE_API_KEY":
            del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
        # The full location, password included: the workers need it to log in.
        self.ledger_location = settings.ledger or str(data_dir / "ledger.db")
        self.ledger_shown = self.ledger_location
        self.fleet = ChaosFleet(data_dir, settings.workers)
        self.progress = progress
        self.say = say or (lambda text: None)
        self.deadline = time.monotonic() + settings.timeout
        self.monkey = Monkey(settings, self.fleet, self.deadline, self.say, self._show)
        self.orders: ChaosOrders | None = None
        self._task_id: Any = None
        self.payments_url = ""  # the run's local payment provider, once started

    def _show(self, advance: int = 0) -> None:
        if self.progress is None:
            return
        if self._task_id is None:
            self._task_id = self.progress.add_task("chaos", total=self.settings.orders, status="")
        outcomes = self.orders.outcomes if self.orders else {}
        status = (
            f"ok {outcomes.get('COMPLETED', 0)} failed {outcomes.get('FAILED', 0)} cancelled "
            f"{outcomes.get('CANCELLED', 0)} | kills {self.monkey.worker_kills} restarts "
            f"{self.monkey.server_restarts} rolling {self.monkey.rolling_restarts} "
            f"provider {self.monkey.provider_restarts}"
        )
        self.progress.update(self._task_id, advance=advance, status=status)
        closed = sum(outcomes.get(name, 0) for name in CLOSED)
        every = max(1, self.settings.orders // 20)
        # Without a terminal the bar is not drawn: a line every twentieth of the orders.
        if advance and not self.progress.console.is_terminal and closed % every == 0:
            self.say(f"chaos: {closed}/{self.settings.orders} orders closed | {status}")

    def _order_started(self) -> None:
        self.monkey.order_started()
        self._show()

    def _order_closed(self, status: str) -> None:
        self._show(advance=1 if status in CLOSED else 0)

    async def run(self) -> ChaosResult:
        started = time.monotonic()
        planned = plan_orders(self.settings)
        ledger = open_ledger(self.ledger_location, initial_stock=self.settings.stock)
        self.ledger_shown = ledger.location
        ledger.close()
        await asyncio.to_thread(self.fleet.start_server)
        self.payments_url = await asyncio.to_thread(
            self.fleet.start_provider, self.settings.provider_faults
        )
        self.say(
            f"Temporal dev server on {self.fleet.server.address}, data in {self.data_dir}, "
            f"{self.settings.workers} workers on the ledger {self.ledger_shown}, payments "
            f"at {self.payments_url}"
        )
        with private_environment(self._environment()):
            client = await connect(self.fleet.server.address, "default", runtime=quiet_runtime())
            self.orders = ChaosOrders(
                client, self.deadline, self.say, self._order_started, self._order_closed
            )
            await asyncio.to_thread(self.fleet.start_workers)
            self._show()
            await self._order_through_breakdowns(self.orders, planned)
            self.say("orders done; stopping the workers (a late write in flight still lands)")
            await asyncio.to_thread(self.fleet.stop_workers)
            # The check reads the provider's records: it must see them, not its faults.
            self.fleet.set_provider_faults("")
            report = await self._check(client)
        return self._result(self.orders, report, time.monotonic() - started)

    async def _order_through_breakdowns(
        self, orders: ChaosOrders, planned: list[PlannedOrder]
    ) -> None:
        supervisor = asyncio.create_task(self.monkey.supervise())
        monkey = asyncio.create_task(self.monkey.run())
        closing = asyncio.create_task(orders.place_all(planned, self.settings.concurrency))
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
            for task in (monkey, supervisor, closing):
                task.cancel()
            await asyncio.gather(monkey, supervisor, closing, return_exceptions=True)

    async def _check(self, client: Client) -> CheckReport:
        """Temporal, the ledger and this run's payment provider: the three books agree."""
        ledger = open_ledger(self.ledger_location, read_only=True)
        payments = check_gateway(self.payments_url)
        try:
            return await check_orders(
                client,
                ledger,
                require_closed=True,
                progress=lambda done, total: self.say(f"check: read {done} of {total} histories"),
                payments=payments,
            )
        finally:
            await payments.close()
            ledger.close()

    def _result(self, orders: ChaosOrders, report: CheckReport, seconds: float) -> ChaosResult:
        late, refused, lost = worker_log_counts(self.data_dir)
        provider = provider_log_counts(self.data_dir / "payments.log")
        return ChaosResult(
            orders=self.settings.orders,
            outcomes=orders.outcomes,
            worker_kills=self.monkey.worker_kills,
            server_restarts=self.monkey.server_restarts,
            rolling_restarts=self.monkey.rolling_restarts,
            workers=self.settings.workers,
            ledger=self.ledger_shown,
            repaired=orders.repaired,
            seconds=seconds,
            seed=self.settings.seed,
            report=report,
            data_dir=self.data_dir,
            notes=orders.notes,
            late_writes=late,
            late_writes_refused=refused,
            lost_answers=lost,
            fast_path=self.settings.fast_path,
            provider_faults=self.settings.provider_faults,
            provider_restarts=self.monkey.provider_restarts,
            provider_faults_met=provider,
        )

    def _environment(self) -> dict[str, str]:
        return {
            "TEMPORAL_ADDRESS": self.fleet.server.address,
            "TEMPORAL_NAMESPACE": "default",
            "TEMPORAL_CONFIG_FILE": str(self.data_dir / "no-temporal-profile.toml"),
            "PIZZERIA_DATA_DIR": str(self.data_dir),
            "PIZZERIA_LEDGER": self.ledger_location,
            "PIZZERIA_FAULTS_FILE": str(self.data_dir / "faults.json"),
            "PIZZERIA_FAULTS": self.settings.faults,
            SEED_VARIABLE: str(self.settings.seed),
            "PIZZERIA_DRIVER_SECONDS": "0",
            "PIZZERIA_PAYMENTS_URL": self.payments_url,
        }
