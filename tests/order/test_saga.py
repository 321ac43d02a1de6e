"""The generic Saga helper (`pizzeria.saga`), driven by a small workflow of this module's own.

The workflow runs ``steps`` steps; before each step it registers that step's compensation.
What the outside world does (a step fails before or after taking effect, a compensation
fails once or always, a step or a compensation hangs) is scripted per run in `SCRIPTS`,
which the activities read: they run in this process, on the test's event loop, so a test
can also change the script while the workflow runs (e.g. repair a broken compensation).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from pizzeria.saga import Saga
from tests.helpers import eventually, failure_of

STEP_FAILED = "StepFailed"
UNDO_FAILED = "UndoFailed"
UNDO_ATTEMPTS = 2  # activity attempts of a compensation before it fails for good
COMPENSATION_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        maximum_attempts=UNDO_ATTEMPTS, initial_interval=timedelta(milliseconds=100)
    ),
}
PAUSE = timedelta(hours=1)  # a timer a test cancels the workflow in (never fires)
WAIT = 20.0  # seconds a test waits for the workflow to reach a point


# -- the outside world ---------------------------------------------------------------------


@dataclass
class Script:
    """What the activities of one workflow run do, and what they did."""

    fail_step: int | None = None
    fail_after_effect: bool = False  # the failing step takes effect, then fails
    block_step: int | None = None  # this step heartbeats until it is cancelled
    undo_fail_once: set[int] = field(default_factory=set)
    undo_fail_always: set[int] = field(default_factory=set)
    slow_undo: int | None = None  # this compensation waits for `release`
    events: list[tuple[str, int, int]] = field(default_factory=list)  # (what, step, attempt)
    effects: set[int] = field(default_factory=set)  # steps in effect (not undone)
    blocked: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def calls(self, what: str) -> list[int]:
        """Steps of every ``what`` event, in order (one per activity attempt for undo)."""
        return [step for kind, step, _ in self.events if kind == what]

    def undo_order(self) -> list[int]:
        """Compensations in the order they first ran (an attempt's retries folded in)."""
        order: list[int] = []
        for step in self.calls("undo"):
            if step not in order:
                order.append(step)
        return order


SCRIPTS: dict[str, Script] = {}


@dataclass
class Call:
    run_id: str
    step: int


@activity.defn
async def do_step(call: Call) -> None:
    script = SCRIPTS[call.run_id]
    script.events.append(("step", call.step, activity.info().attempt))
    if script.block_step == call.step:
        script.blocked.set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            script.events.append(("step cancelled", call.step, activity.info().attempt))
            raise
    failing = script.fail_step == call.step
    if failing and not script.fail_after_effect:
        raise ApplicationError(f"step {call.step} failed", type=STEP_FAILED, non_retryable=True)
    script.effects.add(call.step)
    if failing:
        raise ApplicationError(
            f"step {call.step} failed after taking effect", type=STEP_FAILED, non_retryable=True
        )


@activity.defn
async def undo_step(call: Call) -> None:
    script = SCRIPTS[call.run_id]
    attempt = activity.info().attempt
    script.events.append(("undo", call.step, attempt))
    if script.slow_undo == call.step:
        script.slow_started.set()
        await script.release.wait()
    if call.step in script.undo_fail_always or (
        call.step in script.undo_fail_once and attempt == 1
    ):
        raise ApplicationError(f"undo {call.step} failed", type=UNDO_FAILED)
    if call.step in script.effects:
        script.effects.discard(call.step)
        script.events.append(("undone", call.step, attempt))
    else:  # the step never took effect: nothing to undo
        script.events.append(("noop", call.step, attempt))


# -- the workflow ----------------------------------------------------------------------------


@dataclass
class Plan:
    run_id: str
    steps: int = 3
    parallel: bool = False
    continue_on_error: bool = True
    wait_for_repair: bool = False
    pause_before: int | None = None  # a long timer before this step (after its registration)
    bug_at: int | None = None  # a KeyError (a bug, not a Temporal failure) in this step
    workflow_compensation_at: int | None = None  # this step's undo is a workflow coroutine
    compensate_in_body: bool = False  # on a step failure, compensate() before re-raising
    # On a step failure, compensate() without its cause this often before re-raising, as
    # a workflow catching the failure would (a SagaError of a call but the last is caught).
    bare_compensations: int = 0
    compensate_after: int = 0  # when every step succeeded, call compensate() this often
    continue_as_new: bool = False  # after the steps, continue as new (with no steps)
    local_compensations: bool = False  # the undos run as local activities


@workflow.defn
class SagaTestWorkflow:
    def __init__(self) -> None:
        self.saga = Saga()
        self.undone_in_workflow: list[int] = []
        self.progress: list[tuple[str, str]] = []  # (phase, account) at each on_progress

    @workflow.run
    async def run(self, plan: Plan) -> dict[str, Any]:
        self.saga = Saga(
            plan.parallel,
            plan.continue_on_error,
            COMPENSATION_OPTIONS,
            wait_for_repair=plan.wait_for_repair,
            on_progress=lambda account: self.progress.append((self.saga.phase.value, account)),
        )
        async with self.saga as saga:
            for index in range(plan.steps):
                call = Call(plan.run_id, index)
                if plan.workflow_compensation_at == index:
                    saga.add_compensation(self.undo_in_workflow, index)
                else:
                    saga.add_compensation(
                        undo_step,
                        call,
                        summary=f"undo step {index}",
                        local=plan.local_compensations,
                    )
                if plan.pause_before == index:
                    await workflow.sleep(PAUSE)
                with saga.step(f"step {index}"):
                    if plan.bug_at == index:
                        raise KeyError(f"bug in step {index}")
                    try:
                        await workflow.execute_activity(
                            do_step,
                            call,
                            start_to_close_timeout=timedelta(seconds=30),
                            heartbeat_timeout=timedelta(seconds=10),
                            retry_policy=RetryPolicy(maximum_attempts=1),
                        )
                    except ActivityError as error:
                        if plan.compensate_in_body:
                            await saga.compensate(cause=error)
                        for call_number in range(1, plan.bare_compensations + 1):
                            try:
                                await saga.compensate()
                            except ApplicationError:
                                if call_number == plan.bare_compensations:
                                    raise
                        raise
            for _ in range(plan.compensate_after):
                await saga.compensate()
            if plan.continue_as_new:
                workflow.continue_as_new(replace(plan, steps=0, continue_as_new=False))
        return {"outcomes": saga.outcomes(), "undone_in_workflow": self.undone_in_workflow}

    async def undo_in_workflow(self, index: int) -> None:
        await workflow.sleep(timedelta(milliseconds=1))
        self.undone_in_workflow.append(index)

    @workflow.query
    def state(self) -> dict[str, Any]:
        return {**self.saga.state(), "progress": self.progress}

    @workflow.update
    def retry_compensations(self) -> None:
        self.saga.retry_failed()

    @workflow.update
    def resolve_compensations(self, note: str) -> None:
        self.saga.resolve_manually(note)


# -- helpers -----------------------------------------------------------------------------------


@dataclass
class SagaWorker:
    client: Client
    task_queue: str

    async def start(self, plan: Plan) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            SagaTestWorkflow.run,
            plan,
            id=f"saga-test-{plan.run_id}",
            task_queue=self.task_queue,
        )


