"""An order as the API shows it, read each time from Temporal and the ledger.

Steps and compensations come from the workflow's history (the timeline: it needs no
worker and outlives the order), what the saga is doing now from its ``saga_state`` query,
the card and the amount from the order the workflow was started with, and the money
from the ledger rows of that run. Nothing is cached: a restarted API shows the same.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from pizzeria import menu
from pizzeria.api.opening import OpenedWhenAsked
from pizzeria.api.schemas import (
    LedgerView,
    OrderAccepted,
    OrderOutcomeView,
    OrderView,
    RefundView,
    StepView,
    view_of,
)
from pizzeria.client import order_handle
from pizzeria.failures import error_message_of, error_type_of
from pizzeria.history.timeline import COMPENSATION, STEP, order_report
from pizzeria.ledger import Ledger, LedgerError, RunRows, open_ledger, runs_of
from pizzeria.ledger.refunds import staff_refunds_in
from pizzeria.models import (
    STEP_NOTIFY_DELIVERY_DRIVER,
    STEP_REFUND_UNDELIVERED,
    STEP_SEND_BILL,
    STEPS,
    OrderConfirmation,
    PizzaOrder,
    mask_card_number,
    order_ref,
    workflow_id_for,
)
from pizzeria.order_hold import CardHold
from pizzeria.saga import SKIPPED
from pizzeria.statements import money_line
from pizzeria.workflows import PizzaOrderWorkflow

RUNNING = "RUNNING"


class HoldView(BaseModel):
    """The card held for an order: what POST /orders answers once it is (never the card
    number)."""

    amount: int = Field(description="Cents held on the card, the discount included")
    card_last4: str = Field(description="The card's last four digits")
    state: str = Field(
        description="'held': reserved on the card; taken when the order is billed, given "
        "back if the order is undone"
    )
    payment_id: str | None = Field(
        description="The payment provider's id of the hold, when a provider holds it"
    )


class OrderPlaced(OrderAccepted):
    """POST /orders' answer: the order, its token and, once accepted (201), its hold."""

    hold: HoldView | None = Field(
        default=None,
        description="201: the card held. 202 (Prefer: respond-async, or no answer in time): "
        "null; follow the order at events_url",
    )


def hold_view(hold: CardHold | None) -> HoldView | None:
    return None if hold is None else view_of(HoldView, hold)


def run_handle(
    client: Client, workflow_id: str, run_id: str
) -> WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation]:
    return client.get_workflow_handle_for(
        PizzaOrderWorkflow.order_pizza, workflow_id, run_id=run_id
    )


def step_view(entry: dict[str, Any] | None, name: str, closed: bool) -> StepView:
    if entry is None:
        return StepView(
            name=name,
            state="not run" if closed else "pending",
            attempts=0,
            started_at=None,
            duration_ms=None,
            error="",
        )
    return StepView(
        name=entry["name"],
        state=entry["outcome"],
        attempts=entry["attempts"],
        started_at=entry["started_at"],
        duration_ms=entry["duration_ms"],
        error=entry["error"],
    )


def steps_of(
    timeline: list[dict[str, Any]], closed: bool, not_needed: frozenset[str] = frozenset()
) -> tuple[list[StepView], list[StepView]]:
    """Every step of the saga in its order, and the compensations in the order they ran.
    A step in ``not_needed`` that did not run is "not run" already while the order runs."""
    ran = {entry["name"]: entry for entry in timeline if entry["kind"] == STEP}
    # The refund of an order no driver took is shown only when it came.
    shown = [name for name in STEPS if name != STEP_REFUND_UNDELIVERED or name in ran]
    steps = [step_view(ran.get(name), name, closed or name in not_needed) for name in shown]
    compensations = [
        step_view(entry, entry["name"], closed)
        for entry in timeline
        if entry["kind"] == COMPENSATION
    ]
    return steps, compensations


def not_needed_steps(report: dict[str, Any], order: PizzaOrder | None) -> frozenset[str]:
    """Steps this run will never run: those its saga skipped (a pickup on the fast path
    checks no distance) and a pickup's driver search. Without them a running order shows
    them "pending" behind steps already completed."""
    names = {step["name"] for step in report.get("steps", []) if step.get("status") == SKIPPED}
    if order is not None and not order.is_delivery:
        names.add(STEP_NOTIFY_DELIVERY_DRIVER)
    return frozenset(names)


