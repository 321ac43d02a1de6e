"""How a step of the order runs; workflows.py says which steps run, in what order.

- `StepRunner.activity`: the one way the order runs an activity, regular or (on the fast
  path) local, and how many attempts it took (attempts.py);
- `StepRunner.undoable`: a step before the pivot, which a cancel sends back once it
  finished;
- `StepRunner.pivot`: the step nothing interrupts and nothing gives up;
- `StepRunner.forward`: a step past the pivot, retried until it answers.

Each tracks its step in the saga (`Saga.step`). This runs inside the workflow (the sandbox
passes the module through): only the workflow's deterministic APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from temporalio import activity as activities
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError
from temporalio.workflow import ActivityCancellationType

from pizzeria import attempts
from pizzeria.order_policy import FORWARD_RETRY, PIVOT_RETRY, STEP_RETRY, STEP_TIMEOUT
from pizzeria.order_visibility import said
from pizzeria.saga import Saga, StepState

T = TypeVar("T")


class StepRunner:
    """Runs the order's steps for one workflow; ``cancelling`` says whether the order was
    asked to cancel. ``fast_path`` and ``step_retry`` come from the order's settings."""

    def __init__(self, saga: Saga, cancelling: Callable[[], bool]) -> None:
        self.saga = saga
        self.cancelling = cancelling
        self.fast_path = False
        self.step_retry = STEP_RETRY
        #: The pivot answered: from then on the order only goes forward.
        self.pivot_passed = False

    async def once(self, name: str, activity: Any, argument: Any, answer: type[T], **how: Any) -> T:
        """A step with no effect to undo (it may fail the order): tracked, run once."""
        with self.saga.step(name) as step:
            return await self.activity(step, activity, argument, answer, **how)

    async def undoable(
        self, name: str, activity: Any, argument: Any, answer: type[T], *, summary: str
    ) -> T:
        """A step before the pivot, which its compensation can undo.

        A cancel waits for the step in flight to finish, so that its compensation can never
        overtake it (and undo nothing while the step still takes effect). A local step is
        cancelled on its worker at once, but the activity sees its ledger write through
        before it answers "cancelled" (activities.in_thread).
        """
        with self.saga.step(name) as step:
            with self._cancel_goes_back():
                result = await self.activity(
                    step,
                    activity,
                    argument,
                    answer,
                    retry_policy=self.step_retry,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    summary=summary,
                )
            if self.cancelling():
                raise asyncio.CancelledError("order cancelled")
            return result

    async def pivot(
        self, name: str, activity: Any, argument: Any, answer: type[T], *, summary: str
    ) -> T:
        """The pivot is neither interrupted nor given up while it may have taken effect: a
        bill whose answer was lost must be retried until it answers, never read as "not
        billed" and undone. Once it answered, even a cancel accepted meanwhile is too late.
        """
        with self.saga.step(name) as step:
            with self._cancel_goes_back():
                work = self.activity(
                    step, activity, argument, answer, retry_policy=PIVOT_RETRY, summary=summary
                )
                result: T = await uncancellable(work, "the bill is being sent")
            self.pivot_passed = True
            return result

    async def forward(
        self, name: str, activity: Any, argument: Any, answer: type[T], **how: Any
    ) -> T:
        """A step past the pivot: retried until it answers, never compensated. It runs as
        a regular activity even on the fast path (it heartbeats)."""
        with self.saga.step(name) as step:
            return await self.activity(
                step, activity, argument, answer, retry_policy=FORWARD_RETRY, local=False, **how
            )

    async def activity(
        self,
        step: StepState,
        activity: Any,
        argument: Any,
        answer: type[T],
        *,
        summary: str,
        retry_policy: RetryPolicy | None = None,
        local: bool | None = None,
        **options: Any,
    ) -> T:
        """The one way the order runs an activity: on the fast path as a local activity,
        held (and retried) by the worker that runs the order, otherwise as a regular one.
        ``answer`` is the activity's result type; ``step`` learns how many attempts the
        activity took, from its answer or its failure (attempts.py)."""
        is_local = self.fast_path if local is None else local
        run = workflow.execute_local_activity if is_local else workflow.execute_activity
        policy = retry_policy or self.step_retry
        options.setdefault("start_to_close_timeout", STEP_TIMEOUT)
        try:
            reply = await run(
                type_name(activity),  # by name: a reference would decode as its return type
                argument,
                result_type=attempts.with_attempt(answer),
                retry_policy=policy,
                summary=said(summary),
                **options,
            )
        except FailureError as error:  # an ActivityError, or a local activity's own
            step.attempts = attempts.attempts_of_failure(error, policy)
            raise
        result, step.attempts = attempts.split(reply, answer)
        return result

    @contextlib.contextmanager
    def _cancel_goes_back(self) -> Iterator[None]:
        """Around a step that may be undone: a cancelled order does not start it, and goes
        back whatever the step did."""
        if self.cancelling():
            raise asyncio.CancelledError("order cancelled")
        try:
            yield
        except Exception:
            if self.cancelling():
                raise asyncio.CancelledError("order cancelled") from None
            raise


def type_name(activity: Any) -> str:
    """The activity type of an activity method reference."""
    name = activities._Definition.must_from_callable(activity).name
    assert name is not None, f"{activity!r} is a dynamic activity"
    return name


async def uncancellable(work: Any, why: str) -> Any:
    """Finish the work whatever happens: a cancellation meanwhile is ignored."""
    task: asyncio.Task[Any] = asyncio.create_task(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                workflow.logger.info("Cancellation ignored: %s", why)
    return task.result()
