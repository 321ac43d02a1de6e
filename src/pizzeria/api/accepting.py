"""Placing an order over HTTP with its early answer: ``201`` once the card is held.

``POST /orders`` starts the order together with its ``order_accepted`` Update, in one
request to Temporal (Update-with-Start: `pizzeria.client.placing.start_with_answer`), and
answers once the order is accepted or refused: checked, its stock taken, its card held.

- accepted: ``201`` with the hold (amount, last four digits, state, payment id) and the
  token bound to the run just started, while the kitchen prepares the order;
- refused: the problem, in the same round trip, once what the order did is undone: a
  declined card ``402``, out of stock ``409``, outside the delivery area ``422``...;
- no answer within ``ANSWER_SECONDS`` (a step retrying, no worker polling), or Temporal
  failing after the start: ``202``, the answer ``Prefer: respond-async`` asks for at once.

Who chooses the order number, the key table and a twin of the request are placing.py's
rules, applied here the same way: a retry with the same ``Idempotency-Key`` and body asks
the run again under the same Update id, and Temporal answers what it answered the first
time (the same hold, the same refusal).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from fastapi import Request
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from pizzeria.api import placing
from pizzeria.api.idempotency import key_hash
from pizzeria.api.problems import ApiProblem
from pizzeria.client.early_answers import EarlyAnswer, Refusal, answer_within, early_answer
from pizzeria.client.placing import OrderAlreadyCompleted, OrderAlreadyRunning, start_with_answer
from pizzeria.models import (
    CREDIT_CARD_PROCESSING_ERROR,
    INVALID_CHARGE_AMOUNT_ERROR,
    INVALID_ORDER_ERROR,
    ORDER_CANCELLED_ERROR,
    OUT_OF_STOCK_ERROR,
    OUTSIDE_SERVICE_AREA_ERROR,
    UNKNOWN_TOPPING_ERROR,
    PizzaOrder,
)

#: How long POST /orders waits for the card hold before it answers 202 instead.
ANSWER_SECONDS = 10.0
#: A refusal's status and problem type, by the order's error type; any other (a step that
#: failed for good: the gateway down after every attempt...) is a 502.
REFUSAL_STATUS = {
    CREDIT_CARD_PROCESSING_ERROR: (402, "card-declined"),
    OUT_OF_STOCK_ERROR: (409, "out-of-stock"),
    ORDER_CANCELLED_ERROR: (409, "order-cancelled"),
    OUTSIDE_SERVICE_AREA_ERROR: (422, "outside-service-area"),
    INVALID_ORDER_ERROR: (422, "invalid-order"),
    UNKNOWN_TOPPING_ERROR: (422, "invalid-order"),
    INVALID_CHARGE_AMOUNT_ERROR: (422, "invalid-order"),
}
STEP_FAILED = (502, "order-failed")


@dataclass(frozen=True)
class Accepted:
    placed: placing.Placed
    #: The early answer; None when there is none to give (answer 202).
    answer: EarlyAnswer | None


def wants_async(prefer: str | None) -> bool:
    """``Prefer: respond-async`` (RFC 7240), among other preferences or alone."""
    return any(
        part.split(";")[0].strip().lower() == "respond-async" for part in (prefer or "").split(",")
    )


def answer_id(key: str | None, fingerprint: str) -> str | None:
    """The Update id of a request with an Idempotency-Key: the same for its retries (the
    server then answers what it answered first), another for any other request."""
    if key is None:
        return None
    both = f"{key_hash(key)}/{fingerprint}".encode()
    return "order-accepted-" + hashlib.sha256(both).hexdigest()[:40]


async def place_with_answer(
    request: Request, order: PizzaOrder, key: str | None, fingerprint: str
) -> Accepted:
    """Start ``order`` (its number chosen already) with its Update, unless ``key`` says it
    was started: its number, a token for its run, and the early answer."""
    deadline = time.monotonic() + ANSWER_SECONDS  # the whole wait, the start's included
    claimed = await placing.claim(request, order, key, fingerprint)
    order = claimed.order
    update_id = answer_id(key, fingerprint)
    answer: asyncio.Future[EarlyAnswer]
    if (known := claimed.known_run) is not None and key is not None:
        run_id = await placing.run_of_key(claimed, known, key, fingerprint)
        answer = asyncio.ensure_future(
            early_answer(claimed.client, order.order_number, run_id, update_id)
        )
    else:
        run_id, answer = await start(claimed.client, order, key, fingerprint, update_id)
        await claimed.record(key, run_id)
    placed = claimed.placed(run_id)
    return Accepted(placed, await answer_within(answer, max(0.0, deadline - time.monotonic())))


async def start(
    client: Client, order: PizzaOrder, key: str | None, fingerprint: str, update_id: str | None
) -> tuple[str, asyncio.Future[EarlyAnswer]]:
    """Start the order with its Update: its run and its answer to come. A number taken
    already is placing.py's twin check (this very request again, or 409 / 422)."""
    try:
        started = await start_with_answer(
            client,
            order,
            memo=placing.request_memo(key, fingerprint),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            update_id=update_id,
            started_within=ANSWER_SECONDS,
        )
    except (OrderAlreadyRunning, OrderAlreadyCompleted):
        run_id = await placing.start_once(client, order, key, fingerprint)
        asked = early_answer(client, order.order_number, run_id, update_id)
        return run_id, asyncio.ensure_future(asked)
    return started.run_id, started.answer


def refused(placed: placing.Placed, refusal: Refusal) -> ApiProblem:
    """The order's refusal as a problem: its status by the error, what was undone, and
    the order's number and token (its customer may look at it: what was undone)."""
    order_number = placed.order_number
    status, slug = REFUSAL_STATUS.get(refusal.error_type, STEP_FAILED)
    if refusal.needs_attention:
        undone = "; undoing it needs an operator, who has been asked"
    elif refusal.compensations:
        undone = "; undone: " + ", ".join(refusal.compensations)
    else:
        undone = "; nothing was taken"
    return ApiProblem(
        status,
        f"order {order_number} was refused: {refusal.message.rstrip('.')}{undone}",
        slug=slug,
        error_type=refusal.error_type,
        headers={"Location": f"/orders/{order_number}"},
        order=(order_number, placed.token),
    )
