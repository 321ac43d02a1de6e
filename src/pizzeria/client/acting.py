"""Acting on a running order: cancel it, repair it, or abandon it when it cannot finish.

Each act goes to one run, the order number's latest when it is asked, and stays with that
run: a cancellation request goes to the run that accepted the cancel, never to a newer run
of the same order number (`pizzeria order --again` may start one meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import text
from pizzeria.client.attention import before_attention
from pizzeria.client.outcomes import order_handle
from pizzeria.history.reader import ENDED_FROM_OUTSIDE, read_history, status_name
from pizzeria.ledger import AlreadyBilled, Effect, Ledger
from pizzeria.models import (
    STEP_SEND_BILL,
    CancelResult,
    OrderConfirmation,
    RepairResult,
    RunRef,
    order_ref,
    workflow_id_for,
)
from pizzeria.money import OrderMoney
from pizzeria.payments.port import PaymentGateway
from pizzeria.saga import Phase
from pizzeria.workflows import PizzaOrderWorkflow


class OrderRefused(Exception):
    """The order said no to a cancel or a repair (or is closed): the reason is the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")


async def running_order(
    client: Client, order_number: str, run_id: str | None = None
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    """The order's latest run, or its run ``run_id`` (a handle on that run alone), refused
    when it is closed."""
    await order_handle(client, order_number)
    workflow_id = workflow_id_for(order_number)
    latest = client.get_workflow_handle_for(
        PizzaOrderWorkflow.order_pizza, workflow_id, run_id=run_id
    )
    description = await latest.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        state = status_name(description.status)
        raise OrderRefused(f"order {order_number} is already closed ({state})")
    return client.get_workflow_handle_for(
        PizzaOrderWorkflow.order_pizza, workflow_id, run_id=description.run_id
    )


def stuck_advice(order_number: str) -> str:
    return (
        f"order {order_number} is stuck: its workflow task keeps failing (see `pizzeria "
        f"status {order_number}`); fix the workers, or end it with `pizzeria repair "
        f"{order_number} --abandon`"
    )


T = TypeVar("T")

#: How long a cancel or a repair waits for the order to answer: a worker runs it in well
#: under a second; past this, none is taking the order's work.
ANSWER_SECONDS = 30.0


class OrderDidNotAnswer(ConnectionError):
    """No worker ran the order's answer to a cancel or a repair in time (one line).
    ``run`` is the run that was asked, when the question may still reach it."""

    def __init__(self, message: str, run: WorkflowHandle[Any, Any] | None = None) -> None:
        super().__init__(message)
        self.run = run


class OrderWaitsForOperator(OrderDidNotAnswer):
    """The cancel was accepted, but undoing the order needs an operator first (one line)."""


#: How long a cancel or a repair waits for its answer before it says that it waits.
SAY_WAITING_SECONDS = 2.0


async def _ask(
    client: Client,
    order_number: str,
    update: Any,
    *args: Any,
    patience: float = ANSWER_SECONDS,
    unless_attention: bool = False,
    run: WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation] | None = None,
    waiting: Callable[[], None] | None = None,
) -> tuple[Any, WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]]:
    """Run an Update on the order's latest run: its answer, and a handle on the run that
    accepted it (the Update goes to that run alone). A refusal, or an order that cannot
    answer because its workflow task keeps failing, is an `OrderRefused` saying what to do;
    no answer within ``patience`` seconds (no worker running) is `OrderDidNotAnswer`.
    ``waiting`` is called once the Update is sent and `SAY_WAITING_SECONDS` went by
    without its answer (a command's progress line)."""
    run = run or await running_order(client, order_number)
    deadline = asyncio.timeout(patience)
    progress = None
    if waiting is not None and patience > SAY_WAITING_SECONDS:
        progress = asyncio.get_running_loop().call_later(SAY_WAITING_SECONDS, waiting)
    try:
        async with deadline:
            if not unless_attention:
                return await run.execute_update(update, *args), run
            waits = OrderWaitsForOperator(
                f"order {order_number} needs attention: a compensation failed for good, and "
                f"the cancel (accepted) waits for it; see `pizzeria status {order_number}`, "
                f"then `pizzeria repair {order_number} --retry` or `--resolve NOTE`"
            )
            return await before_attention(run.execute_update(update, *args), run, waits), run
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        if not deadline.expired():
            raise  # not our deadline: Ctrl-C (see cli.common.run)
        if await _stuck(run):
            raise OrderRefused(stuck_advice(order_number)) from None
        raise OrderDidNotAnswer(
            f"order {order_number} did not answer within {patience:g} s: no worker "
            "has taken it (is `pizzeria worker` running?), or the step it is on keeps "
            "failing (the payment provider or the ledger not answering); the request "
            f"may still be carried out once it can: `pizzeria status {order_number}` says",
            run,
        ) from None
    except WorkflowUpdateFailedError as error:
        raise _refused(order_number, error) from None
    except RPCError as error:
        refusal = _unanswerable(order_number, error)
        if refusal is None:
            raise
        raise refusal from None
    finally:
        if progress is not None:
            progress.cancel()


