"""Many workers, one ledger: a worker stopped with SIGTERM hands over cleanly, and orders
placed at once against three workers on PostgreSQL share the stock without a slip.

These tests start their own dev server and ``pizzeria worker`` processes, so they run once,
in the default (time-skipping) pass.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import menu
from pizzeria.client import outcome_of, start_order
from pizzeria.ledger import open_ledger
from pizzeria.models import (
    COMPENSATE_REVERT_INVENTORY,
    OUT_OF_STOCK_ERROR,
    STEP_NOTIFY_DELIVERY_DRIVER,
    STEP_PROCESS_CREDIT_CARD,
    workflow_id_for,
)
from pizzeria.ops.processes import WorkerProcess, dev_server, pizzeria_command, worker_process
from pizzeria.samples import sample_order
from pizzeria.temporal.connection import connect, connect_config
from tests.helpers import PIZZERIA, eventually, run_pizzeria
from tests.helpers.postgres import PostgresServer
from tests.helpers.stack import stack_env

CODEC_KEY = base64.b64encode(bytes(range(32, 64))).decode()


@pytest.fixture(autouse=True)
def default_pass_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--workflow-environment") == "local":
        pytest.skip("starts its own dev server and workers: runs once, in the default pass")


def started_worker(env: dict[str, str], log: Path, *args: str) -> WorkerProcess:
    worker = WorkerProcess([*pizzeria_command(), "worker", *args], log, env)
    worker.start()
    worker.wait_until_polling()
    return worker


async def step_running(handle: WorkflowHandle[Any, Any], step: str) -> bool:
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:  # not started yet
            return False
        raise
    return any(
        pending.activity_type.name == step
        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for pending in description.raw_description.pending_activities
    )


async def activity_events(handle: WorkflowHandle[Any, Any], step: str) -> list[Any]:
    """The step's started and closing events, in order (scheduled ids tie them to it)."""
    scheduled: set[int] = set()
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == step:
                scheduled.add(event.event_id)
            continue
        kind = event.WhichOneof("attributes") or ""
        name = kind.removeprefix("activity_task_").removesuffix("_event_attributes")
        if name in ("started", "completed", "failed", "timed_out"):
            attributes = getattr(event, kind)
            if attributes.scheduled_event_id in scheduled:
                found.append((name, attributes))
    return found


