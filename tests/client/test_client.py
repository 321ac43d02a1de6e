"""Our clients: never a second charge by accident, and a wait that outlasts a server restart.

An order number whose last run completed is not started again unless asked (``again``);
a failed one may be. Waiting for an outcome keeps asking while the server does not answer,
and gives up only after its patience, saying the order still runs and how to follow it.
The end-to-end tests kill and restart a dev server of their own (same port, same history
file) while `pizzeria order` waits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.operatorservice.v1 import ListSearchAttributesResponse
from temporalio.client import (
    CancelWorkflowInput,
    Client,
    Interceptor,
    OutboundInterceptor,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.client import (
    OrderAlreadyCompleted,
    OrderDidNotAnswer,
    OrderOutcome,
    OrderRefused,
    cancel_order,
    order_status_registered,
    outcome_of,
    outcomes,
    place_order,
    retry_compensations,
    start_order,
)
from pizzeria.client.outcomes import (
    WEB_UI_VARIABLE,
    recent_orders,
    shown_order_status,
    web_ui_link,
    web_ui_of,
)
from pizzeria.client.placing import start_with_answer
from pizzeria.ledger import Ledger
from pizzeria.models import ORDER_STATUS, order_number_of, workflow_id_for
from pizzeria.ops.processes import dev_server, private_dev_server, worker_process
from pizzeria.samples import BAD_CARD, sample_order
from pizzeria.temporal import waiting
from tests.helpers import PIZZERIA, event_types, eventually, pizzeria, run_pizzeria, wait_until
from tests.helpers.stack import stack_env


def charges(ledger: Ledger, number: str) -> list[int]:
    return [
        row["amount"]
        for row in ledger.effects()
        if row["order_number"] == number and row["step"] == "process_credit_card"
    ]


# -- one order number, one charge ----------------------------------------------------------------


async def test_a_completed_order_number_is_not_started_again_unless_asked(
    client: Client, worker, ledger: Ledger, task_queue: str
) -> None:
    number = f"ONCE-{uuid.uuid4().hex[:6]}"
    placed = sample_order(number, prep_seconds=0)
    async with worker():
        first = await place_order(client, placed, task_queue)
        assert first.status == "COMPLETED"
        with pytest.raises(OrderAlreadyCompleted) as refused:
            await start_order(client, placed, task_queue)
        assert refused.value.run_id == first.run_id
        assert "already placed and completed" in str(refused.value)
        assert charges(ledger, number) == [3500]  # nothing new started

        again = await place_order(client, placed, task_queue, again=True)
    assert again.status == "COMPLETED" and again.run_id != first.run_id
    assert charges(ledger, number) == [3500, 3500]  # asked for: a second order


async def test_a_failed_order_number_may_be_placed_again(
    client: Client, worker, ledger: Ledger, task_queue: str
) -> None:
    number = f"RETRY-{uuid.uuid4().hex[:6]}"
    async with worker():
        failed = await place_order(
            client, sample_order(number, card=BAD_CARD, prep_seconds=0), task_queue
        )
        assert failed.status == "FAILED"
        fixed = await place_order(client, sample_order(number, prep_seconds=0), task_queue)
    assert fixed.status == "COMPLETED" and fixed.run_id != failed.run_id
    assert charges(ledger, number) == [3500]


# -- acting on a running order -------------------------------------------------------------------


async def test_a_closed_order_is_refused_with_its_status_spelled_as_everywhere_else(
    client: Client, worker, task_queue: str
) -> None:
    number = f"CLOSED-{uuid.uuid4().hex[:6]}"
    async with worker():
        handle = await start_order(client, sample_order(number, prep_seconds=30), task_queue)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        with pytest.raises(OrderRefused) as refused:
            await retry_compensations(client, number)
    assert str(refused.value) == f"refused: order {number} is already closed (CANCELLED)"


async def preparing(handle: WorkflowHandle[Any, Any]) -> bool:
    return EventType.EVENT_TYPE_TIMER_STARTED in await event_types(handle)


class PlaceAgainBeforeTheCancelRequest(Interceptor):
    """Between the cancel_order Update and the cancellation request: the run that accepted
    the Update closes (terminated here; its wait for the request may run out as well) and
    the order number is placed again, as `pizzeria order --again` may."""

    def __init__(self, plain: Client, accepting: WorkflowHandle[Any, Any], task_queue: str) -> None:
        self.plain, self.accepting, self.task_queue = plain, accepting, task_queue
        self.newer: WorkflowHandle[Any, Any] | None = None

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        hook = self

        class PlaceAgain(OutboundInterceptor):
            async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
                if hook.newer is None:
                    await hook.place_again()
                await super().cancel_workflow(input)

        return PlaceAgain(next)

    async def place_again(self) -> None:
        await self.accepting.terminate("test: the run closes before the request reaches it")
        number = order_number_of(self.accepting.id)
        again = sample_order(number, prep_seconds=30)
        self.newer = await start_order(self.plain, again, self.task_queue, again=True)


async def test_a_cancel_never_reaches_a_newer_run_of_the_order_number(
    client: Client, worker, task_queue: str
) -> None:
    number = f"CANCEL-{uuid.uuid4().hex[:6]}"
    async with worker():
        first = await start_order(client, sample_order(number, prep_seconds=30), task_queue)
        await eventually(lambda: preparing(first), "the kitchen to prepare the order")
        hook = PlaceAgainBeforeTheCancelRequest(client, first, task_queue)
        config = client.config()
        config["interceptors"] = [hook]
        hooked = Client(**config)
        result = await cancel_order(hooked, number, "changed my mind")
        assert result.accepted and hook.newer is not None
        assert hook.newer.result_run_id != first.result_run_id
        confirmation = await hook.newer.result()  # not cancelled: it was not asked to be
    assert confirmation.amount == 3500
    assert (await hook.newer.describe()).status == WorkflowExecutionStatus.COMPLETED


@pytest.mark.dev_server_only(
    "the time-skipping test server drops its connections once an Update no worker "
    "answers times out; runs on the dev server"
)
async def test_a_cancel_no_worker_answered_in_time_ends_the_order_cancelled_once_one_does(
    client: Client, worker, task_queue: str, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    number = f"CANCEL-LATE-{uuid.uuid4().hex[:6]}"
    async with worker():
        handle = await start_order(client, sample_order(number, prep_seconds=30), task_queue)
        await eventually(lambda: preparing(handle), "the kitchen to prepare the order")
    # No worker now: the cancel gives up waiting, and says it may still be carried out.
    with pytest.raises(OrderDidNotAnswer, match="may still be carried out"):
        await cancel_order(client, number, "changed my mind", patience=1)
    gc.collect()  # the Update's wait, given up: its error was read, not logged with a traceback
    await asyncio.sleep(0.1)
    assert "never retrieved" not in caplog.text
    async with worker():  # one comes back: it runs the cancel, and the order ends Cancelled
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
    assert type(ended.value.cause).__name__ == "CancelledError"
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    (row,) = [row for row in ledger.orders() if row.order_number == number]
    assert (row.charged, row.refunded, row.billed) == (3500, 3500, 0)  # the hold, released
    assert not any(row.stock_held.values())


# -- whether the server knows the OrderStatus search attribute ----------------------------------


class Operator:
    """An operator service that answers each lookup with the next of its answers."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def list_search_attributes(self, request: Any, **options: Any) -> Any:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        known = {ORDER_STATUS.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}
        return ListSearchAttributesResponse(custom_attributes=known if answer else {})