@pytest.fixture(scope="module")
async def saga_worker(env: WorkflowEnvironment) -> AsyncIterator[SagaWorker]:
    """One worker for the whole module (the property test reuses it across examples)."""
    task_queue = f"saga-tests-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[SagaTestWorkflow],
        activities=[do_step, undo_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
        # Heartbeats go out every 0.5 s (not 0.8 x the heartbeat timeout, which left 0.4 s
        # of slack under a 2 s timeout): a cancel still reaches a blocked step at once, and
        # a busy machine has 9.5 s before the step would time out instead.
        max_heartbeat_throttle_interval=timedelta(milliseconds=500),
    ):
        yield SagaWorker(env.client, task_queue)


def new_script(**behaviour: Any) -> tuple[str, Script]:
    run_id = uuid.uuid4().hex
    SCRIPTS[run_id] = Script(**behaviour)
    return run_id, SCRIPTS[run_id]


def chain(error: BaseException | None) -> list[BaseException]:
    found: list[BaseException] = []
    while error is not None:
        found.append(error)
        error = error.__cause__
    return found


def chain_types(error: BaseException | None) -> list[str]:
    """The failure chain as types: ApplicationError's own type, else the class name."""
    return [
        e.type or "ApplicationError" if isinstance(e, ApplicationError) else type(e).__name__
        for e in chain(error)
    ]