async def place_in_background(env: dict[str, str], number: str) -> asyncio.subprocess.Process:
    """``pizzeria order NUMBER --json`` (no kitchen wait), as a user runs it, not waited for."""
    return await asyncio.create_subprocess_exec(
        *(PIZZERIA, "order", "--order-number", number, "--prep-seconds", "0", "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


async def stopped(placing: asyncio.subprocess.Process, *workers: WorkerProcess | None) -> None:
    """What a test left running: the order command, then the workers."""
    if placing.returncode is None:
        placing.kill()
        await placing.wait()
    for worker in workers:
        if worker is not None:
            worker.stop()


async def at_its_driver_search(
    address: str, number: str, worker: WorkerProcess
) -> WorkflowHandle[Any, Any]:
    """The order's handle, once a worker runs its driver search."""
    client = await Client.connect(address)
    handle = client.get_workflow_handle(workflow_id_for(number))
    await eventually(
        lambda: step_running(handle, STEP_NOTIFY_DELIVERY_DRIVER),
        lambda: f"the driver search to run; the worker said:\n{worker.output()[-3000:]}",
        seconds=60,
        interval=0.1,
    )
    return handle


@pytest.mark.timeout(180)
async def test_a_worker_stopped_with_sigterm_finishes_its_step_and_the_order_completes(
    tmp_path: Path,
) -> None:
    # The driver search takes 4 one-second rounds (and finds nobody: a deterministic
    # length), so the worker is stopped while the step runs.
    with dev_server(None, headless=True) as server:
        env = stack_env(
            tmp_path,
            TEMPORAL_ADDRESS=server.address,
            PIZZERIA_DRIVER_SECONDS="1",
            PIZZERIA_DRIVER_ROUNDS="4",
            PIZZERIA_DRIVER_PROBABILITY="0",
        )
        first = started_worker(env, tmp_path / "worker-1.log", "--graceful-shutdown", "20")
        second: WorkerProcess | None = None
        placing = await place_in_background(env, "GRACE-1")
        try:
            handle = await at_its_driver_search(server.address, "GRACE-1", first)
            first.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            # A rolling restart: the next worker comes up while the first one drains.
            second = started_worker(env, tmp_path / "worker-2.log")
            code = await asyncio.to_thread(first.process.wait, 40)  # type: ignore[union-attr]
            out, err = await asyncio.wait_for(placing.communicate(), timeout=60)
        finally:
            await stopped(placing, first, second)
        assert code == 0, first.output()
        assert "Stopping: no new work" in first.output()
        assert "Worker stopped." in first.output()
        outcome = json.loads(out)
        assert placing.returncode == 0, err.decode()
        assert outcome["status"] == "COMPLETED" and outcome["amount"] == 3500
        # The step ran once, on the stopped worker, and that worker reported its end.
        events = await activity_events(handle, STEP_NOTIFY_DELIVERY_DRIVER)
        assert [name for name, _ in events] == ["started", "completed"], events
        started, completed = events[0][1], events[1][1]
        assert started.attempt == 1
        assert started.identity.startswith(f"{first.pid}@")
        assert completed.identity.startswith(f"{first.pid}@")
        check = run_pizzeria("check", "--closed", "--json", "--address", server.address, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert json.loads(check.stdout)["violations"] == []


@pytest.mark.timeout(180)
async def test_a_second_sigterm_stops_a_draining_worker_at_once_and_the_order_still_completes(
    tmp_path: Path,
) -> None:
    # The driver search takes 40 rounds of a second, far longer than the test waits, and
    # the worker may drain for 600 s: only the second signal can end it while it runs.
    with dev_server(None, headless=True) as server:
        env = stack_env(tmp_path, TEMPORAL_ADDRESS=server.address, PIZZERIA_DRIVER_PROBABILITY="1")
        slow = {**env, "PIZZERIA_DRIVER_SECONDS": "1", "PIZZERIA_DRIVER_ROUNDS": "40"}
        first = started_worker(slow, tmp_path / "worker-1.log", "--graceful-shutdown", "600")
        second: WorkerProcess | None = None
        placing = await place_in_background(env, "ATONCE-1")
        try:
            handle = await at_its_driver_search(server.address, "ATONCE-1", first)
            first.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            await eventually(
                lambda: "Stopping: no new work" in first.output(),
                lambda: f"the worker to drain; it said:\n{first.output()[-3000:]}",
            )
            assert first.running  # it waits for the driver search
            first.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            try:
                code = await asyncio.to_thread(first.process.wait, 60)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pytest.fail(f"the second SIGTERM did not stop the worker:\n{first.output()}")
            # The step it cut short is given to the next worker (a quick driver search)
            # once its heartbeat is overdue, and the order completes.
            second = started_worker(env, tmp_path / "worker-2.log")
            out, err = await asyncio.wait_for(placing.communicate(), timeout=90)
        finally:
            await stopped(placing, first, second)
        assert code == 128 + signal.SIGTERM, first.output()
        assert "Stopped at once" in first.output()
        assert "Worker stopped." not in first.output()
        assert placing.returncode == 0, err.decode()
        outcome = json.loads(out)
        assert outcome["status"] == "COMPLETED" and outcome["amount"] == 3500, outcome
        # The cut-short attempt left no completion: the second attempt, on the second
        # worker, is the one that ended the step.
        events = await activity_events(handle, STEP_NOTIFY_DELIVERY_DRIVER)
        assert [name for name, _ in events] == ["started", "completed"], events
        assert events[0][1].attempt == 2
        assert events[1][1].identity.startswith(f"{second.pid}@")


PROFILE = """
[profile.cluster]
address = "{address}"
namespace = "other"

[profile.cluster.tls]
# A Temporal cluster would have TLS (an API key turns it on by default); the dev server
# has none, and ignores the key.
disabled = true
"""
API_KEY = "key-of-the-pizzeria-chain"


def cluster_env(folder: Path, address: str) -> dict[str, str]:
    """A user's environment with a TOML profile and an API key, and no TEMPORAL_ADDRESS."""
    profile = folder / "temporal.toml"
    profile.write_text(PROFILE.format(address=address))
    return stack_env(
        folder,
        TEMPORAL_CONFIG_FILE=str(profile),
        TEMPORAL_PROFILE="cluster",
        TEMPORAL_API_KEY=API_KEY,
    )


def test_the_profile_and_the_api_key_reach_the_client_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cluster_env(tmp_path, "temporal.example:7233").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    assert connect_config() == {
        "target_host": "temporal.example:7233",
        "namespace": "other",
        "api_key": API_KEY,
        "tls": False,
    }
    # Without the profile's TLS section, an API key turns TLS on, as Temporal Cloud needs.
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.delenv("TEMPORAL_PROFILE")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "cloud.example:7233")
    assert connect_config()["tls"] is True and connect_config()["api_key"] == API_KEY


@pytest.mark.timeout(240)
async def test_every_command_connects_through_a_profile_to_another_namespace(
    tmp_path: Path,
) -> None:
    with dev_server(None, headless=True, namespaces=["other"]) as server:
        env = cluster_env(tmp_path, server.address)
        assert "TEMPORAL_ADDRESS" not in env
        with worker_process(env, log=tmp_path / "worker.log"):

            def pizzeria(*args: str) -> subprocess.CompletedProcess[str]:
                return run_pizzeria(*args, env=env, timeout=90)

            placed = pizzeria("order", "--order-number", "PROFILE-1", "--prep-seconds", "0")
            assert placed.returncode == 0 and "COMPLETED" in placed.stdout, placed.stderr
            listed = pizzeria("orders", "--json")
            rows = json.loads(listed.stdout)["orders"]
            assert [row["order_number"] for row in rows] == ["PROFILE-1"]
            timeline = pizzeria("status", "PROFILE-1")
            assert timeline.returncode == 0 and "send_bill" in timeline.stdout
            cancel = pizzeria("cancel", "PROFILE-1")
            assert "already closed" in cancel.stderr  # found it, in namespace other
            check = pizzeria("check", "--closed", "--json")
            assert check.returncode == 0 and json.loads(check.stdout)["orders"]["completed"] == 1
            doctor = pizzeria("doctor", "--json")
            assert doctor.returncode == 0, doctor.stdout
            temporal = json.loads(doctor.stdout)["checks"][0]["detail"]
            assert temporal == f"{server.address}, namespace other (no TLS, API key set)"
        # An API key without the profile's `tls = false` turns TLS on, which a dev server
        # does not speak: said so, with the variable that turns it off.
        plain = {k: v for k, v in env.items() if not k.startswith("TEMPORAL_")}
        plain.update(TEMPORAL_ADDRESS=server.address, TEMPORAL_API_KEY=API_KEY)
        refused = run_pizzeria("orders", env=plain, timeout=90)
        assert refused.returncode == 1, refused.stdout
        assert refused.stderr == (
            f"error: cannot reach Temporal at {server.address} (TLS asked, and the server "
            "answered without it); for a server without TLS (the dev server), set "
            "TEMPORAL_TLS=false\n"
        )
        client = await Client.connect(server.address, namespace="other")
        await client.get_workflow_handle(workflow_id_for("PROFILE-1")).describe()
        elsewhere = await Client.connect(server.address, namespace="default")
        with pytest.raises(RPCError) as not_there:
            await elsewhere.get_workflow_handle(workflow_id_for("PROFILE-1")).describe()
        assert not_there.value.status == RPCStatusCode.NOT_FOUND


def test_a_broken_profile_is_one_line_for_every_command(tmp_path: Path) -> None:
    env = cluster_env(tmp_path, "127.0.0.1:1")
    env["TEMPORAL_PROFILE"] = "nowhere"
    for args in (("orders",), ("worker",), ("status", "X1"), ("check",)):
        done = run_pizzeria(*args, env=env, timeout=60)
        assert done.returncode in (1, 2), (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert "profile nowhere" in line and "Profile 'nowhere' not found" in line, args
    env["TEMPORAL_CONFIG_FILE"] = str(tmp_path / "no-such.toml")  # a typo in its name
    done = run_pizzeria("orders", env=env, timeout=60)
    assert done.returncode in (1, 2) and done.stderr == (
        f"error: cannot read the Temporal client config ({tmp_path / 'no-such.toml'}, profile "
        "nowhere): there is no such file (TEMPORAL_CONFIG_FILE)\n"
    ), done.stderr


def test_worker_scale_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    env = stack_env(tmp_path, TEMPORAL_ADDRESS="127.0.0.1:1")
    for args in (
        ("--max-concurrent-activities", "0"),
        ("--max-concurrent-workflow-tasks", "1"),
        ("--max-pollers", "0"),
        ("--graceful-shutdown", "-1"),
    ):
        done = run_pizzeria("worker", *args, env=env, timeout=30)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
        assert "Traceback" not in done.stderr


# -- two hundred orders at once, three workers, one PostgreSQL ledger ----------------------

RUSH_ORDERS = 200
RUSH_CAPACITY = 80  # orders the stock can serve


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_two_hundred_orders_at_once_on_three_workers_share_the_stock_exactly(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    need = menu.ingredients_for(sample_order().items)
    # Enough of the scarcest ingredient for RUSH_CAPACITY orders, and not one more.
    stock = RUSH_CAPACITY * max(need.values())
    capacity = min(stock // portions for portions in need.values())
    assert capacity == RUSH_CAPACITY
    monkeypatch.setenv("PIZZERIA_CODEC_KEY", CODEC_KEY)
    with postgres_server.database() as url, dev_server(None, headless=True) as server:
        open_ledger(url, initial_stock=stock).close()
        env = stack_env(
            tmp_path,
            TEMPORAL_ADDRESS=server.address,
            PIZZERIA_LEDGER=url,
            PIZZERIA_CODEC_KEY=CODEC_KEY,
        )
        with contextlib.ExitStack() as workers:
            for index in range(3):
                log = tmp_path / f"worker-{index}.log"
                workers.enter_context(worker_process(env, log=log))
            client = await connect(server.address)
            orders = [sample_order(f"RUSH-{n:03d}", prep_seconds=0) for n in range(RUSH_ORDERS)]
            handles = await asyncio.gather(*(start_order(client, order) for order in orders))
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        outcome_of(client, handle.id, order.order_number)
                        for handle, order in zip(handles, orders, strict=True)
                    )
                ),
                timeout=300,
            )
            check = run_pizzeria("check", "--closed", "--json", env=env, timeout=120)
        logs = [(tmp_path / f"worker-{index}.log").read_text() for index in range(3)]
        ledger = open_ledger(url, read_only=True)
        try:
            snapshot = ledger.snapshot()
        finally:
            ledger.close()
    completed = [o for o in outcomes if o.status == "COMPLETED"]
    failed = [o for o in outcomes if o.status == "FAILED"]
    # Every order the stock could serve was served; every other one failed for want of
    # stock, and undid its inventory step (the compensation finds nothing to put back).
    assert len(completed) == capacity and len(failed) == RUSH_ORDERS - capacity
    assert {o.error_type for o in failed} == {OUT_OF_STOCK_ERROR}
    assert all(o.compensations == [COMPENSATE_REVERT_INVENTORY] for o in failed)
    for ingredient, portions in need.items():
        row = snapshot.stock[ingredient]
        assert row["quantity"] == stock - capacity * portions >= 0
    assert all(row["quantity"] >= 0 for row in snapshot.stock.values())
    charges = Counter(
        effect["order_number"]
        for effect in snapshot.effects
        if effect["step"] == STEP_PROCESS_CREDIT_CARD and not effect["tombstone"]
    )
    assert charges == Counter({o.order_number: 1 for o in completed})  # once, and only them
    runs = {run.order_number: run for run in snapshot.orders()}
    assert all(runs[o.order_number].charged == 3500 for o in completed)
    for outcome in failed:  # nothing kept: no money, no stock
        run = runs.get(outcome.order_number)
        assert run is None or (run.charged == 0 and not any(run.stock_held.values()))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["violations"] == [] and report["orders"]["completed"] == capacity
    assert all("Took" in log for log in logs)  # all three workers took stock