async def _stuck(run: WorkflowHandle[Any, Any]) -> bool:
    """Whether the run's workflow task failed since it last completed one (the history
    reader's ``failed_task``): it keeps failing (a worker without the order's codec key,
    a bug), and no Update is answered."""
    try:
        history = await run.fetch_history()
    except RPCError:
        return False
    return read_history(history.events).failed_task is not None


def _refused(order_number: str, error: WorkflowUpdateFailedError) -> Exception:
    """The order's refusal of an Update, or its run closing before it answered."""
    cause = error.cause
    if "completed before the update completed" in str(cause).lower():
        return OrderDidNotAnswer(
            f"order {order_number} closed before it answered (an operator may have "
            f"ended it): `pizzeria status {order_number}` says how it ended"
        )
    return OrderRefused(str(getattr(cause, "message", None) or cause or error))


def _unanswerable(order_number: str, error: RPCError) -> OrderRefused | None:
    """An Update the server could not deliver: the run closed, or its workflow task keeps
    failing (stuck); None for any other error (raised as it is)."""
    said = str(error).lower()
    closed = "aborted by closing workflow" in said or (
        error.status == RPCStatusCode.NOT_FOUND and "already completed" in said
    )
    if closed:
        # The run closed (completed, failed) before the Update was accepted: while it
        # was closing, or between our look at it and the Update.
        return OrderRefused(f"order {order_number} closed before it could answer")
    if "workflow task in failed state" in said:
        return OrderRefused(stuck_advice(order_number))
    return None


