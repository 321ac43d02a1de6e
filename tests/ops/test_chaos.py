"""``pizzeria chaos``: orders through worker kills and a server restart, nothing lost.

The CI-sized run starts its own dev server and worker processes, so this module runs once,
in the default (time-skipping) pass of ``make test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from pizzeria.ledger import open_ledger
from pizzeria.models import order_ref
from pizzeria.ops.chaos.fleet import ChaosFleet
from pizzeria.ops.chaos.monkey import breakdown_schedule
from pizzeria.ops.chaos.orders import ChaosOrders
from pizzeria.ops.chaos.plan import (
    DEFAULT_PROVIDER_FAULTS,
    SLOWER_THAN_THE_WORKER,
    ChaosSettings,
    PlannedOrder,
    plan_orders,
)
from pizzeria.ops.chaos.result import ChaosResult, provider_line, provider_log_counts
from pizzeria.payments.port import ORDER_REF, MoneyState, Payment
from pizzeria.samples import GOOD_CARD, sample_order
from tests.helpers import PIZZERIA, eventually, failure_of, run_pizzeria, wait_until
from tests.helpers.postgres import PostgresServer


@pytest.fixture(autouse=True)
def default_pass_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--workflow-environment") == "local":
        pytest.skip("starts its own dev server and workers: runs once, in the default pass")


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PIZZERIA_")}


def processes_using(folder: Path) -> list[int]:
    """Our user's processes whose command line or environment mentions ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if str(folder).encode() in text:
            found.append(int(entry.name))
    return found