class Connection:
    """What `order_status_registered` uses of a client: its namespace and operator service."""

    def __init__(self, namespace: str, *answers: bool | Exception) -> None:
        self.namespace = namespace
        self.operator_service = Operator(*answers)


async def test_a_lookup_temporal_did_not_answer_is_asked_again() -> None:
    connection = Connection(f"ns-{uuid.uuid4().hex[:6]}", unanswered(), True)
    with pytest.raises(RPCError):  # no answer is not "not registered"
        await order_status_registered(connection)  # type: ignore[arg-type]
    assert await order_status_registered(connection) is True  # type: ignore[arg-type]
    assert await order_status_registered(connection) is True  # type: ignore[arg-type]
    assert connection.operator_service.asked == 2  # a definite answer is kept


async def test_each_connection_has_its_own_answer_in_the_same_namespace() -> None:
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    without = Connection(namespace, False)
    with_it = Connection(namespace, True)
    unimplemented = RPCError("unimplemented", RPCStatusCode.UNIMPLEMENTED, b"")
    test_server = Connection(namespace, unimplemented)
    assert await order_status_registered(without) is False  # type: ignore[arg-type]
    assert await order_status_registered(with_it) is True  # type: ignore[arg-type]
    assert await order_status_registered(test_server) is False  # type: ignore[arg-type]
    assert await order_status_registered(test_server) is False  # type: ignore[arg-type]
    assert test_server.operator_service.asked == 1  # a server without it: a definite answer


