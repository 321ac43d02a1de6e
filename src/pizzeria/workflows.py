"""PizzaOrderWorkflow: the exercise's order saga, read top to bottom like the step table
of docs/design.md.

    get_distance            no effect; too far for a delivery fails the order
    (short timer)           no effect
    update_inventory        compensated by revert_inventory
    process_credit_card     compensated by refund_customer
    send_bill               PIVOT: once billed, the order only goes forward
    notify_delivery_driver  retried forward, never compensated

Compensations are registered *before* their step, because a step can take effect and
still fail (a timeout after the write): the compensation must then undo it, and when the
step never took effect the compensation is a no-op in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pizzeria import menu, text, tuning
    from pizzeria.activities import PizzaOrderActivities
    from pizzeria.failures import error_message_of, error_type_of
    from pizzeria.models import (
        CREDIT_CARD_PROCESSING_ERROR,
        INVALID_CHARGE_AMOUNT_ERROR,
        INVALID_ORDER_ERROR,
        MAX_DELIVERY_KILOMETERS,
        ORDER_CANCELLED_ERROR,
        ORDER_STATUS,
        OUTSIDE_SERVICE_AREA_ERROR,
        STATUS_DELIVERY_FAILURE,
        STEP_GET_DISTANCE,
        STEP_NOTIFY_DELIVERY_DRIVER,
        STEP_PROCESS_CREDIT_CARD,
        STEP_SEND_BILL,
        STEP_UPDATE_INVENTORY,
        WORKFLOW_TYPE,
        Bill,
        CancelResult,
        CardCharge,
        OrderConfirmation,
        OrderSettings,
        PizzaOrder,
        RepairResult,
        RunRef,
        StockRequest,
        dollars,
        order_ref,
        workflow_id_for,
    )
    from pizzeria.saga import Saga

STEP_TIMEOUT = timedelta(seconds=5)
# The exercise's policy, with shorter waits: business errors are never retried, anything
# else (a gateway hiccup, a crashed worker) is retried with backoff.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=[CREDIT_CARD_PROCESSING_ERROR, INVALID_CHARGE_AMOUNT_ERROR],
)
# The pivot (the bill) and what follows it must finish: retry without limit rather than
# give up. Business errors (a negative amount) still fail the bill before it takes effect.
PIVOT_RETRY = dataclasses.replace(STEP_RETRY, maximum_attempts=0)
FORWARD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
TOO_LATE_TO_CANCEL = "the order is already billed and on its way; it can no longer be cancelled"
# How long an order cancelled by the cancel_order Update waits for the matching
# cancellation request (which `pizzeria cancel` sends right after) before it fails instead.
CANCEL_REQUEST_GRACE = timedelta(minutes=1)
# Orders started with this patch write OrderStatus only when it lasts (at the close, and
# when an order needs an operator), and record no other patch marker: see _status.
LEAN_ORDER_PATCH = "lean-order"
# Orders started with this patch refuse format characters and line separators in their
# text (text.py); orders started before, with such text, replay under the old rule.
TEXT_RULE_PATCH = "refuse-format-characters"


# Input that does not decode into a PizzaOrder fails the order at once, before any effect,
# with a non-retryable InvalidOrderError: the worker decodes through
# converter.StrictPayloadConverter (see worker.build_worker).
@workflow.defn(name=WORKFLOW_TYPE)
class PizzaOrderWorkflow:
    def __init__(self) -> None:
        self.saga = Saga(wait_for_repair=True, on_progress=self._compensation_progress)
        self.pivot_passed = False
        self.cancel_reason: str | None = None
        self.finished = False
        self.outcome = "running"
        self._order_task: asyncio.Task[OrderConfirmation] | None = None
        self._step_retry = STEP_RETRY
        self._fast_path = False
        self._lean = False

    @workflow.run
    async def order_pizza(self, order: PizzaOrder) -> OrderConfirmation:
        self._lean = workflow.patched(LEAN_ORDER_PATCH)
        try:
            # Asked only of an order whose verdict differs: no marker for any other.
            newer = not text.refused_characters_in(order) or workflow.patched(TEXT_RULE_PATCH)
            with contextlib.nullcontext() if newer else text.old_rule():
                menu.validate_order(order)
            self._check_one_order_per_number(order)
        except menu.OrderRejected as rejected:
            await self._close("rejected")
            raise ApplicationError(str(rejected), type=rejected.kind, non_retryable=True) from None
        settings = order.settings or OrderSettings()
        self._fast_path = settings.fast_path
        self._step_retry = dataclasses.replace(
            STEP_RETRY, maximum_attempts=max(1, settings.step_attempts)
        )
        self.saga.compensation_options["retry_policy"] = RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=max(1, settings.compensation_attempts),
        )
        if self.cancel_reason is not None:  # cancelled before the first step started
            return await self._end_cancelled()
        self._order_task = asyncio.create_task(self._place_order(order, settings))
        try:
            confirmation = await self._order_task
        except BaseException as error:
            if self._cancelling():
                return await self._end_cancelled()
            await self._close("failed")
            if self.saga.repaired_by is None or not isinstance(error, Exception):
                raise
            # Same outcome, but the record says an operator had to step in.
            note = f": {self.saga.resolution_note}" if self.saga.resolution_note else ""
            # The message without its type: clients print the type in front of it.
            raise ApplicationError(
                f"{error_message_of(error) or self.saga.original_error} (compensation "
                f"repaired by hand: {self.saga.repaired_by}{note})",
                {"repaired_by": self.saga.repaired_by, "note": self.saga.resolution_note},
                type=error_type_of(error) or "OrderFailed",
                non_retryable=True,
            ) from error
        await self._close(confirmation.status)
        return confirmation

    @staticmethod
    def _check_one_order_per_number(order: PizzaOrder) -> None:
        """The order number is the business key: under any other workflow id, the same
        order could run (and be charged) twice at once."""
        expected = workflow_id_for(order.order_number)
        actual = workflow.info().workflow_id
        # Added after histories were recorded under other ids: the patch keeps those
        # replaying unchanged.
        if actual != expected and workflow.patched("one-order-per-number"):
            raise menu.OrderRejected(
                INVALID_ORDER_ERROR,
                f"order {order.order_number} must run as workflow {expected}, not "
                f"{actual[:80]}: one order number, one order",
            )

    def _cancelling(self) -> bool:
        """Asked to cancel, by the cancel_order Update or by a cancellation request."""
        return self.cancel_reason is not None or workflow.cancellation_reason() is not None

    async def _place_order(self, order: PizzaOrder, settings: OrderSettings) -> OrderConfirmation:
        await self._check_distance(order)
        if settings.prep_seconds > 0:
            self._details("Preparing the order")
            await workflow.sleep(settings.prep_seconds, summary=_said("Preparing the order"))
        confirmation = await self._bill(order)
        delivered: OrderConfirmation = await self._uncancellable(
            self._deliver(order, confirmation), "the order is past its pivot"
        )
        return delivered

    async def _check_distance(self, order: PizzaOrder) -> None:
        self._details("Checking the delivery distance")
        with self.saga.step(STEP_GET_DISTANCE):
            distance = await self._activity(
                PizzaOrderActivities.get_distance,
                order.address,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=self._step_retry,
                summary=_said(f"Distance to {order.address.line1[:40]}"),
            )
        if order.is_delivery and distance.kilometers > MAX_DELIVERY_KILOMETERS:
            raise ApplicationError(
                "Customer lives outside the service area",
                type=OUTSIDE_SERVICE_AREA_ERROR,
                non_retryable=True,
            )

    async def _bill(self, order: PizzaOrder) -> OrderConfirmation:
        """Take the stock, charge the card, send the bill: what fails before the bill is
        undone, in reverse order."""
        ref = order_ref(workflow.info().workflow_id, workflow.info().run_id)
        total = menu.order_total(order.items)
        amount = menu.billed_amount(total)  # the bill's amount, charged before billing
        bill = Bill(
            customer_id=order.customer.customer_id,
            order_number=order.order_number,
            description="Pizza order",
            amount=total,
            order_ref=ref,
        )
        async with self.saga:
            await self._take_stock(StockRequest(ref, order.order_number, order.items))
            await self._charge(CardCharge(ref, order.order_number, amount, order.credit_card_info))
            self._details("Sending the bill")
            with self.saga.step(STEP_SEND_BILL):
                # PIVOT: once billed, the order only goes forward (see _step).
                confirmation: OrderConfirmation = await self._step(
                    PizzaOrderActivities.send_bill,
                    bill,
                    summary=f"Bill {dollars(amount)}",
                    pivot=True,
                )
        return confirmation

    async def _take_stock(self, stock: StockRequest) -> None:
        portions = _portions(menu.ingredients_for(stock.items))
        self.saga.add_compensation(
            PizzaOrderActivities.revert_inventory,
            RunRef(stock.order_ref, stock.order_number),
            summary=_said("Compensate: put back " + portions),
            local=self._fast_path,
        )
        self._details("Updating inventory")
        with self.saga.step(STEP_UPDATE_INVENTORY):
            await self._step(
                PizzaOrderActivities.update_inventory, stock, summary="Take " + portions
            )

    async def _charge(self, charge: CardCharge) -> None:
        amount = dollars(charge.amount)
        # Registered before the charge: it refunds what was charged, which may be nothing.
        self.saga.add_compensation(
            PizzaOrderActivities.refund_customer,
            RunRef(charge.order_ref, charge.order_number),
            summary=_said("Compensate: refund the charge, if any"),
            local=self._fast_path,
        )
        self._details("Charging card")
        with self.saga.step(STEP_PROCESS_CREDIT_CARD):
            await self._step(
                PizzaOrderActivities.process_credit_card,
                charge,
                summary=f"Charge {amount} to card ending {charge.credit_card.masked[-4:]}",
            )

    async def _deliver(
        self, order: PizzaOrder, confirmation: OrderConfirmation
    ) -> OrderConfirmation:
        if not order.is_delivery:
            return confirmation  # a pickup needs no driver
        self._details("Looking for a delivery driver")
        with self.saga.step(STEP_NOTIFY_DELIVERY_DRIVER):
            driver_found = await workflow.execute_activity_method(
                PizzaOrderActivities.notify_delivery_driver,
                confirmation,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=FORWARD_RETRY,
                summary=_said("Find a delivery driver"),
            )
        if not driver_found:
            confirmation.status = STATUS_DELIVERY_FAILURE
        return confirmation

    async def _step(
        self, activity: Any, argument: Any, *, summary: str, pivot: bool = False
    ) -> Any:
        if self._cancelling():
            raise asyncio.CancelledError("order cancelled")
        options: dict[str, Any] = {
            "start_to_close_timeout": STEP_TIMEOUT,
            "summary": _said(summary),
        }
        try:
            if pivot:
                # The pivot is neither interrupted nor given up while it may have taken
                # effect: a bill whose answer was lost must be retried until it answers,
                # never read as "not billed" and undone.
                result = await self._uncancellable(
                    self._activity(activity, argument, retry_policy=PIVOT_RETRY, **options),
                    "the bill is being sent",
                )
            else:
                # A cancel waits for the step in flight to finish, so that its compensation
                # can never overtake it (and undo nothing while the step still takes effect).
                # A local step is cancelled on its worker at once, but the activity sees its
                # ledger write through before it answers "cancelled" (activities.in_thread).
                result = await self._activity(
                    activity,
                    argument,
                    retry_policy=self._step_retry,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    **options,
                )
        except Exception:
            if self._cancelling():  # whatever the step did, a cancelled order goes back
                raise asyncio.CancelledError("order cancelled") from None
            raise
        if pivot:
            # The pivot took effect: even a cancel accepted while it ran comes too late.
            self.pivot_passed = True
            return result
        if self._cancelling():
            raise asyncio.CancelledError("order cancelled")
        return result

    def _activity(self, activity: Any, argument: Any, **options: Any) -> Any:
        """Run a step: on the fast path as a local activity, held (and retried) by the
        worker that runs the order, otherwise as a regular one."""
        if self._fast_path:
            return workflow.execute_local_activity_method(activity, argument, **options)
        return workflow.execute_activity_method(activity, argument, **options)

    @staticmethod
    async def _uncancellable(work: Any, why: str) -> Any:
        """Finish the work whatever happens: a cancellation meanwhile is ignored."""
        task: asyncio.Task[Any] = asyncio.create_task(work)
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    workflow.logger.info("Cancellation ignored: %s", why)
        return task.result()

    async def _end_cancelled(self) -> OrderConfirmation:
        """End Cancelled. After the cancel_order Update, first wait for the request."""
        await self._close("cancelled")
        if workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError(self.cancel_reason)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: workflow.cancellation_reason() is not None,
                timeout=CANCEL_REQUEST_GRACE,
                timeout_summary="Waiting for the cancellation request",
            )
        if workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError(self.cancel_reason)
        raise ApplicationError(
            f"Order cancelled: {self.cancel_reason}", type=ORDER_CANCELLED_ERROR, non_retryable=True
        )

    def _details(self, text: str) -> None:
        if tuning.is_on("summaries"):
            workflow.set_current_details(text)

    def _compensation_progress(self, text: str) -> None:
        self._details(text)
        if text.startswith("Needs attention"):
            self._status("NEEDS_ATTENTION")  # operators list these: pizzeria orders --status
        elif not self._lean:
            # Lasts milliseconds, and nobody filters on it: the current details say it.
            self._status("COMPENSATING")

    def _status(self, status: str) -> None:
        """Keep the OrderStatus search attribute current, when the order carries it."""
        current = workflow.info().typed_search_attributes.get(ORDER_STATUS)
        if tuning.is_on("visibility") and current is not None and current != status:
            workflow.upsert_search_attributes([ORDER_STATUS.value_set(status)])

    async def _close(self, outcome: str) -> None:
        """Record the outcome, then let every Update still running answer its caller.

        An Update waiting on the order (cancel_order, a repair) can still be running when
        the order closes; closing under it would cut off its answer. Once finished, the
        validators refuse new Updates, so the wait ends.
        """
        self._finish(outcome)
        # Added after histories were recorded, where an Update could still be running at
        # the close: the patch keeps those replaying unchanged.
        if not workflow.all_handlers_finished() and (
            self._lean or workflow.patched("close-after-handlers")
        ):
            await self._uncancellable(
                workflow.wait_condition(workflow.all_handlers_finished), "the order is closing"
            )

    def _finish(self, outcome: str) -> None:
        self.finished = True
        self.outcome = outcome
        if self.saga.repaired_by:
            self.outcome += f" (repaired by hand: {self.saga.repaired_by})"
        details = {"rejected": "Rejected", "failed": "Failed", "cancelled": "Cancelled"}
        self._details(details.get(outcome, "Completed"))
        statuses = {
            "rejected": "REJECTED",
            "failed": "FAILED",
            "cancelled": "CANCELLED",
            STATUS_DELIVERY_FAILURE: "DELIVERY_FAILURE",
        }
        self._status(statuses.get(outcome, "COMPLETED"))
        if self.saga.repaired_by:
            compensation = f"repaired by hand ({self.saga.repaired_by})"
        elif self.saga.compensating:
            compensation = "compensated"
        else:
            compensation = "none"
        if tuning.is_on("metrics"):
            workflow.metric_meter().create_counter(
                "pizzeria_orders", "Orders closed, by outcome"
            ).add(1, {"outcome": statuses.get(outcome, "COMPLETED").lower()})
        # Added after histories were recorded: the patch keeps those replaying unchanged.
        if tuning.is_on("visibility") and (self._lean or workflow.patched("order-outcome-memo")):
            workflow.upsert_memo({"compensation": compensation, "outcome": self.outcome})

    # -- what operators and clients can ask ----------------------------------------------

    @workflow.query
    def saga_state(self) -> dict[str, Any]:
        return {
            **self.saga.state(),
            "pivot_passed": self.pivot_passed,
            "cancel_reason": self.cancel_reason,
            "outcome": self.outcome,
            "details": workflow.get_current_details(),
        }

    @workflow.update
    async def cancel_order(self, reason: str) -> CancelResult:
        self.cancel_reason = reason or "cancelled by request"
        self._details("Cancelling")
        if self._order_task is None:
            return CancelResult(accepted=True, reason=self.cancel_reason)
        self._order_task.cancel()
        await workflow.wait_condition(
            lambda: self.saga.compensated or self.finished or self.pivot_passed
        )
        if self.pivot_passed:
            self.cancel_reason = None
            return CancelResult(accepted=False, reason=TOO_LATE_TO_CANCEL)
        return CancelResult(
            accepted=True, reason=self.cancel_reason, compensations=list(self.saga.completed)
        )

    @cancel_order.validator
    def _validate_cancel(self, reason: str) -> None:
        text.check_text("reason", reason)  # validators do not run on replay
        if self.pivot_passed:
            raise ValueError(TOO_LATE_TO_CANCEL)
        if self.finished:
            raise ValueError(f"the order is already closed ({self.outcome})")
        if self.cancel_reason is not None:
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


def _said(text: str) -> str | None:
    """A summary for the Web UI, unless a benchmark switched summaries off."""
    return text if tuning.is_on("summaries") else None


def _portions(ingredients: dict[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in ingredients.items())