def chaos_process(*args: str) -> subprocess.Popen[str]:
    """`pizzeria chaos ARGS...` started, its output piped, nothing on its stdin.

    It starts as a terminal's foreground command does, with SIGINT at its default, even
    when these tests run with SIGINT ignored (a background job of a non-interactive shell:
    a child inherits the ignore, and a Python program that starts with SIGINT ignored never
    sees a Ctrl-C). A handler of ours, unlike an ignore, is reset to the default at exec.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [PIZZERIA, "chaos", *args],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def run_chaos(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    process = chaos_process(*args)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # so that it stops its server and workers
        out, err = process.communicate(timeout=60)
        raise AssertionError(f"chaos took longer than {timeout} s:\n{err[-3000:]}") from None
    done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done, time.monotonic() - started


# -- the plan --------------------------------------------------------------------------------


def test_the_same_seed_plans_the_same_orders_and_another_seed_others() -> None:
    first = plan_orders(ChaosSettings(orders=50, seed=3))
    assert first == plan_orders(ChaosSettings(orders=50, seed=3))
    assert first != plan_orders(ChaosSettings(orders=50, seed=4))


def test_the_plan_mixes_cards_pickups_cancels_and_short_waits() -> None:
    planned = plan_orders(ChaosSettings(orders=300, seed=5))
    orders = [p.order for p in planned]
    assert len({o.order_number for o in orders}) == 300
    bad = sum(
        o.credit_card_info.number != GOOD_CARD and len(o.credit_card_info.number) != 16
        for o in orders
    )
    assert 0 < bad < 100
    assert 30 < sum(not o.is_delivery for o in orders) < 150
    assert 10 < sum(p.cancel_after is not None for p in planned) < 60
    assert all(o.settings is not None and o.settings.prep_seconds <= 1.5 for o in orders)
    assert {o.settings.step_attempts for o in orders if o.settings} == {1, 3, 10}
    assert all(o.settings is not None and o.settings.compensation_attempts == 10 for o in orders)


def test_the_breakdowns_are_spread_over_the_run_with_the_restart_mid_way() -> None:
    schedule = breakdown_schedule(
        ChaosSettings(
            orders=100, worker_kills=3, server_restarts=1, rolling_restarts=0, provider_restarts=0
        )
    )
    assert schedule == [(20, "kill"), (40, "restart"), (60, "kill"), (80, "kill")]
    few = breakdown_schedule(ChaosSettings(orders=2, worker_kills=3, server_restarts=1))
    assert all(1 <= threshold <= 2 for threshold, _ in few)


def test_the_rolling_restart_comes_late_in_the_run_after_the_server_restart() -> None:
    schedule = breakdown_schedule(
        ChaosSettings(orders=100, worker_kills=3, server_restarts=1, provider_restarts=0)
    )
    kinds = [kind for _, kind in schedule]
    assert kinds == ["kill", "restart", "kill", "rolling restart", "kill"]
    assert [threshold for threshold, _ in schedule] == [17, 33, 50, 67, 83]


def test_the_provider_restarts_come_on_their_own_schedule_and_leave_the_others_in_place() -> None:
    without = breakdown_schedule(ChaosSettings(orders=100, provider_restarts=0))
    once = breakdown_schedule(ChaosSettings(orders=100, provider_restarts=1))
    assert [b for b in once if b[1] != "provider restart"] == without
    assert [b for b in once if b[1] == "provider restart"] == [(25, "provider restart")]
    twice = breakdown_schedule(ChaosSettings(orders=80, provider_restarts=2))
    assert [b for b in twice if b[1] == "provider restart"] == [
        (10, "provider restart"),
        (50, "provider restart"),
    ]
    assert [threshold for threshold, _ in twice] == sorted(t for t, _ in twice)


def test_the_provider_log_says_which_faults_struck_and_the_summary_shows_them(
    tmp_path: Path,
) -> None:
    log = tmp_path / "payments.log"
    log.write_text(
        "2026-01-01 10:00:00,001 POST /v1/payment_intents -> 200 created pi_1 requires_capture\n"
        "2026-01-01 10:00:00,002 POST /v1/payment_intents -> 503 injected api_error\n"
        "2026-01-01 10:00:00,003 POST /v1/payment_intents/pi_1/capture -> 200 captured pi_1 "
        "succeeded, then the connection closed unanswered\n"
        "2026-01-01 10:00:00,004 POST /v1/refunds -> connection reset (injected refuse)\n"
        "2026-01-01 10:00:00,005 POST /v1/refunds -> 500 injected api_error\n"
    )
    met = provider_log_counts(log)
    assert met == {"errors": 2, "lost_answers": 1, "refused_connections": 1}
    assert provider_log_counts(tmp_path / "missing.log") == dict.fromkeys(met, 0)
    result = ChaosResult(
        orders=1, outcomes=Counter(COMPLETED=1), worker_kills=0, server_restarts=0,
        repaired=0, seconds=1.0, seed=1, report=None, data_dir=None,
        provider_faults="capture=lost", provider_restarts=2, provider_faults_met=met,
    )  # fmt: skip
    shown = provider_line(result)
    assert "faults on (2 5xx answers, 1 answers lost, 1 connections refused)" in shown
    assert "2 provider restarts" in shown
    assert result.to_json()["provider_faults_met"] == met
    off = ChaosResult(
        orders=1, outcomes=Counter(), worker_kills=0, server_restarts=0, repaired=0,
        seconds=1.0, seed=1, report=None, data_dir=None,
    )  # fmt: skip
    assert provider_line(off).startswith("Payment provider: faults off; 0 provider restarts")


# -- what chaos found ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_hold_the_provider_makes_after_the_compensation_looked_is_released_too(
    worker: Any, start: Any, provider_faults: Any, gateway: Any, ledger: Any
) -> None:
    """Found by chaos: the card step gives up on the provider's answer (3 s) while the
    provider is still making the hold. The compensation settles the hold's key (the
    provider answers 409 while the hold is being made), and releases the hold it made."""
    provider_faults("authorize=slow/8")  # the hold is made 8 s after it was asked for
    async with worker():
        handle = await start(sample_order(card=GOOD_CARD, prep_seconds=0, step_attempts=1))
        await failure_of(handle)  # the card step gave up at 3 s; the saga undid the order
    ref = order_ref(handle.id, (await handle.describe()).run_id)

    async def payments_of_the_run() -> list[Payment]:
        return [p async for p in gateway.iter_payments() if p.metadata.get(ORDER_REF) == ref]

    made = await eventually(payments_of_the_run, "the provider to make the late hold", 30, 0.5)
    assert [p.amount for p in made] == [3500]

    async def none_held() -> bool:
        return all(p.state != MoneyState.HELD for p in await payments_of_the_run())

    await eventually(none_held, "the late hold to be released", 20, 0.5)


# -- torn down with a cancel Update in flight -------------------------------------------------


class UpdateInFlight:
    """Chaos's orders on a client whose Update calls reach the wire and never get an answer
    (as while the server restarts): the SDK's own Update code runs, up to the call that
    hangs. No server is needed: the client is lazy and nothing else is asked of it."""

    def __init__(self, client: Client) -> None:
        self.sent = asyncio.Event()  # an Update is in flight
        self.handle: WorkflowHandle[Any, Any] = client.get_workflow_handle("chaos-teardown")
        self.orders = ChaosOrders(
            client, time.monotonic() + 600, lambda text: None, lambda: None, lambda s: None
        )

    async def never_answered(self, *args: Any, **kwargs: Any) -> Any:
        self.sent.set()
        await asyncio.Event().wait()


@pytest.fixture
async def in_flight(monkeypatch: pytest.MonkeyPatch) -> UpdateInFlight:
    client = await Client.connect("127.0.0.1:1", lazy=True)
    harness = UpdateInFlight(client)
    service = client.workflow_service
    monkeypatch.setattr(service, "update_workflow_execution", harness.never_answered)

    async def started(order: Any) -> WorkflowHandle[Any, Any]:
        return harness.handle

    monkeypatch.setattr(harness.orders, "_start", started)
    return harness


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What asyncio reports instead of raising (a task whose error nobody retrieved: the
    traceback an interrupted run printed), collected for the test."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


def cancelled_at_once(order_number: str) -> PlannedOrder:
    return PlannedOrder(sample_order(order_number), cancel_after=0.0, cancel_by_update=True)


async def torn_down(placing: asyncio.Task[None]) -> None:
    """As chaos's run stops its orders on Ctrl-C: cancel, wait, and let go of every task."""
    placing.cancel()
    await asyncio.gather(placing, return_exceptions=True)
    del placing
    gc.collect()  # a task nobody retrieved reports itself as it is collected