async def completed(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """The workflow's result, once its history is checked to replay."""
    outcome: dict[str, Any] = await handle.result()
    await replays(handle)
    return outcome


async def failure(handle: WorkflowHandle[Any, Any]) -> BaseException:
    """The workflow's failure (the cause of the WorkflowFailureError its result raises), once
    its history is checked to replay."""
    cause = await failure_of(handle)
    await replays(handle)
    return cause


async def status(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    return (await handle.describe()).status


async def paused(handle: WorkflowHandle[Any, Any]) -> None:
    """Wait for the workflow's pause timer to be in its history (not just in a query's view)."""

    async def timer_started() -> bool:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                return True
        return False

    await eventually(timer_started, "the pause timer")


async def replays(handle: WorkflowHandle[Any, Any]) -> None:
    """The run's history replays without a nondeterminism error (the saga is deterministic)."""
    replayer = Replayer(workflows=[SagaTestWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
    await replayer.replay_workflow(await handle.fetch_history())


async def query_until(
    handle: WorkflowHandle[Any, Any], check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal seen
        seen = await handle.query(SagaTestWorkflow.state)
        return check(seen)

    await eventually(matches, what)
    return seen


def statuses(outcomes: list[dict[str, Any]]) -> list[str]:
    return [outcome["status"] for outcome in outcomes]


# -- without failures --------------------------------------------------------------------------


async def test_success_runs_no_compensation(saga_worker: SagaWorker) -> None:
    """Every step succeeds: no compensation runs and each stays pending."""
    run_id, script = new_script()
    handle = await saga_worker.start(Plan(run_id))
    result = await completed(handle)
    assert statuses(result["outcomes"]) == ["pending"] * 3
    assert script.calls("step") == [0, 1, 2]
    assert script.calls("undo") == []
    assert script.effects == {0, 1, 2}
    state = await handle.query(SagaTestWorkflow.state)
    assert [s["status"] for s in state["steps"]] == ["done"] * 3
    assert [c["summary"] for c in state["compensations"]] == [f"undo step {i}" for i in range(3)]
    assert state["compensating"] is False
    assert (state["phase"], state["progress"]) == ("running", [])


async def test_compensate_called_twice_runs_each_compensation_once(
    saga_worker: SagaWorker,
) -> None:
    """compensate() called twice after the steps: each compensation runs once, in reverse."""
    run_id, script = new_script()
    handle = await saga_worker.start(Plan(run_id, compensate_after=2))
    result = await completed(handle)
    assert statuses(result["outcomes"]) == ["done"] * 3
    assert script.calls("undo") == [2, 1, 0]
    assert script.calls("undone") == [2, 1, 0]
    assert script.effects == set()


async def test_continue_as_new_inside_the_block_compensates_nothing(
    saga_worker: SagaWorker,
) -> None:
    """workflow.continue_as_new() inside the block is not a failure: no compensation runs
    and the workflow continues as new (instead of failing)."""
    run_id, script = new_script()
    handle = await saga_worker.start(Plan(run_id, continue_as_new=True))
    result = await completed(handle)  # follows the runs to the last one
    assert result["outcomes"] == []
    assert script.calls("step") == [0, 1, 2]
    assert script.calls("undo") == []
    assert script.effects == {0, 1, 2}
    first = saga_worker.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    assert await status(first) == WorkflowExecutionStatus.CONTINUED_AS_NEW


# -- a step fails ------------------------------------------------------------------------------


@pytest.mark.parametrize("after_effect", [False, True], ids=["before-effect", "after-effect"])
@pytest.mark.parametrize("fail_at", [0, 1, 2])
async def test_step_failure_compensates_started_steps_in_reverse_then_fails_with_it(
    saga_worker: SagaWorker, fail_at: int, after_effect: bool
) -> None:
    """A failing step: the compensations of the started steps (the failing one included)
    run once each in reverse order, later steps never run, and the step's own error is the
    workflow's failure. The failing step's compensation undoes it when it took effect and
    is a no-op when it did not."""
    run_id, script = new_script(fail_step=fail_at, fail_after_effect=after_effect)
    handle = await saga_worker.start(Plan(run_id))
    error = await failure(handle)
    assert isinstance(error, ActivityError)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    assert script.calls("step") == list(range(fail_at + 1))
    assert script.calls("undo") == list(reversed(range(fail_at + 1)))
    undone = list(reversed(range(fail_at + 1 if after_effect else fail_at)))
    assert script.calls("undone") == undone
    assert script.calls("noop") == ([] if after_effect else [fail_at])
    assert script.effects == set()
    state = await handle.query(SagaTestWorkflow.state)
    assert [s["status"] for s in state["steps"]] == ["done"] * fail_at + ["failed"]
    assert STEP_FAILED in state["steps"][-1]["last_error"]
    assert statuses(state["compensations"]) == ["done"] * (fail_at + 1)
    assert STEP_FAILED in state["original_error"]
    assert state["phase"] == "compensated"
    assert [phase for phase, _ in state["progress"]] == ["compensating"] * (fail_at + 1)
    assert await status(handle) == WorkflowExecutionStatus.FAILED


async def test_compensate_in_body_then_on_exit_runs_each_compensation_once(
    saga_worker: SagaWorker,
) -> None:
    """compensate(cause) inside the block, then again on leaving it: each runs once and the
    original error is still the workflow's failure."""
    run_id, script = new_script(fail_step=2)
    handle = await saga_worker.start(Plan(run_id, compensate_in_body=True))
    error = await failure(handle)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    assert script.calls("undo") == [2, 1, 0]
    assert script.effects == set()


async def test_bug_in_block_compensates_and_fails_workflow_with_application_error(
    saga_worker: SagaWorker,
) -> None:
    """A bug (KeyError) in the block: compensations run and the workflow fails (instead of
    retrying the workflow task forever) with an ApplicationError typed after the bug."""
    run_id, script = new_script()
    handle = await saga_worker.start(Plan(run_id, bug_at=1))
    error = await failure(handle)
    assert isinstance(error, ApplicationError)
    assert error.type == "KeyError"
    assert error.non_retryable
    assert error.message == "'bug in step 1'"  # the type is the failure's, not repeated
    assert script.calls("undo") == [1, 0]
    assert script.calls("noop") == [1]
    assert script.effects == set()
    assert await status(handle) == WorkflowExecutionStatus.FAILED


async def test_workflow_coroutine_compensation_runs_in_order_with_activities(
    saga_worker: SagaWorker,
) -> None:
    """A compensation that is a plain async def of the workflow runs in its place in the
    reverse order, between activity compensations."""
    run_id, script = new_script(fail_step=2)
    handle = await saga_worker.start(Plan(run_id, workflow_compensation_at=1))
    await failure(handle)
    assert script.calls("undo") == [2, 0]
    state = await handle.query(SagaTestWorkflow.state)
    assert [c["name"] for c in state["compensations"]] == [
        "undo_step",
        "undo_in_workflow",
        "undo_step",
    ]
    assert statuses(state["compensations"]) == ["done"] * 3


# -- a compensation fails ----------------------------------------------------------------------


async def test_compensation_failing_once_is_retried_and_original_error_kept(
    saga_worker: SagaWorker,
) -> None:
    """A compensation failing on its first attempt is retried by its retry policy: it
    succeeds, and the workflow fails with the step's error, not a SagaError."""
    run_id, script = new_script(fail_step=2, undo_fail_once={1})
    handle = await saga_worker.start(Plan(run_id))
    error = await failure(handle)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    assert script.calls("undo") == [2, 1, 1, 0]
    assert [attempt for kind, _, attempt in script.events if kind == "undo"] == [1, 1, 2, 1]
    assert script.effects == set()
    state = await handle.query(SagaTestWorkflow.state)
    assert statuses(state["compensations"]) == ["done"] * 3
    assert [c["attempts"] for c in state["compensations"]] == [1, 1, 1]


async def test_local_compensations_run_in_reverse_retried_by_the_worker(
    saga_worker: SagaWorker,
) -> None:
    """``local=True``: the same order and retries, as local activities (markers in the
    history, no activity events for the undos)."""
    run_id, script = new_script(fail_step=2, undo_fail_once={1})
    handle = await saga_worker.start(Plan(run_id, local_compensations=True))
    error = await failure(handle)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    assert script.calls("undo") == [2, 1, 1, 0]
    assert script.effects == set()
    events = [event async for event in handle.fetch_history_events()]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["do_step"] * 3
    markers = [e for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert len(markers) == 3


async def test_compensation_failing_always_raises_saga_error_with_cause_and_outcomes(
    saga_worker: SagaWorker,
) -> None:
    """A compensation failing for good (continue_on_error=True): the others still run, then
    the workflow fails with SagaError whose cause chain holds the step's error and whose
    details list every compensation's outcome."""
    run_id, script = new_script(fail_step=2, undo_fail_always={1})
    handle = await saga_worker.start(Plan(run_id))
    error = await failure(handle)
    assert isinstance(error, ApplicationError)
    assert error.type == "SagaError"
    assert error.non_retryable
    assert chain_types(error) == ["SagaError", "ActivityError", STEP_FAILED]
    assert "undo_step" in error.message
    outcomes = error.details[0]
    assert statuses(outcomes) == ["done", "failed", "done"]
    assert UNDO_FAILED in outcomes[1]["last_error"]
    assert outcomes[0]["last_error"] is None
    assert script.calls("undo") == [2, 1, 1, 0]  # 1: both attempts of its retry policy
    assert script.effects == {1}
    assert await status(handle) == WorkflowExecutionStatus.FAILED
    assert (await handle.query(SagaTestWorkflow.state))["phase"] == "compensation failed"


@pytest.mark.parametrize("calls", [0, 2], ids=["on-exit", "called-twice-in-the-block"])
async def test_stop_on_error_skips_later_compensations(saga_worker: SagaWorker, calls: int) -> None:
    """continue_on_error=False: after a compensation fails for good the remaining ones are
    marked skipped and never run; SagaError reports them as skipped. compensate() called
    again after its SagaError leaves them skipped."""
    run_id, script = new_script(fail_step=2, undo_fail_always={1})
    handle = await saga_worker.start(
        Plan(run_id, continue_on_error=False, bare_compensations=calls)
    )
    error = await failure(handle)
    assert chain_types(error) == ["SagaError", "ActivityError", STEP_FAILED]
    assert isinstance(error, ApplicationError)
    assert statuses(error.details[0]) == ["skipped", "failed", "done"]
    assert script.undo_order() == [2, 1]
    assert script.effects == {0, 1}


async def test_compensate_called_without_its_cause_in_an_except_keeps_the_original_error(
    saga_worker: SagaWorker,
) -> None:
    """``except: await saga.compensate(); raise`` (no cause given): the SagaError's cause
    is still the step's failure, and the saga's state names it."""
    run_id, _ = new_script(fail_step=2, undo_fail_always={1})
    handle = await saga_worker.start(Plan(run_id, bare_compensations=1))
    error = await failure(handle)
    assert chain_types(error) == ["SagaError", "ActivityError", STEP_FAILED]
    state = await handle.query(SagaTestWorkflow.state)
    assert STEP_FAILED in state["original_error"]


async def test_parallel_runs_every_compensation_despite_stop_on_error(
    saga_worker: SagaWorker,
) -> None:
    """parallel=True: every compensation runs, even with continue_on_error=False and one
    failing for good, and SagaError lists them all."""
    run_id, script = new_script(fail_step=3, undo_fail_always={2})
    handle = await saga_worker.start(Plan(run_id, steps=4, parallel=True, continue_on_error=False))
    error = await failure(handle)
    assert isinstance(error, ApplicationError)
    assert chain_types(error) == ["SagaError", "ActivityError", STEP_FAILED]
    assert statuses(error.details[0]) == ["done", "done", "failed", "done"]
    assert sorted(script.undo_order()) == [0, 1, 2, 3]
    assert script.effects == {2}


async def test_parallel_compensations_run_concurrently(saga_worker: SagaWorker) -> None:
    """parallel=True: while one compensation hangs the others run to the end (sequential
    order would have them wait)."""
    run_id, script = new_script(fail_step=2, fail_after_effect=True, slow_undo=2)
    handle = await saga_worker.start(Plan(run_id, parallel=True))
    await eventually(lambda: sorted(script.calls("undone")) == [0, 1], "the other compensations")
    assert not script.release.is_set()
    script.release.set()
    error = await failure(handle)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    assert script.effects == set()


# -- cancellation ------------------------------------------------------------------------------


async def test_cancel_during_step_compensates_and_ends_cancelled(
    saga_worker: SagaWorker,
) -> None:
    """Cancelling while a step runs: the step is cancelled, the compensations of the started
    steps (the interrupted one a no-op) run once each, and the workflow ends CANCELED."""
    run_id, script = new_script(block_step=1)
    handle = await saga_worker.start(Plan(run_id))
    await eventually(script.blocked.is_set, "step 1 to start")
    await handle.cancel()
    error = await failure(handle)
    assert isinstance(error, CancelledError)
    assert await status(handle) == WorkflowExecutionStatus.CANCELED
    assert script.calls("step") == [0, 1]
    assert script.calls("undo") == [1, 0]
    assert script.calls("noop") == [1]
    assert script.effects == set()
    state = await handle.query(SagaTestWorkflow.state)
    assert [s["status"] for s in state["steps"]] == ["done", "failed"]
    assert statuses(state["compensations"]) == ["done", "done"]
    await eventually(lambda: script.calls("step cancelled") == [1], "step 1 to be cancelled")


async def test_cancel_between_steps_compensates_and_ends_cancelled(
    saga_worker: SagaWorker,
) -> None:
    """Cancelling during a workflow timer between steps: the compensation registered for the
    next step (never run) is a no-op, the earlier ones undo, and the workflow is CANCELED."""
    run_id, script = new_script()
    handle = await saga_worker.start(Plan(run_id, pause_before=2))
    await paused(handle)
    await handle.cancel()
    error = await failure(handle)
    assert isinstance(error, CancelledError)
    assert await status(handle) == WorkflowExecutionStatus.CANCELED
    assert script.calls("step") == [0, 1]
    assert script.calls("undo") == [2, 1, 0]
    assert script.calls("noop") == [2]
    assert script.effects == set()
    state = await handle.query(SagaTestWorkflow.state)
    assert state["original_error"] == "cancelled"


async def test_cancel_during_compensation_lets_every_compensation_finish(
    saga_worker: SagaWorker,
) -> None:
    """Cancelling while compensating does not interrupt it: the running compensation and the
    ones after it all run to the end, then the workflow ends CANCELED."""
    run_id, script = new_script(fail_step=2, slow_undo=1)
    handle = await saga_worker.start(Plan(run_id))
    await eventually(script.slow_started.is_set, "compensation 1 to start")
    await handle.cancel()
    state = await query_until(
        handle, lambda s: s["compensations"][1]["status"] == "running", "the slow compensation"
    )
    assert statuses(state["compensations"]) == ["pending", "running", "done"]
    script.release.set()
    error = await failure(handle)
    assert isinstance(error, CancelledError)
    assert await status(handle) == WorkflowExecutionStatus.CANCELED
    assert script.calls("undo") == [2, 1, 0]
    assert script.effects == set()
    state = await handle.query(SagaTestWorkflow.state)
    assert statuses(state["compensations"]) == ["done"] * 3


async def test_cancel_during_compensation_still_reports_failed_compensation(
    saga_worker: SagaWorker,
) -> None:
    """Cancelling while compensating, when a compensation then fails for good: the failure
    is not hidden behind the cancellation, the workflow fails with SagaError."""
    run_id, script = new_script(fail_step=2, slow_undo=1, undo_fail_always={0})
    handle = await saga_worker.start(Plan(run_id))
    await eventually(script.slow_started.is_set, "compensation 1 to start")
    await handle.cancel()
    await query_until(
        handle, lambda s: s["compensations"][1]["status"] == "running", "the slow compensation"
    )
    script.release.set()
    error = await failure(handle)
    assert isinstance(error, ApplicationError)
    assert chain_types(error) == ["SagaError", "ActivityError", STEP_FAILED]
    assert statuses(error.details[0]) == ["failed", "done", "done"]
    assert await status(handle) == WorkflowExecutionStatus.FAILED
    assert script.undo_order() == [2, 1, 0]


# -- waiting for repair ------------------------------------------------------------------------


@pytest.mark.parametrize("continue_on_error", [True, False], ids=["continue", "stop"])
async def test_wait_for_repair_then_retry_failed_finishes_compensation(
    saga_worker: SagaWorker, continue_on_error: bool
) -> None:
    """wait_for_repair=True: a compensation failing for good leaves the workflow running and
    "needs attention"; a retry while still broken needs attention again; once repaired,
    retry_failed runs the failed (and skipped) compensations, in reverse order, and the
    workflow fails with the step's original error, not SagaError."""
    run_id, script = new_script(fail_step=2, undo_fail_always={1})
    plan = Plan(run_id, continue_on_error=continue_on_error, wait_for_repair=True)
    handle = await saga_worker.start(plan)
    state = await query_until(handle, lambda s: s["needs_attention"], "needs attention")
    first = "done" if continue_on_error else "skipped"
    assert statuses(state["compensations"]) == [first, "failed", "done"]
    assert UNDO_FAILED in state["compensations"][1]["last_error"]
    assert state["phase"] == "needs attention"
    # The phase is current when on_progress is called, whatever its words.
    phase, account = state["progress"][-1]
    assert phase == "needs attention" and "undo_step" in account
    assert await status(handle) == WorkflowExecutionStatus.RUNNING

    await handle.execute_update(SagaTestWorkflow.retry_compensations)  # still broken
    state = await query_until(
        handle,
        lambda s: s["needs_attention"] and s["compensations"][1]["attempts"] == 2,
        "needs attention again",
    )
    assert statuses(state["compensations"]) == [first, "failed", "done"]

    script.undo_fail_always.clear()
    await handle.execute_update(SagaTestWorkflow.retry_compensations)
    error = await failure(handle)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    state = await handle.query(SagaTestWorkflow.state)
    assert statuses(state["compensations"]) == ["done"] * 3
    assert [c["attempts"] for c in state["compensations"]] == [1, 3, 1]
    assert state["needs_attention"] is False
    assert state["phase"] == "compensated"
    phases = [phase for phase, _ in state["progress"]]
    assert phases.count("needs attention") == 2 and phases[-1] == "compensating"
    assert state["repaired_by"] == "retry"
    assert script.calls("undone") == ([0, 1] if continue_on_error else [1, 0])
    assert script.calls("noop") == [2]
    assert script.effects == set()


async def test_wait_for_repair_then_resolve_manually(saga_worker: SagaWorker) -> None:
    """wait_for_repair=True and resolve_manually(note): failed and skipped compensations are
    marked resolved (not run again), the note is kept, the workflow fails with the original
    error."""
    run_id, script = new_script(fail_step=2, undo_fail_always={1})
    plan = Plan(run_id, continue_on_error=False, wait_for_repair=True)
    handle = await saga_worker.start(plan)
    await query_until(handle, lambda s: s["needs_attention"], "needs attention")
    await handle.execute_update(SagaTestWorkflow.resolve_compensations, "refunded by phone")
    error = await failure(handle)
    assert chain_types(error) == ["ActivityError", STEP_FAILED]
    state = await handle.query(SagaTestWorkflow.state)
    assert statuses(state["compensations"]) == ["resolved manually", "resolved manually", "done"]
    assert state["repaired_by"] == "resolved manually"
    assert state["resolution_note"] == "refunded by phone"
    assert state["needs_attention"] is False
    assert state["phase"] == "compensated"
    assert script.undo_order() == [2, 1]  # nothing ran again
    assert script.effects == {0, 1}


# -- eviction ----------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
async def test_eviction_after_every_task_replays_and_leaves_nothing_behind(
    env: WorkflowEnvironment, parallel: bool
) -> None:
    """A worker that evicts the workflow after every workflow task (so every task replays the
    whole history, and the SDK cancels the workflow's tasks at each eviction): compensations
    still run once each with the usual outcome, and the evictions leave no coroutine behind
    never awaited (a RuntimeWarning, an error in this suite)."""
    async with Worker(
        env.client,
        task_queue=f"saga-evict-{uuid.uuid4()}",
        workflows=[SagaTestWorkflow],
        activities=[do_step, undo_step],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=0,
    ) as worker:
        evicting = SagaWorker(env.client, worker.task_queue)
        failing_id, failing = new_script(fail_step=2, fail_after_effect=True, undo_fail_always={0})
        handle = await evicting.start(Plan(failing_id, parallel=parallel))
        error = await failure(handle)
        assert chain_types(error) == ["SagaError", "ActivityError", STEP_FAILED]
        assert sorted(failing.undo_order()) == [0, 1, 2]
        assert sorted(failing.calls("undo")) == [0, 0, 1, 2]
        assert failing.effects == {0}

        pausing_id, pausing = new_script()
        handle = await evicting.start(Plan(pausing_id, parallel=parallel, pause_before=2))
        await paused(handle)
        await handle.cancel()
        error = await failure(handle)
        assert isinstance(error, CancelledError)
        assert sorted(pausing.calls("undo")) == [0, 1, 2]
        assert pausing.effects == set()
    gc.collect()  # a coroutine never awaited warns when collected: here, within this test


# -- property ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    steps: int
    stop: tuple[str, int] | None  # ("fail" | "fail after effect" | "cancel", step) or None
    undo_fail_always: set[int]
    parallel: bool
    continue_on_error: bool


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    steps = draw(st.integers(1, 5))
    stop = draw(
        st.none()
        | st.tuples(
            st.sampled_from(["fail", "fail after effect", "cancel"]), st.integers(0, steps - 1)
        )
    )
    return Scenario(
        steps=steps,
        stop=stop,
        undo_fail_always=draw(st.sets(st.integers(0, steps - 1))),
        parallel=draw(st.booleans()),
        continue_on_error=draw(st.booleans()),
    )


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios())
async def test_property_compensations_of_started_steps_run_exactly_once(
    saga_worker: SagaWorker, scenario: Scenario
) -> None:
    """For any number of steps, failure or cancel point, set of compensations failing for
    good, parallel and continue_on_error: exactly the compensations of the started steps run,
    each once (its retry policy's attempts aside), in reverse order when sequential (up to
    the first failure when stopping on error), and every outcome is reported: SagaError
    details when a compensation failed, else the original failure or the cancellation."""
    kind, at = scenario.stop or ("none", scenario.steps)
    run_id, script = new_script(
        fail_step=at if kind.startswith("fail") else None,
        fail_after_effect=kind == "fail after effect",
        undo_fail_always=set(scenario.undo_fail_always),
    )
    plan = Plan(
        run_id,
        steps=scenario.steps,
        parallel=scenario.parallel,
        continue_on_error=scenario.continue_on_error,
        pause_before=at if kind == "cancel" else None,
    )
    handle = await saga_worker.start(plan)
    if kind == "cancel":
        await paused(handle)
        await handle.cancel()

    registered = list(range(at + 1)) if kind != "none" else []
    took_effect = set(range(at + 1 if kind == "fail after effect" else at))
    if scenario.parallel:
        ran = registered
    else:
        ran = []
        for index in reversed(registered):
            ran.append(index)
            if index in scenario.undo_fail_always and not scenario.continue_on_error:
                break
    failed = [index for index in ran if index in scenario.undo_fail_always]
    expected = [
        "failed" if index in failed else "done" if index in ran else "skipped"
        for index in registered
    ]

    if kind == "none":
        result = await completed(handle)
        assert statuses(result["outcomes"]) == ["pending"] * scenario.steps
    else:
        error = await failure(handle)
        original = "CancelledError" if kind == "cancel" else STEP_FAILED
        if failed:
            assert isinstance(error, ApplicationError)
            assert chain_types(error)[0] == "SagaError"
            assert chain_types(error)[-1] == original
            assert statuses(error.details[0]) == expected
            assert await status(handle) == WorkflowExecutionStatus.FAILED
        else:
            assert chain_types(error)[-1] == original
            state = await handle.query(SagaTestWorkflow.state)
            assert statuses(state["compensations"]) == expected
            cancelled = kind == "cancel"
            assert await status(handle) == (
                WorkflowExecutionStatus.CANCELED if cancelled else WorkflowExecutionStatus.FAILED
            )

    assert script.calls("step") == list(range(at + 1 if kind.startswith("fail") else at))
    undo_calls = script.calls("undo")
    for index in registered:
        attempts = UNDO_ATTEMPTS if index in failed else 1 if index in ran else 0
        assert undo_calls.count(index) == attempts, (index, undo_calls)
    if scenario.parallel:
        assert sorted(script.undo_order()) == sorted(ran)
    else:
        assert script.undo_order() == ran
    assert script.effects == {i for i in took_effect if i not in ran or i in failed}


def test_a_compensation_given_by_name_is_refused_saying_what_it_takes() -> None:
    with pytest.raises(TypeError, match="an activity function or method reference"):
        Saga().add_compensation("undo")  # type: ignore[arg-type]