async def cancel_order(
    client: Client,
    order_number: str,
    reason: str,
    patience: float = ANSWER_SECONDS,
    waiting: Callable[[], None] | None = None,
    run_id: str | None = None,
) -> CancelResult:
    """Cancel an order before its pivot: its effects are undone and it ends Cancelled.
    ``run_id``: that run of the order only (the one an order token opens), else the latest.

    Raises:
        text.TextRefused: the reason holds characters no text may hold (nothing is sent).
    """
    text.check_text("reason", reason)
    asked = await running_order(client, order_number, run_id)
    try:
        answer, run = await _ask(
            client,
            order_number,
            PizzaOrderWorkflow.cancel_order,
            reason,
            patience=patience,
            unless_attention=True,
            run=asked,
            waiting=waiting,
        )
    except OrderWaitsForOperator:
        raise  # accepted: the request follows the repair (`_finish_a_cancel`)
    except OrderDidNotAnswer as silent:
        if silent.run is not None:
            await _request_unanswered_cancel(silent.run)
        raise
    except (asyncio.CancelledError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # Ctrl-C while it waited: the cancel stays with the order as when no worker
        # answered in time, and so does the request that makes it end Cancelled.
        await _request_unanswered_cancel(asked)
        raise
    result: CancelResult = answer
    if not result.accepted:
        raise OrderRefused(result.reason)
    await _request_cancellation(run)
    return result


async def _request_cancellation(run: WorkflowHandle[Any, Any]) -> None:
    """The order is already undone; the request makes it end Cancelled (not Failed). It
    goes to the run that accepted the cancel, which may have closed meanwhile (its wait
    for the request ran out; the order number may even run again since)."""
    try:
        await run.cancel()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise


async def _request_unanswered_cancel(run: WorkflowHandle[Any, Any]) -> None:
    """A cancel no worker answered in time stays with the order: a worker that takes the
    order later runs it. The request is sent now, as after an answer, so that the order
    ends Cancelled then, not Failed (no client is left to send it). It is the request
    `temporal workflow cancel` sends, and an order past its pivot treats it as such."""
    with contextlib.suppress(RPCError):
        await _request_cancellation(run)


async def _finish_a_cancel(run: WorkflowHandle[Any, Any]) -> None:
    """After a repair: an order that was being cancelled when its undoing needed an
    operator (the cancel gave up waiting) is undone now, and is sent the request that
    makes it end Cancelled, as the cancel would have."""
    with contextlib.suppress(RPCError, WorkflowQueryFailedError):
        state = await run.query(PizzaOrderWorkflow.saga_state)
        if state.get("cancel_reason") and state.get("phase") == Phase.COMPENSATED:
            await _request_cancellation(run)


async def retry_compensations(
    client: Client, order_number: str, patience: float = ANSWER_SECONDS
) -> RepairResult:
    """Run the order's failed compensations again."""
    answer, run = await _ask(
        client, order_number, PizzaOrderWorkflow.retry_compensations, patience=patience
    )
    result: RepairResult = answer
    await _finish_a_cancel(run)
    return result


async def resolve_by_hand(
    client: Client, order_number: str, note: str, patience: float = ANSWER_SECONDS
) -> RepairResult:
    """Mark the order's failed compensations as handled outside the system, with a note
    (refused with `text.TextRefused`, before anything is sent, as the workflow refuses it)."""
    text.check_text("note", note)
    answer, run = await _ask(
        client, order_number, PizzaOrderWorkflow.resolve_manually, note, patience=patience
    )
    result: RepairResult = answer
    await _finish_a_cancel(run)
    return result


@dataclass
class Abandoned:
    """What `abandon_order` did to one run of an order."""

    order_number: str
    workflow_id: str
    run_id: str
    status: str  # the run's status when it was abandoned
    put_back: dict[str, int]
    refunded: int


async def abandon_order(
    client: Client,
    ledger: Ledger,
    order_number: str,
    reason: str = "abandoned by an operator",
    gateway: PaymentGateway | None = None,
) -> Abandoned:
    """End an order that cannot finish (a workflow task failing for good: a bug, a bad
    deploy, a key no worker has) and undo what the ledger holds for its latest run.

    The ledger goes first, in one transaction with the compensations' own logic, and
    leaves tombstones: from then on no step of the run can take effect, even one already
    in flight. Then the run is terminated. A billed order is refused (it only goes
    forward), and so is one that closed by itself (its saga settled it). Given the
    workers' payment ``gateway``, the card hold goes first, as the saga's own
    `refund_customer` lets it go (the hold's key settled, the hold voided): no hold of an
    abandoned order is left to expire.
    """
    description = await (await order_handle(client, order_number)).describe()
    status = status_name(description.status)
    if status not in ("RUNNING", *ENDED_FROM_OUTSIDE):
        raise OrderRefused(
            f"order {order_number} is already closed ({status}): its saga settled it"
        )
    workflow_id, run_id = workflow_id_for(order_number), description.run_id
    ref = order_ref(workflow_id, run_id)
    released = None if gateway is None else await release_hold(ledger, gateway, ref, order_number)
    try:
        put_back, refund = await asyncio.to_thread(ledger.abandon_run, ref, order_number)
    except AlreadyBilled as billed:
        raise OrderRefused(f"order {order_number} cannot be abandoned: {billed}") from None
    if released is not None:
        refund = released
    if status == "RUNNING":
        run = client.get_workflow_handle(workflow_id, run_id=run_id)
        # A run that closed meanwhile (its next step refused) needs no terminating.
        with contextlib.suppress(RPCError):
            await run.terminate(reason=reason)
    return Abandoned(
        order_number,
        workflow_id,
        run_id,
        status,
        put_back.ingredients if put_back.applied and not put_back.tombstone else {},
        refund.amount if refund.applied else 0,
    )


async def release_hold(ledger: Ledger, gateway: PaymentGateway, ref: str, number: str) -> Effect:
    """The run's card hold let go as `refund_customer` lets it go; refused for a billed
    run (its money only goes forward)."""
    rows = await asyncio.to_thread(ledger.run_rows, ref)
    if STEP_SEND_BILL in rows:
        raise OrderRefused(
            f"order {number} cannot be abandoned: {ref} was billed {rows[STEP_SEND_BILL].amount}"
            " cents: past its pivot an order only goes forward (ended from outside, its "
            f"money can be given back with `pizzeria refund {number} AMOUNT --reason TEXT`)"
        )
    money = OrderMoney(ledger, gateway, asyncio.to_thread)  # its ledger calls on a thread
    effect: Effect = await money.release(RunRef(ref, number))
    return effect