async def test_ctrl_c_after_an_order_closed_under_its_cancel_update_leaves_no_task_behind(
    in_flight: UpdateInFlight, loop_errors: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order closes while its cancel Update is in flight, and Ctrl-C comes while chaos
    waits for that Update's answer: the Update's task must end cancelled, not with an error
    nobody retrieves (printed as a traceback after Ctrl-C)."""
    closed = asyncio.Event()

    async def closed_under_the_update(handle: Any) -> str:
        await in_flight.sent.wait()
        closed.set()  # from here on, in the same step, chaos waits for the Update's answer
        return "COMPLETED"

    monkeypatch.setattr(in_flight.orders, "_wait_closed", closed_under_the_update)
    placing = asyncio.create_task(in_flight.orders.place_all([cancelled_at_once("TD-1")], 1))
    await closed.wait()
    await torn_down(placing)
    assert loop_errors == []
    assert in_flight.orders.notes == []  # an interrupted Update is no failed cancel


async def test_ctrl_c_while_an_order_is_open_stops_its_cancel_update_too(
    in_flight: UpdateInFlight, loop_errors: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the order is still open: its cancel Update in flight is stopped with it,
    not awaited (the server may be down for good) and not reported as a failed cancel."""

    async def still_open(handle: Any) -> str:
        await asyncio.Event().wait()
        raise AssertionError("never closes")

    monkeypatch.setattr(in_flight.orders, "_wait_closed", still_open)
    placing = asyncio.create_task(in_flight.orders.place_all([cancelled_at_once("TD-2")], 1))
    await in_flight.sent.wait()
    await torn_down(placing)
    assert loop_errors == []
    assert in_flight.orders.notes == [] and in_flight.orders.outcomes == {}


async def test_a_repair_update_in_flight_does_not_swallow_the_ctrl_c(
    in_flight: UpdateInFlight, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parked order's repair Update in flight at Ctrl-C: the repair stops (it must not
    take the interruption for a failed repair and follow the order on)."""

    async def parked(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"needs_attention": True}

    monkeypatch.setattr(in_flight.handle, "query", parked)
    repairing = asyncio.create_task(in_flight.orders._repair_if_parked(in_flight.handle))
    await in_flight.sent.wait()
    repairing.cancel()
    await asyncio.gather(repairing, return_exceptions=True)
    assert repairing.cancelled()
    assert in_flight.orders.notes == [] and in_flight.orders.repaired == 0


# -- the command ------------------------------------------------------------------------------


@pytest.mark.timeout(330)
@pytest.mark.slow
def test_a_hundred_orders_through_kills_and_a_restart_lose_nothing_and_double_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "chaos"
    done, seconds = run_chaos(
        "--orders", "100", "--seed", "11", "--json", "--data-dir", str(folder),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)  # stdout is the JSON object alone
    assert summary["violations"] == 0
    assert summary["orders"] == 100 and summary["open"] == 0
    assert summary["completed"] + summary["failed"] + summary["cancelled"] == 100
    assert summary["completed"] > 50 and summary["failed"] > 0 and summary["cancelled"] > 0
    assert summary["worker_kills"] >= 3 and summary["server_restarts"] >= 1
    assert summary["rolling_restarts"] == 1 and summary["workers"] == 2
    assert summary["ledger"] == str(folder / "ledger.db")
    assert summary["late_writes"] > 0  # steps that wrote after their timeout, and lost
    assert summary["lost_answers"] > 0  # steps that took effect unheard, then retried or undone
    assert set(summary) >= {
        "orders",
        "completed",
        "failed",
        "cancelled",
        "worker_kills",
        "server_restarts",
        "violations",
        "seconds",
    }
    assert summary["seconds"] <= seconds
    assert "killed worker" in done.stderr and "restarted the Temporal dev server" in done.stderr
    assert "rolling restart: worker 1" in done.stderr
    assert "\u2501" not in done.stderr  # a pipe gets plain lines, never a drawn bar
    # The payment provider met its faults at random, and was killed and started again.
    assert summary["provider_restarts"] == 1
    # All of its faults, the answer slower than the worker's timeout included.
    assert summary["provider_faults"] == DEFAULT_PROVIDER_FAULTS
    assert SLOWER_THAN_THE_WORKER in DEFAULT_PROVIDER_FAULTS.split(",")
    assert "killed the payment provider" in done.stderr
    assert "restarted the payment provider on the same port" in done.stderr
    met = summary["provider_faults_met"]
    assert met["errors"] > 0 and met["lost_answers"] + met["refused_connections"] > 0
    # The proof is on disk, and nothing it started is left running.
    assert (folder / "temporal.db").exists() and (folder / "ledger.db").exists()
    assert (folder / "payments.db").exists()
    assert processes_using(folder) == []


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_sixty_fast_path_orders_through_kills_and_a_restart_lose_nothing_and_double_nothing(
    tmp_path: Path,
) -> None:
    """The fast path's local activities, retried by the worker that holds them and run again
    by another worker after a kill, keep the same promises as the regular path."""
    folder = tmp_path / "chaos"
    done, _ = run_chaos(
        "--fast-path", "--orders", "60", "--seed", "14", "--json", "--data-dir", str(folder),
        timeout=200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    assert summary["fast_path"] is True
    assert summary["violations"] == 0 and summary["open"] == 0
    assert summary["completed"] + summary["failed"] + summary["cancelled"] == 60
    assert summary["completed"] > 30 and summary["failed"] > 0
    assert summary["worker_kills"] >= 3 and summary["server_restarts"] >= 1
    assert processes_using(folder) == []


def test_chaos_orders_carry_the_fast_path_setting_when_asked() -> None:
    assert not any(p.order.settings and p.order.settings.fast_path for p in plan_orders(
        ChaosSettings(orders=5)
    ))  # fmt: skip
    planned = plan_orders(ChaosSettings(orders=5, fast_path=True))
    assert all(p.order.settings and p.order.settings.fast_path for p in planned)


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_three_workers_on_one_postgresql_ledger_through_kills_and_restarts_lose_nothing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    with postgres_server.database() as url:
        done, _ = run_chaos(
            *("--orders", "100", "--workers", "3", "--seed", "12", "--json"),
            *("--ledger", url, "--data-dir", str(tmp_path / "chaos")),
            timeout=360,
        )
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        summary: dict[str, Any] = json.loads(done.stdout)
        assert summary["violations"] == 0 and summary["open"] == 0
        assert summary["completed"] + summary["failed"] + summary["cancelled"] == 100
        assert summary["workers"] == 3 and summary["ledger"] == url
        assert summary["worker_kills"] >= 3 and summary["rolling_restarts"] == 1
        # Every worker was killed or restarted, and all three wrote to the one ledger.
        assert all(f"rolling restart: worker {index}" in done.stderr for index in range(3))
        assert not (tmp_path / "chaos" / "ledger.db").exists()
        ledger = open_ledger(url, read_only=True)
        try:
            assert len({effect["order_ref"] for effect in ledger.effects()}) > 50
        finally:
            ledger.close()
        logs = [(tmp_path / "chaos" / f"worker-{index}.log").read_text() for index in range(3)]
        assert all("Held " in log for log in logs)  # each worker held a card


def test_a_ledger_that_already_holds_orders_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    used = tmp_path / "used.db"
    open_ledger(used).close()
    done = run_pizzeria("chaos", "--ledger", str(used), env=environment(), timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "already holds a ledger" in done.stderr


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_server_and_every_worker_it_started(tmp_path: Path) -> None:
    folder = tmp_path / "chaos"
    process = chaos_process("--orders", "200", "--data-dir", str(folder), "--json")
    try:

        def server_and_two_workers_up() -> bool:
            assert process.poll() is None, process.communicate()
            return len(processes_using(folder)) >= 3

        wait_until(server_and_two_workers_up, "chaos to start its processes", seconds=60)
        time.sleep(2)  # orders in flight
        started = processes_using(folder)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # it hung: leave nothing behind for the next tests
            process.kill()
            process.communicate()
            for pid in processes_using(folder):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == 130, err[-2000:]
    assert out == ""  # no summary for an interrupted run
    assert "Traceback" not in err
    assert processes_using(folder) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in started)


def test_a_dev_server_that_dies_on_its_own_ends_the_run_at_once(tmp_path: Path) -> None:
    """Not a planned restart: the orders would wait for it until --timeout (15 minutes),
    the server left a zombie. The run stops, saying so, and stops everything else."""
    folder = tmp_path / "chaos"
    process = chaos_process(
        *("--orders", "200", "--server-restarts", "0", "--data-dir", str(folder), "--json")
    )
    try:

        def dev_server_pid() -> int | None:
            assert process.poll() is None, process.communicate()
            for pid in processes_using(folder):
                with contextlib.suppress(OSError):
                    if b"start-dev" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return pid
            return None

        # The server, the provider and both workers: the orders are being placed.
        wait_until(lambda: len(processes_using(folder)) >= 4, "chaos to start", seconds=60)
        time.sleep(2)
        server = dev_server_pid()
        assert server is not None
        os.kill(server, signal.SIGKILL)
        _, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
            for pid in processes_using(folder):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == 1, err[-2000:]
    assert "the Temporal dev server exited on its own" in err, err[-2000:]
    assert processes_using(folder) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--orders", "0"], "--orders"),
        (["--concurrency", "x"], "--concurrency"),
        (["--faults", "refund_customer=explode"], "bad fault"),
        (["--faults", "refund_customer=decline@0.1"], "applies to process_credit_card only"),
        (["--cancel-rate", "2"], "--cancel-rate"),
        (["--provider-faults", "capture=explode"], "--provider-faults"),
        (["--provider-faults", "capture=error/404"], "5xx status"),
        (["--provider-restarts", "-1"], "--provider-restarts"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = run_pizzeria("chaos", *args, env=environment(), timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr


def test_a_data_dir_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").write_text("someone else's")
    done = run_pizzeria("chaos", "--data-dir", str(tmp_path), env=environment(), timeout=60)
    assert done.returncode == 2 and "is not empty" in done.stderr
    assert (tmp_path / "ledger.db").read_text() == "someone else's"


class SlowStartWorker:
    """A worker process that takes a while to start (a Popen on a busy machine)."""

    def __init__(self) -> None:
        self.process: object | None = "the previous one, exited"
        self.running = False
        self.starts = 0

    def start(self) -> None:
        time.sleep(0.3)
        self.starts += 1
        self.running = True


def test_a_worker_started_again_while_the_supervisor_looks_is_started_once(tmp_path: Path):
    """A rolling restart starts its worker on a thread; the supervisor, looking for dead
    workers meanwhile, once saw it neither resting nor running and started it too: two
    processes for one worker, the first left running after the run."""
    fleet = ChaosFleet(tmp_path, workers=1)
    worker = SlowStartWorker()
    fleet.workers = [worker]  # type: ignore[list-item]
    fleet.resting.add(0)  # stopped by the rolling restart, about to start again
    restart = threading.Thread(target=fleet.start_worker, args=(0,))
    restart.start()
    time.sleep(0.1)  # the restart is in the middle of starting it
    fleet.restart_dead_workers()
    restart.join()
    assert worker.starts == 1 and fleet.unexpected_exits == 0


def test_the_summary_says_when_the_orders_ran_on_the_fast_path():
    from io import StringIO

    from rich.console import Console

    from pizzeria.ops.chaos.result import ChaosResult, print_chaos_summary

    for fast_path, said in (
        (False, "Chaos: 3 orders in 1.0 s"),
        (True, "3 orders on the fast path"),
    ):
        result = ChaosResult(
            orders=3,
            outcomes=Counter({"COMPLETED": 3}),
            worker_kills=0,
            server_restarts=0,
            repaired=0,
            seconds=1.0,
            seed=7,
            report=None,
            data_dir=None,
            fast_path=fast_path,
        )
        text = StringIO()
        print_chaos_summary(result, Console(file=text, width=300))
        assert said in text.getvalue(), text.getvalue()
