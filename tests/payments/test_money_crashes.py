"""Exactly once across the wire when something dies in the middle of a money call: a
worker SIGKILLed while the provider works, a provider killed and started again while a
worker waits for it, a call that outlives its timeout and is retried. Each time the
provider's idempotency key makes the retry find the first call's work (or do it, when the
first never did): one hold, one capture, and the check finds nothing wrong.

Each test runs a payment provider of its own (it is killed, or slowed on purpose).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.service import RPCError

from pizzeria.ledger import Ledger, open_ledger
from pizzeria.models import order_ref
from pizzeria.ops.processes import WorkerProcess, dev_server, pizzeria_command
from pizzeria.payments import process
from pizzeria.payments.port import MoneyState
from pizzeria.samples import GOOD_CARD, sample_order
from pizzeria.worker import PAYMENTS_TIMEOUT_SECONDS
from tests.helpers import PIZZERIA, eventually, run_pizzeria, unique_number
from tests.helpers.money_books import CountingGateway, money_of, run_ref
from tests.helpers.stack import stack_env

BILLED = 3500


class OwnProvider:
    """A provider of the test's own, with its faults file; it can be killed and started
    again on the same port, with the same payments."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.faults = folder / "provider-faults.json"
        self.started = process.start(folder / "payments.db", faults_file=self.faults)
        self.url = self.started.url

    def set_faults(self, text: str) -> None:
        temporary = self.faults.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self.faults)

    def restart(self) -> None:
        """SIGKILL (a crash: calls in flight are cut off), then up again where it was."""
        self.started.kill()
        port = int(self.url.rsplit(":", 1)[1])
        self.started = process.start(
            self.folder / "payments.db", port=port, faults_file=self.faults
        )
        assert self.started.url == self.url

    def log(self) -> str:
        return self.started.log_file.read_text(errors="replace")


@pytest.fixture
def own_provider(tmp_path: Path) -> Iterator[OwnProvider]:
    provider = OwnProvider(tmp_path / "payments")
    yield provider
    provider.started.stop()


@pytest.fixture
async def gateway(own_provider: OwnProvider) -> AsyncIterator[CountingGateway]:
    counting = CountingGateway(
        process.LOCAL_SECRET_KEY, own_provider.url, timeout=PAYMENTS_TIMEOUT_SECONDS
    )
    yield counting
    await counting.close()


async def step_started(client: Client, number: str, step: str) -> bool:
    """Whether a worker runs ``step`` of the order now (its pending activity)."""
    try:
        described = await client.get_workflow_handle(f"pizza-workflow-order-{number}").describe()
    except RPCError:  # not started yet
        return False
    return any(
        pending.activity_type.name == step
        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for pending in described.raw_description.pending_activities
    )


# -- a retry after a timeout, a provider restarted mid-call: the worker in this process ------


@pytest.mark.parametrize("operation", ["authorize", "capture"])
async def test_a_call_that_outlives_its_timeout_is_retried_and_done_once(
    worker, start, ledger: Ledger, gateway: CountingGateway, own_provider, operation: str
) -> None:
    # The first call waits past the gateway's timeout; its retry comes while it still runs.
    own_provider.set_faults(f"{operation}=slow/{PAYMENTS_TIMEOUT_SECONDS + 1.5}:1")
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        confirmation = await handle.result()
    money = await money_of(gateway, ledger, await run_ref(handle))
    assert confirmation.status == "SUCCESS"
    assert len(gateway.calls[operation]) >= 2  # timed out once, then asked again
    assert (money.payment.state, money.payment.amount_captured) == (MoneyState.CAPTURED, BILLED)
    assert (money.ledger.charged, money.ledger.billed) == (BILLED, BILLED)


async def test_a_provider_restarted_in_the_middle_of_a_hold_holds_once(
    worker, start, ledger: Ledger, gateway: CountingGateway, own_provider
) -> None:
    own_provider.set_faults("authorize=slow/30:1")  # a hold in flight until the crash
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0))
        await eventually(lambda: "authorize" in gateway.calls, "the hold to be asked for")
        own_provider.set_faults("")
        own_provider.restart()
        confirmation = await handle.result()
    money = await money_of(gateway, ledger, await run_ref(handle))
    assert confirmation.status == "SUCCESS"
    assert len(gateway.calls["authorize"]) >= 2
    assert (money.payment.state, money.payment.amount_captured) == (MoneyState.CAPTURED, BILLED)
    assert money.ledger.charged == money.ledger.billed == BILLED


# -- a worker process SIGKILLed while the provider works --------------------------------------


def start_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    worker = WorkerProcess([*pizzeria_command(), "worker"], log, env)
    worker.start()
    worker.wait_until_polling()
    return worker


def place(env: dict[str, str], number: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PIZZERIA, "order", "--prep-seconds", "0", "--json", "--order-number", number],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("operation", "step"), [("authorize", "process_credit_card"), ("capture", "send_bill")]
)
async def test_a_worker_killed_in_the_middle_of_a_money_call_leaves_one_payment(
    tmp_path: Path,
    own_provider: OwnProvider,
    gateway: CountingGateway,
    operation: str,
    step: str,
) -> None:
    """Worker A asks the provider (slowed to 2.5 s, under the worker's 3 s timeout) and is
    SIGKILLed while it works; the provider finishes the work and keeps its answer under the
    key. Worker B's retry, once A's attempt timed out, gets that answer: one payment, held
    and captured once, and `pizzeria check` agrees."""
    number = unique_number("KILLPAY")
    own_provider.set_faults(f"{operation}=slow/2.5:1")
    ledger_file = tmp_path / "ledger.db"
    with dev_server(None, headless=True) as server:
        env = stack_env(
            tmp_path, TEMPORAL_ADDRESS=server.address, PIZZERIA_PAYMENTS_URL=own_provider.url
        )
        first = start_worker(env, tmp_path / "a.log")
        try:
            placing = place(env, number)
            watching = await Client.connect(server.address)  # no codec: describe only
            await eventually(
                lambda: step_started(watching, number, step), f"{step} to start", 60, 0.1
            )
            # Its call reached the provider, which works on it (2.5 s): kill A now. A fixed
            # sleep here raced with A's own start on a busy machine (no call yet: no replay).
            await eventually(
                lambda: "(injected slow)" in own_provider.log(),
                f"worker A's {operation} to reach the provider",
                60,
                0.05,
            )
            first.kill()
        finally:
            first.stop()
        second = start_worker(env, tmp_path / "b.log")
        try:
            out, errors = placing.communicate(timeout=120)
        finally:
            second.stop()
        assert placing.returncode == 0, out + errors
        assert json.loads(out)["status"] == "COMPLETED"
        check = run_pizzeria("check", "--json", "--closed", env=env)
        run_id = json.loads(run_pizzeria("status", number, "--json", env=env).stdout)["run_id"]
    assert check.returncode == 0, check.stdout + check.stderr
    ledger = open_ledger(ledger_file, read_only=True)
    try:
        money = await money_of(gateway, ledger, order_ref(f"pizza-workflow-order-{number}", run_id))
    finally:
        ledger.close()
    assert (money.payment.state, money.payment.amount_captured) == (MoneyState.CAPTURED, BILLED)
    assert money.ledger.charged == money.ledger.billed == BILLED
    assert money.ledger.rows["process_credit_card"] == money.ledger.rows["send_bill"] == 1
    # Worker B's call found worker A's work under the same key.
    assert "replayed" in own_provider.log(), own_provider.log()[-2000:]
