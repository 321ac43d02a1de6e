"""Cancelling an order, and repairing one that needs attention: the Updates of
`PizzaOrderWorkflow` (workflows.py) that act on a running order from outside.

``cancel_order`` is accepted before the pivot (the bill) and undoes what the order did;
after it the order is on its way and the cancel is refused (`TOO_LATE_TO_CANCEL`). On the
fast path a cancel first asks the ledger whether a lost workflow task already sent the
bill. ``retry_compensations`` and ``resolve_manually`` end a saga that waits for an
operator. `CancelAndRepair` is a base of the workflow, as `order_hold.HoldFirst` is: this
runs inside the workflow (passed through the sandbox).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow

import pizzeria.order_visibility as shown
import pizzeria.text as text
from pizzeria.models import (
    ASK_BILL_RECORDED,
    CancelResult,
    RepairResult,
    RunRef,
    order_number_of,
    order_ref,
)
from pizzeria.order_steps import StepRunner
from pizzeria.saga import Saga

TOO_LATE_TO_CANCEL = "the order is already billed and on its way; it can no longer be cancelled"

# Orders started with this patch, on the fast path, ask the ledger whether the bill was
# sent before a cancel is let through (see cancel_order); asked only then.
CANCEL_ASKS_FOR_THE_BILL_PATCH = "cancel-asks-for-the-bill"
#: How long a cancel on the fast path waits for the ledger's answer, each attempt.
BILL_QUESTION_TIMEOUT = timedelta(seconds=10)


class CancelAndRepair:
    """The cancel and repair Updates, for `PizzaOrderWorkflow`."""

    # Set by PizzaOrderWorkflow; read and set here.
    saga: Saga
    steps: StepRunner
    finished: bool
    outcome: str
    cancel_reason: str | None
    _order_task: asyncio.Task[Any] | None
    _asking_for_the_bill: bool

    @workflow.update
    async def cancel_order(self, reason: str) -> CancelResult:
        if await self._billed_in_a_lost_task():
            await workflow.wait_condition(lambda: self.steps.pivot_passed or self.finished)
            return CancelResult(accepted=False, reason=TOO_LATE_TO_CANCEL)
        self.cancel_reason = reason or "cancelled by request"
        shown.show_details("Cancelling")
        if self._order_task is None:
            return CancelResult(accepted=True, reason=self.cancel_reason)
        self._order_task.cancel()
        await workflow.wait_condition(
            lambda: self.saga.compensated or self.finished or self.steps.pivot_passed
        )
        if self.steps.pivot_passed:
            self.cancel_reason = None
            return CancelResult(accepted=False, reason=TOO_LATE_TO_CANCEL)
        return CancelResult(
            accepted=True, reason=self.cancel_reason, compensations=list(self.saga.completed)
        )

    async def _billed_in_a_lost_task(self) -> bool:
        """On the fast path, whether the bill was sent by a workflow task that was then
        lost (its worker killed before the task completed): the history shows the order
        before its pivot, the ledger and the provider hold the bill. The ledger is asked
        (a local activity) before a cancel is let through; if the bill is there, the order
        goes on (its next task sends the bill again under the same key, which answers the
        same capture) and the cancel is too late, as for any billed order. Regular steps
        are in the history once they ran: nothing to ask."""
        if not self.steps.fast_path or self._order_task is None or self.steps.pivot_passed:
            return False
        if not workflow.patched(CANCEL_ASKS_FOR_THE_BILL_PATCH):
            return False
        info = workflow.info()
        self._asking_for_the_bill = True
        try:
            billed: bool = await workflow.execute_local_activity(
                ASK_BILL_RECORDED,
                RunRef(order_ref(info.workflow_id, info.run_id), order_number_of(info.workflow_id)),
                result_type=bool,
                start_to_close_timeout=BILL_QUESTION_TIMEOUT,
                summary=shown.said("Ask the ledger whether the bill was sent"),
            )
        finally:
            self._asking_for_the_bill = False
        return billed

    @cancel_order.validator
    def _validate_cancel(self, reason: str) -> None:
        text.check_text("reason", reason)  # validators do not run on replay
        if self.steps.pivot_passed:
            raise ValueError(TOO_LATE_TO_CANCEL)
        if self.finished:
            raise ValueError(f"the order is already closed ({self.outcome})")
        if self.cancel_reason is not None or self._asking_for_the_bill:
            raise ValueError("the order is already being cancelled")
        if self.saga.compensating:
            raise ValueError("the order already failed and is being compensated")

    @workflow.update
    async def retry_compensations(self) -> RepairResult:
        self.saga.retry_failed()
        await workflow.wait_condition(lambda: not self.saga.needs_attention)
        await workflow.wait_condition(lambda: self.saga.compensated or self.saga.needs_attention)
        return RepairResult(
            "retry", "needs attention" if self.saga.needs_attention else "compensated"
        )

    @workflow.update
    async def resolve_manually(self, note: str) -> RepairResult:
        self.saga.resolve_manually(note)
        await workflow.wait_condition(lambda: self.saga.compensated)
        return RepairResult("resolve", "resolved manually")

    @retry_compensations.validator
    def _validate_retry(self) -> None:
        self._require_attention()

    @resolve_manually.validator
    def _validate_resolve(self, note: str) -> None:
        text.check_text("note", note)
        self._require_attention()
        if not note.strip():
            raise ValueError("say what was done by hand: the note must not be empty")

    def _require_attention(self) -> None:
        if not self.saga.needs_attention:
            raise ValueError("the order does not need attention: no compensation has failed")