# -- waiting through a server that does not answer -----------------------------------------------


def unanswered() -> RPCError:
    return RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b"")


async def test_waiting_keeps_asking_while_the_server_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: list[Any] = [unanswered(), unanswered(), unanswered()]
    outcome = OrderOutcome("W1", workflow_id_for("W1"), "run", "COMPLETED", amount=3500)

    async def read(*args: Any) -> OrderOutcome:
        if answers:
            raise answers.pop(0)
        return outcome

    monkeypatch.setattr(outcomes, "read_outcome", read)
    monkeypatch.setattr(waiting, "FIRST_RETRY_SECONDS", 0.01)
    heard: list[int] = []
    got = await outcome_of(
        None,  # type: ignore[arg-type]
        workflow_id_for("W1"),
        "W1",
        patience=30,
        on_unanswered=lambda error, attempt: heard.append(attempt),
    )
    assert got is outcome and heard == [1, 2, 3]


async def test_after_its_patience_the_wait_says_the_order_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never(*args: Any) -> OrderOutcome:
        raise unanswered()

    monkeypatch.setattr(outcomes, "read_outcome", never)
    monkeypatch.setattr(waiting, "FIRST_RETRY_SECONDS", 0.05)
    started = time.monotonic()
    with pytest.raises(waiting.OrderStillRunning) as gave_up:
        await outcome_of(None, workflow_id_for("W2"), "W2", patience=1)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    message = str(gave_up.value)
    assert "still running" in message and "`pizzeria status W2 --watch`" in message
    assert "tcp connect error" in message


async def test_a_refusal_is_not_waited_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def refused(*args: Any) -> OrderOutcome:
        nonlocal calls
        calls += 1
        raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")

    monkeypatch.setattr(outcomes, "read_outcome", refused)
    with pytest.raises(RPCError):
        await outcome_of(None, workflow_id_for("W3"), "W3", patience=30)  # type: ignore[arg-type]
    assert calls == 1


# -- the command, against a server that goes away --------------------------------------------


@pytest.fixture(scope="module")
def restartable(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """A dev server keeping its history in a file, which a test may stop and start again
    on the same port, and a worker polling it."""
    data = tmp_path_factory.mktemp("restartable")
    server = private_dev_server(data / "temporal.db", headless=True)
    server.start()
    try:
        env = stack_env(data, TEMPORAL_ADDRESS=server.address)
        with worker_process(env, log=data / "worker.log"):
            yield {"env": env, "data": data, "server": server}
    finally:
        server.stop()


def order_in_background(stack: dict[str, Any], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PIZZERIA, "order", "--json", *flags],
        env=stack["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def placed_in_background(
    stack: dict[str, Any], number: str, prep_seconds: int
) -> subprocess.Popen[str]:
    """`pizzeria order` left waiting for the order, once the order is started."""
    placing = order_in_background(
        stack, "--order-number", number, "--prep-seconds", str(prep_seconds)
    )
    try:
        wait_until(
            lambda: pizzeria(stack, "status", number).returncode == 0, "the order to start", 60
        )
    except BaseException:
        placing.kill()
        raise
    return placing


@pytest.mark.timeout(240)
def test_order_waits_through_a_server_restart_and_prints_the_real_outcome(restartable) -> None:
    placing = placed_in_background(restartable, "RESTART-1", 8)
    try:
        restartable["server"].stop()
        # Longer than the SDK's own retries of one call: our wait must carry on by itself.
        time.sleep(12)
        restartable["server"].start()
        out, errors = placing.communicate(timeout=120)
    finally:
        placing.kill()
    assert placing.returncode == 0, out + errors
    assert json.loads(out)["status"] == "COMPLETED"
    # Whether our wait hears the outage depends on where it strikes (the SDK's own retry
    # of a call may bridge it); when it does, it says so in our words, never a traceback.
    assert all("Temporal is not answering" in line for line in errors.splitlines()), errors
    assert "Traceback" not in errors
    assert "WARN" not in errors  # the SDK's retry warnings are not the user's business


@pytest.mark.timeout(120)
def test_order_that_outlasts_its_timeout_is_still_running_exit_3(restartable) -> None:
    # A worker that runs orders on this server (the test before restarted it: the worker's
    # pollers come back on their own time), else the answer is rightly "no worker has
    # taken it yet" (the next test).
    ready = pizzeria(
        restartable, "order", "--order-number", "SLOW-0", "--pickup", "--prep-seconds", "0"
    )
    assert ready.returncode == 0, ready.stdout + ready.stderr
    done = pizzeria(
        restartable,
        "order",
        "--order-number",
        "SLOW-1",
        "--prep-seconds",
        "30",
        "--timeout",
        "2",
    )
    assert done.returncode == 3, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: order SLOW-1 has no outcome after 2 s and is still running")
    assert last.endswith("follow it with `pizzeria status SLOW-1 --watch`")
    assert pizzeria(restartable, "cancel", "SLOW-1").returncode == 0  # tidy: nothing hangs on


@pytest.mark.timeout(120)
def test_an_order_no_worker_takes_says_so_when_its_timeout_is_over(
    tmp_path,
) -> None:
    with dev_server(headless=True) as server:  # and no worker at all
        env = stack_env(tmp_path, TEMPORAL_ADDRESS=server.address)
        done = run_pizzeria("order", "--order-number", "NO-WORKER", "--timeout", "2", env=env)
    assert done.returncode == 3, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "follow it with `pizzeria status NO-WORKER --watch`; no worker has taken it yet: "
            "is `pizzeria worker` running?"
        )
    )


