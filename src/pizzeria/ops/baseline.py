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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError

BASELINE_WORKFLOW_TYPE = "BenchBaselineWorkflow"
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


@workflow.defn(name=BASELINE_WORKFLOW_TYPE)
class BaselineWorkflow:
    @workflow.run
    async def run(self, shape: BaselineShape) -> str:
        for step in shape.steps:
            await workflow.execute_activity(noop, step, start_to_close_timeout=ACTIVITY_TIMEOUT)
        if shape.failing_step is None:
            return "done"
        try:
            await workflow.execute_activity(
                fail, shape.failing_step, start_to_close_timeout=ACTIVITY_TIMEOUT
            )
        except ActivityError:
            for step in shape.compensations:
                await workflow.execute_activity(noop, step, start_to_close_timeout=ACTIVITY_TIMEOUT)
            raise
        return "done"


BASELINE_ACTIVITIES = (noop, fail)