async def closed_outcome(
    handle: WorkflowHandle[PizzaOrderWorkflow, OrderConfirmation], status: str
) -> OrderOutcomeView:
    """How a closed run ended: the confirmation, or the error that failed it."""
    try:
        confirmation = await handle.result(follow_runs=False)
    except WorkflowFailureError as failure:
        return OrderOutcomeView(
            status=status,
            error_type=error_type_of(failure.cause),
            error=error_message_of(failure.cause),
            confirmation_number=None,
            delivery=None,
        )
    return OrderOutcomeView(
        status=status,
        error_type=None,
        error=None,
        confirmation_number=confirmation.confirmation_number,
        delivery=confirmation.status,
    )


async def placed_order(client: Client, handle: WorkflowHandle[Any, Any]) -> PizzaOrder | None:
    """The order the run was started with (None when it never decoded into one)."""
    async for event in handle.fetch_history_events(page_size=1):
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            return None
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        try:
            (order,) = await client.data_converter.decode(payloads, [PizzaOrder])
        except Exception:  # the worker refused it as undecodable: nothing to show
            return None
        return order if isinstance(order, PizzaOrder) else None
    return None


class LedgerReader(OpenedWhenAsked[Ledger]):
    """The ledger, opened read-only when first asked for: the API never writes to it, and
    it starts (saying it is not ready) before the first worker has created the ledger."""

    def __init__(self, location: str) -> None:
        super().__init__(lambda: open_ledger(location, read_only=True))
        self.location = location


def run_rows_of(ledger: LedgerReader, ref: str) -> RunRows | None:
    """What this run charged, refunded, billed and held; None while the ledger cannot be
    read."""
    try:
        return runs_of(ledger.get().effects(ref)).get(ref, RunRows(ref))
    except LedgerError:
        return None


def ledger_view(rows: RunRows) -> LedgerView:
    """The run's money as the ledger holds it, and as the card's statement reads."""
    figures = view_of(LedgerView, rows).model_dump()
    return LedgerView(**{**figures, "statement": money_line(figures)})


def card_shown(order: PizzaOrder, run: RunRows | None) -> str:
    """The order's card, masked: for a token (the order page's), the last four digits the
    hold recorded, once it did."""
    card = order.credit_card_info
    held = run.cards[-1] if run is not None and run.cards else ""
    if card.number or not card.payment_method or not held:
        return card.masked
    return mask_card_number(held)


def refund_views(ledger: LedgerReader, ref: str) -> list[RefundView]:
    """The refunds staff gave this run; none while the ledger cannot be read."""
    try:
        refunds = staff_refunds_in(ledger.get().effects(ref))
    except LedgerError:
        return []
    return [
        RefundView(
            amount=refund["amount"],
            state=refund["state"],
            refund_id=refund["refund_id"],
            claimed_at=datetime.fromtimestamp(refund["claimed_at"], UTC).isoformat(),
        )
        for refund in refunds
    ]


def cancellable(report: dict[str, Any]) -> bool:
    """Until the pivot, and only while nothing is being undone already."""
    if report["status"] != RUNNING or report.get("cancel_reason") or report.get("compensating"):
        return False
    if report.get("pivot_passed"):
        return False
    # Without a worker the query has no answer: the history still says whether the
    # bill was sent or anything undone.
    return not any(
        entry["name"] == STEP_SEND_BILL or entry["kind"] == COMPENSATION
        for entry in report["timeline"]
    )


async def read_order(
    client: Client, ledger: LedgerReader, order_number: str, run_id: str | None = None
) -> OrderView:
    """The order's run ``run_id`` (the one its token opens), else its latest run."""
    if run_id is None:
        handle = await order_handle(client, order_number)
    else:
        handle = client.get_workflow_handle(workflow_id_for(order_number), run_id=run_id)
    report = await order_report(client, handle, query_closed=False)
    run = run_handle(client, handle.id, report["run_id"])
    closed = report["status"] != RUNNING
    order = await placed_order(client, run)
    steps, compensations = steps_of(report["timeline"], closed, not_needed_steps(report, order))
    ref = order_ref(handle.id, report["run_id"])
    rows = await asyncio.to_thread(run_rows_of, ledger, ref)
    return OrderView(
        order_number=order_number,
        run_id=report["run_id"],
        status=report["status"],
        details=report["details"] or "",
        amount=menu.billed_for(order.items) if order else None,
        card=card_shown(order, rows) if order else None,
        cancellable=cancellable(report),
        needs_attention=report["needs_attention"],
        steps=steps,
        compensations=compensations,
        ledger=None if rows is None else ledger_view(rows),
        outcome=await closed_outcome(run, report["status"]) if closed else None,
        trace_id=report.get("trace_id"),
        refunds=await asyncio.to_thread(refund_views, ledger, ref) if closed else [],
    )