@pytest.mark.timeout(120)
def test_ctrl_c_while_waiting_leaves_the_order_running_and_says_how_to_follow_it(
    restartable,
) -> None:
    placing = placed_in_background(restartable, "INT-1", 60)
    try:
        placing.send_signal(signal.SIGINT)
        out, errors = placing.communicate(timeout=60)
    finally:
        placing.kill()
    assert placing.returncode == 130, out + errors
    assert errors.strip().splitlines()[-1] == (
        "error: interrupted; order INT-1 goes on if it was placed: follow it with "
        "`pizzeria status INT-1 --watch`, or cancel it with `pizzeria cancel INT-1`"
    )
    assert "Traceback" not in errors and out == ""  # no half an answer on stdout
    shown = json.loads(pizzeria(restartable, "status", "INT-1", "--json").stdout)
    assert shown["status"] == "RUNNING"  # the order did not stop with the command
    assert pizzeria(restartable, "cancel", "INT-1").returncode == 0  # tidy: nothing hangs on


@pytest.mark.timeout(120)
def test_placing_a_completed_order_number_again_shows_its_confirmation(restartable) -> None:
    def order_json(*flags: str) -> tuple[int, dict[str, Any]]:
        done = pizzeria(
            restartable,
            "order",
            "--json",
            "--prep-seconds",
            "0",
            "--order-number",
            "TWICE-1",
            *flags,
        )
        return done.returncode, json.loads(done.stdout)

    code, first = order_json()
    assert (code, first["status"], first["already_completed"]) == (0, "COMPLETED", False)
    code, shown = order_json()
    assert (code, shown["run_id"], shown["already_completed"]) == (0, first["run_id"], True)
    assert shown["amount"] == first["amount"] == 3500

    other_card = "4000056655665556"  # typed now; the run placed before was paid by another
    human = pizzeria(
        restartable,
        "order",
        "--prep-seconds",
        "0",
        "--order-number",
        "TWICE-1",
        "--card",
        other_card,
    )
    assert human.returncode == 0
    assert "already placed and completed" in human.stderr and "--again" in human.stderr
    assert "confirmation:" in human.stdout
    assert "5556" not in human.stdout  # not shown as the card that paid
    assert "is not the one that completed" not in human.stderr  # the same order, paid

    # Another order under the number: the confirmation is the delivery that completed,
    # and the order typed now is said not to be it.
    other = pizzeria(
        restartable, "order", "--order-number", "TWICE-1", "--pickup", "--item", "Small"
    )
    assert other.returncode == 0, other.stderr
    assert "  delivery:      SUCCESS" in other.stdout and "pickup" not in other.stdout
    assert (
        "The order typed now ($12.00 where it was $35.00, a pickup) is not the one that "
        "completed, and was not placed"
    ) in other.stderr

    code, again = order_json("--again")
    assert code == 0 and again["run_id"] != first["run_id"]
    assert again["already_completed"] is False
    ledger = json.loads(pizzeria(restartable, "ledger", "--json").stdout)
    runs = [row for row in ledger["orders"] if row["order_number"] == "TWICE-1"]
    assert sorted(row["charged"] for row in runs) == [3500, 3500]  # two orders, as asked


