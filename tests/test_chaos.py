"""``pizzeria chaos``: orders through worker kills and a server restart, nothing lost.

The CI-sized run starts its own dev server and worker processes, so this module runs once,
in the default (time-skipping) pass of ``make test``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pizzeria.ledger import open_ledger
from pizzeria.ops.chaos.monkey import breakdown_schedule
from pizzeria.ops.chaos.plan import ChaosSettings, plan_orders
from pizzeria.samples import GOOD_CARD
from tests.helpers import PIZZERIA, run_pizzeria, wait_until
from tests.postgres import PostgresServer


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


def run_chaos(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    process = subprocess.Popen(
        [PIZZERIA, "chaos", *args],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
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
        ChaosSettings(orders=100, worker_kills=3, server_restarts=1, rolling_restarts=0)
    )
    assert schedule == [(20, "kill"), (40, "restart"), (60, "kill"), (80, "kill")]
    few = breakdown_schedule(ChaosSettings(orders=2, worker_kills=3, server_restarts=1))
    assert all(1 <= threshold <= 2 for threshold, _ in few)


def test_the_rolling_restart_comes_late_in_the_run_after_the_server_restart() -> None:
    schedule = breakdown_schedule(ChaosSettings(orders=100, worker_kills=3, server_restarts=1))
    kinds = [kind for _, kind in schedule]
    assert kinds == ["kill", "restart", "kill", "rolling restart", "kill"]
    assert [threshold for threshold, _ in schedule] == [17, 33, 50, 67, 83]


# -- the command ------------------------------------------------------------------------------


@pytest.mark.timeout(330)
@pytest.mark.slow
def test_a_hundred_orders_through_kills_and_a_restart_lose_nothing_and_double_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "chaos"
    done, seconds = run_chaos(
        "--orders", "100", "--seed", "11", "--json", "--data-dir", str(folder), timeout=300
    )
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
    # The proof is on disk, and nothing it started is left running.
    assert (folder / "temporal.db").exists() and (folder / "ledger.db").exists()
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
        assert all("Charged" in log for log in logs)


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
    process = subprocess.Popen(
        [PIZZERIA, "chaos", "--orders", "200", "--data-dir", str(folder), "--json"],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
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
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    assert out == ""  # no summary for an interrupted run
    assert "Traceback" not in err
    assert processes_using(folder) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in started)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--orders", "0"], "--orders"),
        (["--concurrency", "x"], "--concurrency"),
        (["--faults", "refund_customer=explode"], "bad fault"),
        (["--faults", "refund_customer=decline@0.1"], "applies to process_credit_card only"),
        (["--cancel-rate", "2"], "--cancel-rate"),
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
