"""PizzaOrderWorkflow: the exercise's order saga, read top to bottom like the step table
of docs/design.md (`_place_order`), one helper per row:

    get_distance            _distance  no effect; too far for a delivery fails the order;
                                       a pickup on the fast path has none to check
    update_inventory        _stock     compensated by revert_inventory
    process_credit_card     _charge    compensated by refund_customer; order_accepted answers
    (short timer)           prepare    no effect: the kitchen, once the card is held
    send_bill               _bill      PIVOT: captures the hold; then only forward
    notify_delivery_driver  _deliver   retried forward, never compensated
    refund_undelivered_order  (_deliver)  no driver: the whole amount back, order_refund.py

Compensations are registered *before* their step, because a step can take effect and
still fail (a timeout after the write): the compensation must then undo it, and when the
step never took effect the compensation is a no-op in the ledger. How a step runs is
order_steps.py (`once`, `undoable`, `pivot`, `forward`, and `activity`, the one way any
activity runs); how long and how often it may try, order_policy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    # Each as its own module name: `from pizzeria import menu` would import the submodule
    # past the sandbox's import hook, so the sandbox would run it again for every order.
    import pizzeria.menu as menu
    import pizzeria.order_fields as order_fields
    import pizzeria.order_visibility as shown
    import pizzeria.text as text
    import pizzeria.tuning as tuning
    from pizzeria.activities import PizzaOrderActivities as Steps
    from pizzeria.failures import error_message_of, error_type_of
    from pizzeria.models import (
        INVALID_ORDER_ERROR,
        MAX_DELIVERY_KILOMETERS,
        ORDER_CANCELLED_ERROR,
        OUTSIDE_SERVICE_AREA_ERROR,
        STATUS_DELIVERY_FAILURE,
        STEP_GET_DISTANCE,
        STEP_NOTIFY_DELIVERY_DRIVER,
        STEP_PROCESS_CREDIT_CARD,
        STEP_SEND_BILL,
        STEP_UPDATE_INVENTORY,
        WORKFLOW_TYPE,
        Bill,
        CardCharge,
        CreditCardConfirmation,
        Distance,
        OrderConfirmation,
        OrderSettings,
        PizzaOrder,
        StockChange,
        StockRequest,
        dollars,
        order_ref,
        workflow_id_for,
    )
    from pizzeria.order_cancel import CancelAndRepair
    from pizzeria.order_hold import HoldFirst, hold_of
    from pizzeria.order_policy import (
        CANCEL_REQUEST_GRACE,
        DRIVER_HEARTBEAT,
        DRIVER_TIMEOUT,
        compensation_retry,
        step_retry,
    )
    from pizzeria.order_refund import hold_summary, refund_undelivered
    from pizzeria.order_steps import StepRunner, uncancellable
    from pizzeria.order_undo import portions_of, undo_hold, undo_stock, undo_unrecorded
    from pizzeria.saga import Phase, Saga


# Patch ids: histories of orders already running record them. Never change a value.
# Orders started with this patch write OrderStatus only when it lasts (at the close, and
# when an order needs an operator), and record no other patch marker: see _close.
LEAN_ORDER_PATCH = "lean-order"
# Orders started with this patch refuse format characters and line separators in their
# text (text.py); orders started before, with such text, replay under the old rule.
TEXT_RULE_PATCH = "refuse-format-characters"
# Orders started with this patch pay the menu's prices (menu.PRICE_BY_SIZE); orders started
# before, with other prices, replay under the old rule. Asked only of such an order.
MENU_PRICES_PATCH = "menu-prices"
# Orders started with this patch deliver only to an address with a city, a state and a
# postal code; orders started before, without one, replay under the old rule. Likewise.
FULL_ADDRESS_PATCH = "full-delivery-address"
# Orders started with this patch name each topping of a pizza once (the price is the
# size's); orders started before, with a topping named twice, replay under the old rule.
TOPPINGS_ONCE_PATCH = "each-topping-once"
# Each added after histories were recorded without it; a lean order implies the last two.
ONE_ORDER_PER_NUMBER_PATCH = "one-order-per-number"
CLOSE_AFTER_HANDLERS_PATCH = "close-after-handlers"
ORDER_OUTCOME_MEMO_PATCH = "order-outcome-memo"
# Orders started with this patch are lean (LEAN_ORDER_PATCH) and hold the card before the
# kitchen waits (order_hold.HOLD_BEFORE_KITCHEN_PATCH), recording this one marker instead
# of those two; and a pickup on the fast path checks no distance: it has none. Orders
# started before keep their path; the regular path keeps the exercise's steps.
CURRENT_ORDER_PATCH = "order-2026-12"
# Orders started with this patch are as CURRENT_ORDER_PATCH's (implied, and not asked), and
# one that completes with nothing undone writes no outcome memo: `pizzeria orders` reads a
# completed run without one as such (client.outcomes.recent_orders). Orders started before
# write it; an order no driver took, or one that compensated, still does.
QUIET_CLOSE_PATCH = "order-2026-12-quiet-close"


# Input that does not decode into a PizzaOrder fails the order at once, before any effect,
# with a non-retryable InvalidOrderError: the worker decodes through
# converter.StrictPayloadConverter (see worker.build_worker).
@workflow.defn(name=WORKFLOW_TYPE)
class PizzaOrderWorkflow(HoldFirst, CancelAndRepair):
    def __init__(self) -> None:
        self.saga = Saga(wait_for_repair=True, on_progress=self._compensation_progress)
        self.steps = StepRunner(self.saga, self._cancelling)
        self.cancel_reason: str | None = None
        self.finished = False
        self.outcome = "running"
        self._order_task: asyncio.Task[OrderConfirmation] | None = None
        self._lean = False
        self._current = False  # started with CURRENT_ORDER_PATCH (or QUIET_CLOSE_PATCH)
        self._quiet_close = False  # started with QUIET_CLOSE_PATCH
        self._asking_for_the_bill = False  # a cancel on the fast path, asking the ledger

    @workflow.run
    async def order_pizza(self, order: PizzaOrder) -> OrderConfirmation:
        self._quiet_close = workflow.patched(QUIET_CLOSE_PATCH)
        self._current = self._quiet_close or workflow.patched(CURRENT_ORDER_PATCH)
        self._lean = self._current or workflow.patched(LEAN_ORDER_PATCH)
        try:
            self._check(order)
        except order_fields.OrderRejected as rejected:
            await self._close("rejected")
            raise ApplicationError(str(rejected), type=rejected.kind, non_retryable=True) from None
        settings = order.settings or OrderSettings()
        self.steps.fast_path = settings.fast_path
        self.steps.step_retry = step_retry(settings.step_attempts)
        self.saga.compensation_options["retry_policy"] = compensation_retry(
            settings.compensation_attempts
        )
        if self.cancel_reason is not None:  # cancelled before the first step started
            await undo_unrecorded(self.steps, order, cancelled=True)
            return await self._end_cancelled()
        self._order_task = asyncio.create_task(self._place_order(order, settings))
        try:
            confirmation = await self._order_task
        except BaseException as error:
            if not isinstance(error, Exception | asyncio.CancelledError):
                raise  # the worker evicting the run (GeneratorExit): it goes on elsewhere
            if not self.steps.pivot_passed:  # the fast path's lost first task
                await undo_unrecorded(self.steps, order, cancelled=self._cancelling())
            if self._cancelling():
                return await self._end_cancelled()
            await self._close("failed")
            if self.saga.repaired_by is None or not isinstance(error, Exception):
                raise
            raise self._repaired(error) from error
        await self._close(confirmation.status)
        return confirmation

    def _check(self, order: PizzaOrder) -> None:
        """Refuse an order that can never be fulfilled: `order_fields.OrderRejected`."""
        # Asked only of an order whose verdict differs: no marker for any other.
        newer = not text.refused_characters_in(order) or workflow.patched(TEXT_RULE_PATCH)
        # Likewise: orders started before the menu's prices were enforced keep their path.
        menu_prices = not menu.off_menu(order) or workflow.patched(MENU_PRICES_PATCH)
        # And those started before a delivery needed a whole address.
        full_address = not menu.incomplete_address(order) or workflow.patched(FULL_ADDRESS_PATCH)
        # And those started before a pizza could name each topping only once.
        once = not menu.repeated_toppings(order) or workflow.patched(TOPPINGS_ONCE_PATCH)
        with contextlib.nullcontext() if newer else text.old_rule():
            menu.validate_order(
                order, menu_prices=menu_prices, full_address=full_address, toppings_once=once
            )
        # The order number is the business key: under any other workflow id, the same
        # order could run (and be charged) twice at once.
        expected = workflow_id_for(order.order_number)
        actual = workflow.info().workflow_id
        if actual != expected and workflow.patched(ONE_ORDER_PER_NUMBER_PATCH):
            raise order_fields.OrderRejected(
                INVALID_ORDER_ERROR,
                f"order {order.order_number} must run as workflow {expected}, not "
                f"{actual[:80]}: one order number, one order",
                field="order_number",
            )

    def _repaired(self, error: Exception) -> ApplicationError:
        """The order's own failure, saying that an operator had to step in."""
        # The message without its type: clients print the type in front of it.
        return ApplicationError(
            f"{error_message_of(error) or self.saga.original_error} (compensation "
            f"{self.saga.repair_said})",
            {"repaired_by": self.saga.repaired_by, "note": self.saga.resolution_note},
            type=error_type_of(error) or "OrderFailed",
            non_retryable=True,
        )

    def _cancelling(self) -> bool:
        """Asked to cancel, by the cancel_order Update or by a cancellation request."""
        return self.cancel_reason is not None or workflow.cancellation_reason() is not None

    # -- the steps: the step table of docs/design.md, top to bottom -----------------------

    async def _place_order(self, order: PizzaOrder, settings: OrderSettings) -> OrderConfirmation:
        run = order_ref(workflow.info().workflow_id, workflow.info().run_id)
        self.choose_kitchen(settings)  # before the card is held, or (newer orders) after
        await self._distance(order)
        await self.prepare(settings, held=False)
        async with self.saga:  # what fails before the bill is undone, in reverse order
            await self._stock(run, order)
            self.hold = hold_of(await self._charge(run, order))  # order_accepted answers
            await self.prepare(settings, held=True)
            confirmation = await self._bill(run, order)
        delivered: OrderConfirmation = await uncancellable(
            self._deliver(order, confirmation), "the order is past its pivot"
        )
        return delivered

    async def _distance(self, order: PizzaOrder) -> None:
        if not order.is_delivery and self.steps.fast_path and self._current:
            self.saga.skip(STEP_GET_DISTANCE)  # a pickup goes nowhere
            return
        shown.show_details("Checking the delivery distance")
        distance = await self.steps.once(
            STEP_GET_DISTANCE,
            Steps.get_distance,
            order.address,
            Distance,
            summary=f"Distance to {order.address.line1[:40]}",
        )
        if order.is_delivery and distance.kilometers > MAX_DELIVERY_KILOMETERS:
            raise ApplicationError(
                "Customer lives outside the service area",
                type=OUTSIDE_SERVICE_AREA_ERROR,
                non_retryable=True,
            )

    async def _stock(self, run: str, order: PizzaOrder) -> None:
        undo_stock(self.steps, run, order)
        shown.show_details("Updating inventory")
        request = StockRequest(run, order.order_number, order.items)
        await self.steps.undoable(
            STEP_UPDATE_INVENTORY,
            Steps.update_inventory,
            request,
            StockChange,
            summary="Take " + portions_of(order),
        )

    async def _charge(self, run: str, order: PizzaOrder) -> CreditCardConfirmation:
        amount = menu.billed_for(order.items)  # the bill's, discounted
        charge = CardCharge(run, order.order_number, amount, order.credit_card_info)
        # Registered before the hold: it releases what was held, which may be nothing.
        undo_hold(self.steps, run, order)
        shown.show_details("Charging card")
        return await self.steps.undoable(
            STEP_PROCESS_CREDIT_CARD,
            Steps.process_credit_card,
            charge,
            CreditCardConfirmation,
            summary=hold_summary(amount, order.credit_card_info),
        )

    async def _bill(self, run: str, order: PizzaOrder) -> OrderConfirmation:
        total = menu.order_total(order.items)  # send_bill applies the discount
        bill = Bill(order.customer.customer_id, order.order_number, "Pizza order", total, run)
        shown.show_details("Sending the bill")
        return await self.steps.pivot(
            STEP_SEND_BILL,
            Steps.send_bill,
            bill,
            OrderConfirmation,
            summary=f"Capture the hold: bill {dollars(menu.billed_amount(total))}",
        )

    async def _deliver(self, order: PizzaOrder, billed: OrderConfirmation) -> OrderConfirmation:
        if not order.is_delivery:
            return billed  # a pickup needs no driver
        shown.show_details("Looking for a delivery driver")
        driver_found = await self.steps.forward(
            STEP_NOTIFY_DELIVERY_DRIVER,
            Steps.notify_delivery_driver,
            billed,
            bool,
            start_to_close_timeout=DRIVER_TIMEOUT,
            heartbeat_timeout=DRIVER_HEARTBEAT,
            summary="Find a delivery driver",
        )
        if not driver_found:
            billed.status = STATUS_DELIVERY_FAILURE
            await refund_undelivered(self.steps, order, billed)  # order_refund.py
        return billed

    # -- closing -------------------------------------------------------------------------

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

    def _compensation_progress(self, account: str) -> None:
        shown.show_details(account)
        if self.saga.phase is Phase.NEEDS_ATTENTION:
            # Operators list these: pizzeria orders --status NEEDS_ATTENTION.
            shown.show_status(shown.NEEDS_ATTENTION_STATUS)
        elif not self._lean:
            # Lasts milliseconds, and nobody filters on it: the current details say it.
            shown.show_status(shown.COMPENSATING_STATUS)

    async def _close(self, outcome: str) -> None:
        """Record the outcome, then let every Update still running answer its caller.

        An Update waiting on the order (cancel_order, a repair) can still be running when
        the order closes; closing under it would cut off its answer. Once finished, the
        validators refuse new Updates, so the wait ends.
        """
        self._finish(outcome)
        if not workflow.all_handlers_finished() and (
            self._lean or workflow.patched(CLOSE_AFTER_HANDLERS_PATCH)
        ):
            await uncancellable(
                workflow.wait_condition(workflow.all_handlers_finished), "the order is closing"
            )

    def _finish(self, outcome: str) -> None:
        self.finished = True
        self.outcome = outcome
        if self.saga.repaired_by:
            self.outcome += f" (compensation {self.saga.repair_said})"
        shown.show_details(shown.OUTCOME_DETAILS.get(outcome, shown.COMPLETED_DETAILS))
        status = shown.OUTCOME_STATUS.get(outcome, shown.COMPLETED_STATUS)
        shown.show_status(status)
        shown.count_closed(status)
        said_by_the_close = self._quiet_close and shown.plain_completion(self.saga, status)
        if (
            tuning.is_on("visibility")
            and not said_by_the_close
            and (self._lean or workflow.patched(ORDER_OUTCOME_MEMO_PATCH))
        ):
            shown.write_memo(self.saga, self.outcome)

    # -- what operators and clients can ask ----------------------------------------------

    @workflow.query
    def saga_state(self) -> dict[str, Any]:
        return {
            **self.saga.state(),
            "pivot_passed": self.steps.pivot_passed,
            "cancel_reason": self.cancel_reason,
            "outcome": self.outcome,
            "details": workflow.get_current_details(),
        }