@pytest.mark.parametrize(
    "said",
    [
        "workflow update was aborted by closing workflow",  # closing while it waited
        "workflow execution already completed",  # closed since `running_order` looked
    ],
)
async def test_a_cancel_aborted_by_the_order_closing_is_a_refusal_not_an_error(
    monkeypatch: pytest.MonkeyPatch, said: str
) -> None:
    """An order that closes while a cancel Update waits to be accepted, or just before it
    reaches the run: Temporal refuses the Update; the caller hears that the order closed
    (the API's 409), not a server error (a 502, which tells a client to try again)."""
    from temporalio.service import RPCError, RPCStatusCode

    from pizzeria.client import acting

    class ClosingRun:
        async def execute_update(self, *args: object) -> None:
            raise RPCError(said, RPCStatusCode.NOT_FOUND, b"")

    async def closing_run(
        client: object, order_number: str, run_id: str | None = None
    ) -> ClosingRun:
        return ClosingRun()

    monkeypatch.setattr(acting, "running_order", closing_run)
    with pytest.raises(acting.OrderRefused, match="closed before it could answer"):
        await acting.cancel_order(None, "XD404", "changed my mind")  # type: ignore[arg-type]


def server_gone() -> RPCError:
    return RPCError("transport error: connection refused", RPCStatusCode.UNAVAILABLE, b"")


@pytest.mark.parametrize("lost", ["the answer", "the request"])
async def test_a_start_the_server_never_answered_follows_the_order_it_started(
    client: Client, worker, task_queue: str, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """The server stops with the start in flight (a worker slow to take the order's
    first task, a restart): `pizzeria order` must not give up on an order that may run.
    It asks whether the order started, follows it if so, and starts it if not."""
    real = WithStartWorkflowOperation.workflow_handle
    calls: list[str] = []

    async def unanswered(self: WithStartWorkflowOperation[Any, Any]) -> Any:
        calls.append("start")
        if lost == "the answer" or len(calls) == 1:
            if lost == "the answer":
                await real(self)  # the server started the order; its answer never came
            raise server_gone()
        return await real(self)

    monkeypatch.setattr(WithStartWorkflowOperation, "workflow_handle", unanswered)
    order = sample_order(f"LOST-{uuid.uuid4().hex[:8]}", prep_seconds=0)
    noticed: list[int] = []
    async with worker():
        started = await start_with_answer(
            client, order, task_queue, patience=60, on_unanswered=lambda e, n: noticed.append(n)
        )
        answer = await started.answer
        outcome = await outcome_of(client, started.handle.id, order.order_number)
    assert answer.hold is not None and answer.hold.amount == 3500
    assert outcome.status == "COMPLETED" and outcome.run_id == started.run_id
    latest = await client.get_workflow_handle(started.handle.id).describe()
    assert latest.run_id == started.run_id  # the order's one run
    assert calls == (["start"] if lost == "the answer" else ["start", "start"])


def test_the_web_ui_link_follows_the_server_and_is_left_out_when_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(WEB_UI_VARIABLE, raising=False)
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path))
    link = web_ui_link("pizza-workflow-order-A1", "r1", "default", "127.0.0.1:47101")
    assert (
        link
        == "http://localhost:48101/namespaces/default/workflows/pizza-workflow-order-A1/r1/history"
    )
    assert web_ui_of("localhost:7233") == "http://localhost:8233"  # the dev server's default
    # `pizzeria server --port 47101 --ui-port 47102` says where its Web UI is, for its port.
    (tmp_path / "web-ui.url").write_text("47101 http://localhost:47102\n")
    (tmp_path / "web-ui.url").chmod(0o600)
    assert web_ui_of("127.0.0.1:47101") == "http://localhost:47102"
    assert web_ui_of("localhost:7233") == "http://localhost:8233"  # another server's
    assert web_ui_of("orders.a1b2c.tmprl.cloud:7233") is None  # not guessed
    assert web_ui_link("w", "r", "default", "orders.a1b2c.tmprl.cloud:7233") == ""
    monkeypatch.setenv(WEB_UI_VARIABLE, "https://temporal.example.com/")
    assert web_ui_of("orders.a1b2c.tmprl.cloud:7233") == "https://temporal.example.com"


