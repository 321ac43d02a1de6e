"""A Saga for Temporal Python workflows: compensations that run once, whatever happens.

Generic: nothing here knows about pizzas. Use it in any workflow::

    saga = Saga(compensation_options={"start_to_close_timeout": timedelta(seconds=30)})
    async with saga:
        # Registered *before* the step: a step can take effect and still time out.
        saga.add_compensation(Payments.refund, charge, summary="Compensate: refund")
        with saga.step("charge"):
            await workflow.execute_activity_method(Payments.charge, charge, ...)

On any exception (``asyncio.CancelledError`` included) the block runs every registered
compensation, in reverse order (or all together with ``parallel=True``), then raises the
original error again. When a compensation fails for good the block raises `SagaError`,
whose cause is the original failure and whose details list every compensation's outcome.

Everything here runs inside the workflow, so it only uses deterministic primitives: the
workflow's own event loop, ``workflow.execute_activity`` (or ``execute_local_activity``, for a
compensation registered with ``local=True``) and ``workflow.wait_condition``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from sys import exc_info
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError

from pizzeria.saga_state import (
    DONE,
    FAILED,
    PENDING,
    RESOLVED,
    RUNNING,
    SKIPPED,
    CompensationState,
    Phase,
    SagaError,
    StepState,
    describe_error,
    repair_words,
    shown,
)

__all__ = [
    "DONE",
    "FAILED",
    "PENDING",
    "RESOLVED",
    "RUNNING",
    "SKIPPED",
    "CompensationState",
    "Phase",
    "Saga",
    "SagaError",
    "StepState",
    "repair_words",
]

#: Compensations must eventually succeed, so by default they get a long deadline and
#: retry with backoff without an attempt limit. Override per saga or per compensation.
DEFAULT_COMPENSATION_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=1),
    "schedule_to_close_timeout": timedelta(days=7),
    # From 1 s, doubling (RetryPolicy's defaults), up to a minute between attempts.
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=0),
}


@dataclass
class _Compensation:
    state: CompensationState
    function: Callable[..., Any]
    args: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)
    is_activity: bool = True
    local: bool = False


class Saga:
    """Compensations for the steps a workflow has started.

    Args:
        parallel: run the compensations together instead of in reverse order.
        continue_on_error: when sequential, keep compensating after one compensation fails
            (True) or stop there and mark the rest skipped (False).
        compensation_options: default keyword options of ``workflow.execute_activity`` for
            every compensation; each compensation's own options override them.
        wait_for_repair: when a compensation failed for good, do not fail the workflow:
            enter `Phase.NEEDS_ATTENTION` and wait for `retry_failed` or
            `resolve_manually` (an operator's Update) before finishing.
        on_progress: called with a one-line account of the compensation for people
            ("Compensating 1 of 2: refund", "Needs attention: ..."), e.g.
            ``workflow.set_current_details``; `phase` is already current when it is called.
            Code decides on `phase`, never on the text.
    """

    def __init__(
        self,
        parallel: bool = False,
        continue_on_error: bool = True,
        compensation_options: dict[str, Any] | None = None,
        *,
        wait_for_repair: bool = False,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.parallel = parallel
        self.continue_on_error = continue_on_error
        self.compensation_options = {
            **DEFAULT_COMPENSATION_OPTIONS,
            **(compensation_options or {}),
        }
        self.wait_for_repair = wait_for_repair
        self.on_progress = on_progress
        #: Names of the compensations that finished, in the order they finished.
        self.completed: list[str] = []
        self.steps: list[StepState] = []
        self._compensations: list[_Compensation] = []
        self._task: asyncio.Task[None] | None = None
        self._round = (0, 0)
        self._decision: tuple[str, str] | None = None
        self.phase = Phase.RUNNING
        self.repaired_by: str | None = None
        self.resolution_note: str | None = None
        self.original_error: str | None = None

    # -- registering -------------------------------------------------------------------

    def add_compensation(
        self,
        activity_function: Callable[..., Any],
        *args: Any,
        summary: str | None = None,
        local: bool = False,
        **activity_options: Any,
    ) -> None:
        """Register the undo of a step, before running the step.

        Args:
            activity_function: an activity function or method reference (not a name), or a
                plain ``async def`` of the workflow.
            args: the arguments it is called with.
            summary: shown as the activity's summary in the Web UI.
            local: run it as a local activity (``workflow.execute_local_activity``), on the
                worker that runs the workflow; the saga's options must then be ones a local
                activity takes (no ``heartbeat_timeout`` or ``task_queue``).
            activity_options: ``workflow.execute_activity`` options for this compensation.
        """
        if not callable(activity_function):  # a name would fail later, as an AttributeError
            raise TypeError(
                "add_compensation takes an activity function or method reference (or an "
                f"async def of the workflow), not {activity_function!r}"
            )
        definition = activity._Definition.from_callable(activity_function)
        name = definition.name if definition and definition.name else activity_function.__name__
        self._compensations.append(
            _Compensation(
                state=CompensationState(name=name, summary=summary),
                function=activity_function,
                args=args,
                options=activity_options,
                is_activity=definition is not None,
                local=local,
            )
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepState]:
        """Track a step for `state`: running, then done or failed with its error. Set the
        yielded state's ``attempts`` when the step's answer says how many it took."""
        state = StepState(name=name)
        self.steps.append(state)
        try:
            yield state
        except BaseException as error:
            state.status = FAILED
            state.last_error = describe_error(error)
            raise
        state.status = DONE

    def skip(self, name: str) -> None:
        """Track a step this run does not need: shown as skipped, never run."""
        self.steps.append(StepState(name=name, status=SKIPPED))

    # -- compensating ------------------------------------------------------------------

    @property
    def compensating(self) -> bool:
        return self._task is not None

    @property
    def needs_attention(self) -> bool:
        return self.phase is Phase.NEEDS_ATTENTION

    @property
    def compensated(self) -> bool:
        return self._task is not None and self._task.done()

    async def compensate(self, cause: BaseException | None = None) -> None:
        """Run every registered compensation once, however often this is called.

        A cancellation that arrives while compensating does not stop it: the compensations
        run in their own task, which this waits for to the end before re-raising the
        cancellation (or raising `SagaError`, if a compensation failed for good).

        ``cause`` is the failure that made the workflow compensate; called without one in
        an ``except`` block, it is the exception being handled there.

        Raises:
            SagaError: a compensation failed for good (and no repair was asked to wait).
        """
        if cause is None:
            cause = exc_info()[1]
        if cause is not None and self.original_error is None:
            self.original_error = describe_error(cause)
        # Registered since the last call: run too. Skipped ones (continue_on_error=False)
        # stay skipped: a second call reports them, it does not run them.
        fresh = [c for c in self._compensations if c.state.status == PENDING]
        started = self._task is None or (self._task.done() and bool(fresh))
        if started:
            self.phase = Phase.COMPENSATING
            self._task = asyncio.create_task(self._run_until_settled(fresh))
        task = self._task
        assert task is not None
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    break
                cancelled = True
        failed = [c.state for c in self._compensations if c.state.status == FAILED]
        if failed and isinstance(cause, SagaError) and not started:
            raise cause  # the verdict already given (compensate() in the block, then on exit)
        if failed:  # even when cancelled meanwhile: a cancellation must not hide it
            names = ", ".join(state.name for state in failed)
            raise SagaError(
                f"Compensation failed: {names} (original error: {self.original_error})",
                self.outcomes(),
            ) from cause
        if cancelled:
            raise asyncio.CancelledError()

    async def _run_until_settled(self, compensations: list[_Compensation]) -> None:
        await self._run(compensations)
        while self.wait_for_repair and self._failed():
            self.phase = Phase.NEEDS_ATTENTION
            names = ", ".join(c.state.name for c in self._failed())
            self._progress(f"Needs attention: {names} failed; retry or resolve by hand")
            self._decision = None
            await workflow.wait_condition(lambda: self._decision is not None)
            assert self._decision is not None
            action, note = self._decision
            self.phase = Phase.COMPENSATING
            unsettled = [c for c in self._compensations if c.state.status in (FAILED, SKIPPED)]
            if action == "retry":
                self.repaired_by = "retry"
                for compensation in unsettled:
                    compensation.state.status = PENDING
                await self._run([c for c in self._compensations if c.state.status == PENDING])
            else:
                self.repaired_by = "resolved manually"
                self.resolution_note = note
                for compensation in unsettled:
                    compensation.state.status = RESOLVED
        self.phase = Phase.COMPENSATION_FAILED if self._failed() else Phase.COMPENSATED

    def _failed(self) -> list[_Compensation]:
        return [c for c in self._compensations if c.state.status == FAILED]

    def _progress(self, text: str) -> None:
        if self.on_progress is not None:
            self.on_progress(text)

    async def _run(self, compensations: list[_Compensation]) -> None:
        self._round = (0, len(compensations))
        if self.parallel:
            # One task at a time: should creating one fail (the SDK refuses new tasks while
            # evicting the workflow), no coroutine is left behind never awaited.
            tasks = [asyncio.create_task(self._run_one(c)) for c in compensations]
            await asyncio.gather(*tasks)
            return
        for compensation in reversed(compensations):
            ok = await self._run_one(compensation)
            if not ok and not self.continue_on_error:
                for rest in compensations:
                    if rest.state.status == PENDING:
                        rest.state.status = SKIPPED
                return

    async def _run_one(self, compensation: _Compensation) -> bool:
        state = compensation.state
        state.status = RUNNING
        state.attempts += 1
        started, total = self._round
        self._round = (started + 1, total)
        self._progress(f"Compensating {started + 1} of {total}: {state.name}")
        try:
            await self._call(compensation)
        except Exception as error:
            state.status = FAILED
            state.last_error = describe_error(error)
            workflow.logger.warning("Compensation %s failed: %s", state.name, state.last_error)
            return False
        state.status = DONE
        state.last_error = None
        self.completed.append(state.name)
        return True

    def _call(self, compensation: _Compensation) -> Awaitable[Any]:
        if not compensation.is_activity:
            return compensation.function(*compensation.args)  # type: ignore[no-any-return]
        options = {**self.compensation_options, **compensation.options}
        if compensation.state.summary is not None:
            options.setdefault("summary", compensation.state.summary)
        if compensation.local:
            return workflow.execute_local_activity(
                compensation.function, args=list(compensation.args), **options
            )
        return workflow.execute_activity(
            compensation.function, args=list(compensation.args), **options
        )

    # -- repair ------------------------------------------------------------------------

    def retry_failed(self) -> None:
        """Operator's choice: run the failed (and skipped) compensations again."""
        self._decision = ("retry", "")

    def resolve_manually(self, note: str) -> None:
        """Operator's choice: the failed compensations were handled outside the workflow."""
        self._decision = ("resolve", note)

    # -- the context manager -----------------------------------------------------------

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or not isinstance(error, (Exception, asyncio.CancelledError)):
            # Not a failure: continue-as-new, or the SDK evicting the workflow from its cache
            # (the workflow goes on elsewhere): nothing to compensate, let it through.
            return False
        await self.compensate(cause=error)
        if isinstance(error, (FailureError, asyncio.CancelledError)):
            return False  # re-raised as it is: the original error is the workflow's outcome
        # A bug (TypeError, KeyError...) would otherwise fail the workflow task forever and
        # leave the workflow stuck "Running": fail the workflow with it instead.
        # Its type is the failure's type: the message is the error's own, not repeated.
        kind = type(error).__name__
        raise ApplicationError(str(error) or kind, type=kind, non_retryable=True) from error

    @property
    def repair_said(self) -> str:
        """How an operator ended a needs-attention saga, in words, with the note."""
        return repair_words(self.repaired_by, self.resolution_note)

    # -- what a query shows ------------------------------------------------------------

    def outcomes(self) -> list[dict[str, Any]]:
        return [shown(c.state) for c in self._compensations]

    def state(self) -> dict[str, Any]:
        """The phase; steps and compensations with status, attempts and last error (for
        a query)."""
        return {
            "steps": [shown(step) for step in self.steps],
            "compensations": [
                {**outcome, "summary": c.state.summary}
                for outcome, c in zip(self.outcomes(), self._compensations, strict=True)
            ],
            "phase": self.phase.value,
            "compensating": self.compensating,
            "needs_attention": self.needs_attention,
            "repaired_by": self.repaired_by,
            "resolution_note": self.resolution_note,
            "original_error": self.original_error,
        }
