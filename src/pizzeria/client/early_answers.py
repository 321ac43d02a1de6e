"""The early answer of an order started with its ``order_accepted`` Update: the card held,
or why the order was refused (`EarlyAnswer`), read from the Update's result or failure, or
asked again of a run already started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.models import workflow_id_for
from pizzeria.order_hold import REFUSED, CardHold
from pizzeria.workflows import PizzaOrderWorkflow


@dataclass(frozen=True)
class Refusal:
    """Why the order was refused before its card was held, once what it did is undone."""

    error_type: str
    message: str
    compensations: tuple[str, ...] = ()  # what was undone, in the order it ran
    needs_attention: bool = False  # a compensation failed: an operator is asked


@dataclass(frozen=True)
class EarlyAnswer:
    """What ``order_accepted`` answered: the card held, or the order's refusal. Neither
    when there is no answer to have: the workers do not know the Update (a deploy older
    than it), or the run closed without being asked."""

    hold: CardHold | None = None
    refusal: Refusal | None = None


async def early_answer(
    client: Client, order_number: str, run_id: str, update_id: str | None = None
) -> EarlyAnswer:
    """``order_accepted`` asked of a run already started. With the ``update_id`` of an
    earlier ask, the server answers what it answered then (even once the run closed)."""
    handle = client.get_workflow_handle_for(
        PizzaOrderWorkflow.order_pizza, workflow_id_for(order_number), run_id=run_id
    )
    try:
        return await answer_of(
            handle.execute_update(PizzaOrderWorkflow.order_accepted, id=update_id)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:  # closed, never asked: nothing to say
            return EarlyAnswer()
        raise


async def answer_within(answer: asyncio.Future[EarlyAnswer], seconds: float) -> EarlyAnswer | None:
    """The early answer if it comes within ``seconds``; None when it does not (a step
    retrying, no worker) or when Temporal fails to deliver it: the order goes on either
    way, and its outcome tells the rest."""
    try:
        return await asyncio.wait_for(answer, seconds)
    except (TimeoutError, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return None


async def answer_of(update: Awaitable[CardHold]) -> EarlyAnswer:
    try:
        return EarlyAnswer(hold=await update)
    except WorkflowUpdateFailedError as failed:
        return EarlyAnswer(refusal=refusal_of(failed.cause))


def refusal_of(cause: BaseException | None) -> Refusal | None:
    """The order's refusal, from the Update's failure; None for any other failure (a worker
    that does not know the Update refuses it)."""
    if not isinstance(cause, ApplicationError) or not cause.details:
        return None
    undone = cause.details[0]
    if not isinstance(undone, dict) or not undone.get(REFUSED):
        return None
    return Refusal(
        error_type=cause.type or "OrderFailed",
        message=cause.message,
        compensations=tuple(str(name) for name in undone.get("compensations") or ()),
        needs_attention=bool(undone.get("needs_attention")),
    )