def test_an_open_order_status_of_a_run_ended_from_outside_shows_how_it_ended() -> None:
    # A terminated run (repair --abandon) could not update its OrderStatus.
    assert shown_order_status("IN_PROGRESS", "TERMINATED") == "TERMINATED"
    assert shown_order_status("NEEDS_ATTENTION", "TIMED_OUT") == "TIMED_OUT"
    assert shown_order_status("IN_PROGRESS", "RUNNING") == "IN_PROGRESS"
    assert shown_order_status("COMPLETED", "COMPLETED") == "COMPLETED"
    assert shown_order_status(None, "TERMINATED") is None  # started without the attribute


class ListedRun:
    """One run as `Client.list_workflows` lists it, as far as `recent_orders` reads it."""

    def __init__(
        self,
        number: str,
        memo: dict[str, Any],
        status: WorkflowExecutionStatus = WorkflowExecutionStatus.COMPLETED,
    ) -> None:
        self.id = workflow_id_for(number)
        self.run_id = str(uuid.uuid4())
        self.status = status
        self.start_time = datetime.now(UTC)
        self.typed_search_attributes = TypedSearchAttributes.empty  # no OrderStatus
        self._memo = memo

    async def memo(self) -> dict[str, Any]:
        return self._memo


class ListingClient:
    def __init__(self, *runs: ListedRun) -> None:
        self.runs = runs

    async def list_workflows(self, query: str, limit: int) -> Any:
        for run in self.runs:
            yield run


async def test_orders_say_a_refund_for_no_driver_of_an_order_started_without_order_status():
    # The exercise's client (or the temporal CLI) sets no OrderStatus: the memo the
    # workflow wrote is all `pizzeria orders` has to tell the money went back.
    undelivered = ListedRun("PLAIN-1", {"compensation": "none", "outcome": "DELIVERY FAILURE"})
    delivered = ListedRun("PLAIN-2", {"compensation": "none", "outcome": "SUCCESS"})
    client: Any = ListingClient(undelivered, delivered)
    first, second = await recent_orders(client)
    assert first["order_status"] is None
    assert first["compensation"] == "none; refunded in full: no driver took it"
    assert second["compensation"] == "none"


async def test_orders_read_a_completed_run_without_a_memo_as_nothing_undone():
    # Orders started now write no outcome memo when they complete with nothing undone
    # (workflows.QUIET_CLOSE_PATCH): the run's own status says it. Any other run without
    # one (still running, failed before it could write one) is not guessed at.
    quiet = ListedRun("PLAIN-3", {})
    running = ListedRun("PLAIN-4", {}, WorkflowExecutionStatus.RUNNING)
    terminated = ListedRun("PLAIN-5", {"amount": 3500}, WorkflowExecutionStatus.TERMINATED)
    client: Any = ListingClient(quiet, running, terminated)
    rows = await recent_orders(client)
    assert [row["compensation"] for row in rows] == ["none", None, None]
    assert [row["status"] for row in rows] == ["COMPLETED", "RUNNING", "TERMINATED"]


class _History:
    """A run handle that answers only its history, of these event types."""

    def __init__(self, *kinds: EventType.ValueType) -> None:
        self.kinds = kinds

    async def fetch_history(self) -> Any:
        return SimpleNamespace(events=[HistoryEvent(event_type=kind) for kind in self.kinds])


async def test_an_unanswered_request_to_an_order_whose_task_keeps_failing_says_stuck() -> None:
    # A cancel that timed out on such an order said "no worker has taken it" after its wait.
    from pizzeria.client.acting import _stuck

    task = EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
    failed, completed = (
        EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    )
    assert await _stuck(_History(task, failed, task))  # type: ignore[arg-type]
    assert not await _stuck(_History(task, failed, task, completed))  # type: ignore[arg-type]
    assert not await _stuck(_History(task, completed, task))  # type: ignore[arg-type]
