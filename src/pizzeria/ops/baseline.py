"""The bare engine, for the benchmark: a workflow of no-op activities shaped like an order.

``pizzeria bench`` runs these next to the real order saga, on the same worker and server,
so that what the saga, the ledger and the checks cost shows as a ratio to this baseline.
The module imports nothing but the SDK, so that the workflow sandbox, which re-runs a
workflow's module for every new workflow, costs it no more than the bare minimum.

Two shapes, one per order outcome, with as many activities as the order runs:

* good order: ``get_distance``, ``update_inventory``, ``process_credit_card``,
  ``send_bill``, ``notify_delivery_driver``: five no-ops, then the workflow completes;
* bad-card order: ``get_distance``, ``update_inventory`` (no-ops), ``process_credit_card``
  (fails at once, non-retryable), then ``refund_customer`` and ``revert_inventory``
  (no-ops, in that order), then the workflow fails with the original error: five
  activities, one failing, as the saga does.

And one more workflow, for the order's fast path: `LocalBaselineWorkflow` runs the same
shapes with the order's fast-path steps (``LOCAL_STEPS``) as local activities and the
others (the driver search) as regular ones, as the fast path does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError

BASELINE_WORKFLOW_TYPE = "BenchBaselineWorkflow"
LOCAL_BASELINE_WORKFLOW_TYPE = "BenchLocalBaselineWorkflow"
#: What the order's fast path runs as local activities (the driver search stays regular).
LOCAL_STEPS = frozenset(
    {
        "get_distance",
        "update_inventory",
        "process_credit_card",
        "send_bill",
        "revert_inventory",
        "refund_customer",
    }
)
NOOP_ACTIVITY = "bench_noop"
FAILING_ACTIVITY = "bench_fail"
BASELINE_FAILURE_ERROR = "BenchBaselineFailure"
ACTIVITY_TIMEOUT = timedelta(seconds=5)


@dataclass
class BaselineShape:
    """What one baseline workflow runs.

    Attributes:
        steps: no-op activities, run one after the other.
        failing_step: when set, an activity that fails (non-retryable) after ``steps``.
        compensations: no-op activities run after the failure, one after the other; the
            workflow then fails with the failing step's error.
    """

    steps: list[str]
    failing_step: str | None = None
    compensations: list[str] = field(default_factory=list)

    @property
    def activity_count(self) -> int:
        return len(self.steps) + (self.failing_step is not None) + len(self.compensations)


GOOD_ORDER_SHAPE = BaselineShape(
    steps=[
        "get_distance",
        "update_inventory",
        "process_credit_card",
        "send_bill",
        "notify_delivery_driver",
    ]
)
#: No step at all: what a workflow costs the engine to start, run and complete.
EMPTY_SHAPE = BaselineShape(steps=[])
BAD_CARD_SHAPE = BaselineShape(
    steps=["get_distance", "update_inventory"],
    failing_step="process_credit_card",
    compensations=["refund_customer", "revert_inventory"],
)


@activity.defn(name=NOOP_ACTIVITY)
async def noop(step: str) -> str:
    return step


@activity.defn(name=FAILING_ACTIVITY)
async def fail(step: str) -> str:
    raise ApplicationError(f"{step} failed", type=BASELINE_FAILURE_ERROR, non_retryable=True)


RunActivity = Callable[[Any, str], Awaitable[Any]]


def regular(function: Any, step: str) -> Awaitable[Any]:
    return workflow.execute_activity(function, step, start_to_close_timeout=ACTIVITY_TIMEOUT)


def local_or_regular(function: Any, step: str) -> Awaitable[Any]:
    if step not in LOCAL_STEPS:
        return regular(function, step)
    return workflow.execute_local_activity(function, step, start_to_close_timeout=ACTIVITY_TIMEOUT)


async def run_shape(shape: BaselineShape, run_activity: RunActivity) -> str:
    for step in shape.steps:
        await run_activity(noop, step)
    if shape.failing_step is None:
        return "done"
    try:
        await run_activity(fail, shape.failing_step)
    except ActivityError:
        for step in shape.compensations:
            await run_activity(noop, step)
        raise
    return "done"


@workflow.defn(name=BASELINE_WORKFLOW_TYPE)
class BaselineWorkflow:
    @workflow.run
    async def run(self, shape: BaselineShape) -> str:
        return await run_shape(shape, regular)


@workflow.defn(name=LOCAL_BASELINE_WORKFLOW_TYPE)
class LocalBaselineWorkflow:
    """The fast path's bare shape: local no-ops where the fast path runs local steps."""

    @workflow.run
    async def run(self, shape: BaselineShape) -> str:
        return await run_shape(shape, local_or_regular)


BASELINE_ACTIVITIES = (noop, fail)
