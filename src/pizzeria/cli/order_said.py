"""What `pizzeria order` says while it waits: the card hold, the order's trace, why an
order has no outcome yet, a server that stops answering, and an order typed now that is
not the one that completed under its number."""

from __future__ import annotations

import os
import textwrap
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from pizzeria import menu
from pizzeria.cli.common import err
from pizzeria.client import OrderOutcome
from pizzeria.models import ORDER_STATUS, PizzaOrder, dollars, order_number_of
from pizzeria.order_hold import CardHold
from pizzeria.order_visibility import NEEDS_ATTENTION_STATUS
from pizzeria.temporal import tracing
from pizzeria.temporal.codec import key_file
from pizzeria.temporal.tracing import TRACE_MEMO
from pizzeria.temporal.waiting import Unanswered


async def trace_of(run: WorkflowHandle[Any, Any]) -> str | None:
    """The order's trace id, as the client wrote it in its memo at the start; None when
    this command does not trace (or the server cannot say now: `status` shows it later)."""
    if not tracing.enabled():
        return None
    try:
        trace_id = await (await run.describe()).memo_value(TRACE_MEMO, None)
    except RPCError:
        return None
    return str(trace_id) if trace_id else None


#: How much of a workflow task's failure `order` repeats at its timeout (`status` has all).
WORKFLOW_TASK_FAILURE_CHARS = 400


async def why_still_running(handle: WorkflowHandle[Any, Any]) -> str:
    """Why an order has no outcome yet, when it is not only slow: no worker ever took it
    (none runs, or none for this server), or it waits for an operator; "" otherwise, or
    when that cannot be told."""
    number = order_number_of(handle.id)
    try:
        description = await handle.describe()
        if description.typed_search_attributes.get(ORDER_STATUS) == NEEDS_ATTENTION_STATUS:
            return (
                "it needs attention, a compensation failed for good: see `pizzeria status "
                f"{number}`, then `pizzeria repair {number} --retry` once the cause is fixed"
            )
        taken = False
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failure = event.workflow_task_failed_event_attributes.failure.message
                # Shortened at a word, and said to be: a cut in mid-word reads as the
                # whole message (the codec's names every key this process holds).
                said = textwrap.shorten(failure, WORKFLOW_TASK_FAILURE_CHARS, placeholder=" ...")
                used = "PIZZERIA_CODEC_KEY" if os.environ.get("PIZZERIA_CODEC_KEY") else key_file()
                hint = (
                    f" (the workers must hold the codec key this command used: {used})"
                    if "key" in said.lower()
                    else ""
                )
                return (
                    f"a worker took it but cannot run it: {said}{hint}; see `pizzeria status "
                    f"{number}`"
                )
            taken = taken or event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    except RPCError:
        return ""
    return "" if taken else "no worker has taken it yet: is `pizzeria worker` running?"


def say_if_another_order(typed: PizzaOrder, completed: OrderOutcome) -> None:
    """The order typed now is not placed when its number completed before: say so when it
    differs from the one that completed, rather than let its confirmation pass for it."""
    amount = menu.billed_for(typed.items)
    differs = []
    if completed.amount is not None and completed.amount != amount:
        differs.append(f"{dollars(amount)} where it was {dollars(completed.amount)}")
    if completed.delivery is not None and completed.delivery != typed.is_delivery:
        differs.append("a delivery" if typed.is_delivery else "a pickup")
    if differs:
        err.print(
            f"The order typed now ({', '.join(differs)}) is not the one that completed, and "
            f"was not placed: `--again` places it as a new, billed run, or choose another "
            "--order-number",
            markup=False,
        )


def held_line(hold: CardHold) -> str:
    payment = f", payment {hold.payment_id}" if hold.payment_id else ""
    return (
        f"Card ending {hold.card_last4} {hold.state}: {dollars(hold.amount)}{payment}; "
        "the kitchen prepares the order..."
    )


def waiting_notice(order_number: str, patience: float) -> Unanswered:
    """Say when the server stops answering that we keep waiting (again every tenth try)."""

    def notice(error: RPCError, attempt: int) -> None:
        if attempt == 1 or attempt % 10 == 0:
            err.print(
                f"Temporal is not answering ({error}); still waiting for order "
                f"{order_number} (up to {patience:.0f} s in all)...",
                markup=False,
            )

    return notice
