"""Temporal's side of the check: every run of the order workflow, and how it ended."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.client import STATUS_NAMES
from pizzeria.failures import cause_chain, error_type_of, innermost
from pizzeria.models import WORKFLOW_TYPE, OrderConfirmation, order_ref
from pizzeria.workflows import PizzaOrderWorkflow

DEFAULT_QUERY = f'WorkflowType = "{WORKFLOW_TYPE}"'
COMPLETED = "COMPLETED"
OPEN = "RUNNING"
# Closed without completing: every effect must have been undone.
UNDONE = ("FAILED", "CANCELLED", "TERMINATED", "TIMED_OUT")
OUTCOMES = (COMPLETED, *UNDONE, OPEN)
CONCURRENCY = 16  # describe and result calls in flight at once


@dataclass
class OrderRecord:
    """What Temporal says about one run of an order."""

    workflow_id: str
    run_id: str
    status: str
    amount: int | None = None  # a completed order's confirmation
    error_type: str | None = None  # how a failed order failed
    settled_by_hand: str | None = None  # a compensation resolved by an operator, with note
    details: str = ""  # an open order: what it is doing (e.g. "Needs attention: ...")

    @property
    def order_ref(self) -> str:
        return order_ref(self.workflow_id, self.run_id)


def failure_type(error: BaseException | None) -> str:
    """The typed error clients see, else the innermost cause (say, an activity timeout)."""
    typed = error_type_of(error)
    if typed is not None or error is None:
        return typed or "unknown"
    return type(innermost(error)).__name__


def hand_resolution(error: BaseException | None) -> str | None:
    """The operator's note when a compensation was resolved by hand (not retried)."""
    for link in cause_chain(error):
        if isinstance(link, ApplicationError) and link.details:
            first = link.details[0]
            if isinstance(first, dict) and first.get("repaired_by") == "resolved manually":
                return str(first.get("note") or "")
    return None


async def order_record(client: Client, workflow_id: str, run_id: str) -> OrderRecord | None:
    """Describe one run and read how it ended; None when Temporal does not know it."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id, result_type=OrderConfirmation)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    status = STATUS_NAMES.get(description.status, "UNKNOWN") if description.status else "UNKNOWN"
    record = OrderRecord(workflow_id, run_id, status)
    if status == OPEN:
        try:
            state = await handle.query(
                PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=5)
            )
            record.details = str(state.get("details") or "")
        except Exception:  # no worker to answer: the order is open all the same
            record.details = ""
        return record
    try:
        confirmation = await handle.result(follow_runs=False)
        record.amount = confirmation.amount
    except WorkflowFailureError as failure:
        record.error_type = failure_type(failure.cause)
        record.settled_by_hand = hand_resolution(failure.cause)
    return record


async def temporal_records(
    client: Client, query: str = DEFAULT_QUERY, *, limit: int | None = None
) -> list[OrderRecord]:
    """Every run of the order workflow that the visibility store lists, described."""
    executions = [
        (execution.id, execution.run_id)
        async for execution in client.list_workflows(query, limit=limit)
    ]
    return await describe_all(client, executions)


async def describe_all(client: Client, runs: list[tuple[str, str]]) -> list[OrderRecord]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(workflow_id: str, run_id: str) -> OrderRecord | None:
        async with gate:
            return await order_record(client, workflow_id, run_id)

    found = await asyncio.gather(*(one(w, r) for w, r in runs))
    return [record for record in found if record is not None]
