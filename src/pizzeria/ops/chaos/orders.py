"""The customers' side of a chaos run: place, cancel, repair and follow every order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.client import static_summary, status_name
from pizzeria.models import TASK_QUEUE, PizzaOrder, workflow_id_for
from pizzeria.ops.chaos.plan import PlannedOrder
from pizzeria.workflows import PizzaOrderWorkflow

T = TypeVar("T")

RETRYABLE = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.INTERNAL,
    RPCStatusCode.CANCELLED,
}
ATTENTION_CHECK_SECONDS = 30.0  # an order open this long is asked whether it needs help


async def retrying(call: Callable[[], Awaitable[T]], until: float) -> T:
    """Call again while the server is unreachable (it restarts), until ``until``."""
    delay = 0.2
    while True:
        try:
            return await call()
        except RPCError as error:
            if error.status not in RETRYABLE or time.monotonic() > until:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def interruptible(update: Awaitable[T]) -> T:
    """An Update's call, cancelled as any other call is.

    The SDK turns the cancellation of a call waiting for an Update into a
    ``WorkflowUpdateRPCTimeoutOrCancelledError``. A task stopped there (Ctrl-C) would then
    end with that error instead of cancelled: its waiter, cancelled first, never reads it,
    so asyncio prints it as a traceback ("exception was never retrieved"), and a caller
    catching ``Exception`` would take the interruption for a failed call and carry on.
    """
    try:
        return await update
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None
        raise


async def stopped(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, whatever it is (so nothing is left unread)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class ChaosOrders:
    """Every planned order, placed and followed until it closes (or the deadline).

    Args:
        started: called as each order starts (the monkey counts them).
        closed: called with each order's final status.
    """

    def __init__(
        self,
        client: Client,
        deadline: float,
        say: Callable[[str], None],
        started: Callable[[], None],
        closed: Callable[[str], None],
    ) -> None:
        self.client = client
        self.deadline = deadline
        self.say = say
        self.started = started
        self.closed = closed
        self.outcomes: Counter[str] = Counter()
        self.repaired = 0
        self.notes: list[str] = []

    async def place_all(self, planned: list[PlannedOrder], concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(self._one_order(p, gate) for p in planned))

    async def _one_order(self, planned: PlannedOrder, gate: asyncio.Semaphore) -> None:
        try:
            await self._place(planned, gate)
        except Exception as error:  # counted as open: the run then fails, with a note
            self.notes.append(f"{planned.order.order_number}: {type(error).__name__}: {error}")

    async def _place(self, planned: PlannedOrder, gate: asyncio.Semaphore) -> None:
        async with gate:
            handle = await self._start(planned.order)
            self.started()
            canceller = None
            if planned.cancel_after is not None:
                canceller = asyncio.create_task(self._cancel(handle, planned))
            try:
                status = await self._wait_closed(handle)
            except BaseException:  # Ctrl-C, or the order lost track of: its cancel stops
                if canceller is not None:
                    await stopped(canceller)
                raise
            if canceller is not None:  # closed: the cancel's answer is on its way
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(canceller, timeout=30)
            self.outcomes[status] += 1
            self.closed(status)

    async def _start(self, order: PizzaOrder) -> WorkflowHandle[Any, Any]:
        client = self.client
        workflow_id = workflow_id_for(order.order_number)

        async def attempt() -> WorkflowHandle[Any, Any]:
            try:
                return await client.start_workflow(
                    PizzaOrderWorkflow.order_pizza,
                    order,
                    id=workflow_id,
                    task_queue=TASK_QUEUE,
                    static_summary=static_summary(order),
                    # A start retried after a lost reply must never make a second run.
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                description = await client.get_workflow_handle(workflow_id).describe()
                return client.get_workflow_handle(workflow_id, run_id=description.run_id)

        return await retrying(attempt, self.deadline)

    async def _cancel(self, handle: WorkflowHandle[Any, Any], planned: PlannedOrder) -> None:
        """Like `pizzeria cancel`: the cancel_order Update, then the cancellation request."""
        assert planned.cancel_after is not None
        await asyncio.sleep(planned.cancel_after)
        until = min(self.deadline, time.monotonic() + 120)
        try:
            if planned.cancel_by_update and not await self._cancel_accepted(handle, until):
                return  # refused: past the bill, or already closed
            await retrying(handle.cancel, until)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it closed meanwhile
                self.notes.append(f"cancel of {handle.id}: {error}")

    async def _cancel_accepted(self, handle: WorkflowHandle[Any, Any], until: float) -> bool:
        try:
            result = await retrying(
                lambda: interruptible(
                    handle.execute_update(
                        PizzaOrderWorkflow.cancel_order,
                        "chaos: the customer changed their mind",
                        id="chaos-cancel",  # a retried Update is the same Update
                    )
                ),
                until,
            )
        except WorkflowUpdateFailedError as error:
            return "already being cancelled" in str(error.cause)
        return bool(result.accepted)

    async def _repair_if_parked(self, handle: WorkflowHandle[Any, Any]) -> None:
        try:
            state = await handle.query(
                PizzaOrderWorkflow.saga_state, rpc_timeout=timedelta(seconds=5)
            )
            if not state.get("needs_attention"):
                return
            await interruptible(
                handle.execute_update(
                    PizzaOrderWorkflow.retry_compensations,
                    id=f"chaos-repair-{self.repaired}",
                    rpc_timeout=timedelta(seconds=60),
                )
            )
            self.repaired += 1
            self.say(f"{handle.id} needed attention: compensations retried")
        except Exception as error:  # a worker down, a server restarting: ask again later
            self.notes.append(f"repair of {handle.id}: {type(error).__name__}")

    async def _wait_closed(self, handle: WorkflowHandle[Any, Any]) -> str:
        while time.monotonic() < self.deadline:
            wait = min(ATTENTION_CHECK_SECONDS, max(1.0, self.deadline - time.monotonic()))
            try:
                await asyncio.wait_for(handle.result(follow_runs=False), timeout=wait)
                break
            except WorkflowFailureError:
                break
            except TimeoutError:
                await self._repair_if_parked(handle)
            except RPCError as error:
                if error.status not in RETRYABLE:
                    raise
                await asyncio.sleep(0.5)
        description = await retrying(handle.describe, self.deadline + 30)
        return status_name(description.status)
