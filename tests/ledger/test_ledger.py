"""The ledger writes each effect exactly once, per run, and never lets stock go negative."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.ledger import (
    AlreadyBilled,
    Effect,
    LateStepRefused,
    Ledger,
    OrderLedger,
    OutOfStock,
    idempotency_key,
    open_ledger,
)
from pizzeria.menu import INGREDIENTS, INITIAL_STOCK
from pizzeria.models import (
    COMPENSATE_REFUND_CUSTOMER,
    COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_UPDATE_INVENTORY,
)

ORDER = "XD001"
RUN_1 = "pizza-workflow-order-XD001/run-1"
RUN_2 = "pizza-workflow-order-XD001/run-2"
# What the exercise's "Large, with mushrooms and onions" takes.
LARGE = {"dough": 3, "tomato sauce": 3, "cheese": 3, "mushrooms": 3, "onions": 3}


def quantities(ledger: Ledger) -> dict[str, int]:
    return {name: row["quantity"] for name, row in ledger.stock().items()}


def minus(before: dict[str, int], taken: dict[str, int]) -> dict[str, int]:
    return {name: count - taken.get(name, 0) for name, count in before.items()}


def summary(ledger: Ledger) -> dict[str, OrderLedger]:
    return {order.order_ref: order for order in ledger.orders()}


def took_and_charged(ledger: Ledger) -> dict[str, int]:
    """RUN_1 takes a large pizza's stock and charges $35; the quantities before it."""
    before = quantities(ledger)
    ledger.take_stock(RUN_1, ORDER, LARGE)
    ledger.charge(RUN_1, ORDER, 3500, "4242")
    return before


def steps(ledger: Ledger, order_ref: str) -> list[str]:
    return sorted(effect["step"] for effect in ledger.effects(order_ref))


# -- stock ---------------------------------------------------------------------------------


def test_new_ledger_seeds_stock_for_every_ingredient(ledger: Ledger) -> None:
    stock = ledger.stock()
    assert set(stock) == set(INGREDIENTS)
    assert all(
        row == {"initial": INITIAL_STOCK, "quantity": INITIAL_STOCK} for row in stock.values()
    )
    assert ledger.effects() == []
    assert ledger.orders() == []


def test_reopening_a_ledger_keeps_its_stock(ledger_location: str) -> None:
    first = open_ledger(ledger_location, initial_stock=5)
    first.take_stock(RUN_1, ORDER, {"cheese": 2})
    first.close()
    again = open_ledger(ledger_location, initial_stock=1000)
    try:
        assert again.stock()["cheese"] == {"initial": 5, "quantity": 3}
    finally:
        again.close()


def test_take_stock_lowers_stock_by_the_ingredients(ledger: Ledger) -> None:
    before = quantities(ledger)
    effect = ledger.take_stock(RUN_1, ORDER, LARGE)
    assert effect.applied is True
    assert effect.step == STEP_UPDATE_INVENTORY
    assert effect.ingredients == LARGE
    assert effect.tombstone is False
    assert quantities(ledger) == minus(before, LARGE)


def test_take_stock_repeated_with_the_same_order_ref_changes_nothing(ledger: Ledger) -> None:
    ledger.take_stock(RUN_1, ORDER, LARGE)
    after_first = quantities(ledger)
    again = ledger.take_stock(RUN_1, ORDER, LARGE)
    assert again.applied is False
    assert again.ingredients == LARGE
    assert quantities(ledger) == after_first
    assert steps(ledger, RUN_1) == [STEP_UPDATE_INVENTORY]


def test_take_stock_repeat_with_other_ingredients_keeps_the_first_take(ledger: Ledger) -> None:
    ledger.take_stock(RUN_1, ORDER, LARGE)
    after_first = quantities(ledger)
    again = ledger.take_stock(RUN_1, ORDER, {"ham": 9})
    assert again.applied is False
    assert again.ingredients == LARGE
    assert quantities(ledger) == after_first


def test_put_back_stock_restores_exactly_and_a_repeat_is_a_noop(ledger: Ledger) -> None:
    before = quantities(ledger)
    ledger.take_stock(RUN_1, ORDER, LARGE)
    put_back = ledger.put_back_stock(RUN_1, ORDER)
    assert put_back.applied is True
    assert put_back.tombstone is False
    assert put_back.ingredients == LARGE
    assert quantities(ledger) == before

    again = ledger.put_back_stock(RUN_1, ORDER)
    assert again.applied is False
    assert quantities(ledger) == before
    assert steps(ledger, RUN_1) == sorted([STEP_UPDATE_INVENTORY, COMPENSATE_REVERT_INVENTORY])


def test_take_after_put_back_of_the_same_run_changes_nothing(ledger: Ledger) -> None:
    before = quantities(ledger)
    ledger.take_stock(RUN_1, ORDER, LARGE)
    ledger.put_back_stock(RUN_1, ORDER)
    # A retry of the (already completed) take finds its row and does not take again.
    assert ledger.take_stock(RUN_1, ORDER, LARGE).applied is False
    assert quantities(ledger) == before


def test_put_back_before_take_leaves_a_tombstone_and_refuses_a_late_take(ledger: Ledger) -> None:
    before = quantities(ledger)
    tombstone = ledger.put_back_stock(RUN_1, ORDER)
    assert tombstone.tombstone is True
    assert tombstone.ingredients == {}
    assert quantities(ledger) == before

    with pytest.raises(LateStepRefused):
        ledger.take_stock(RUN_1, ORDER, LARGE)
    assert quantities(ledger) == before
    assert steps(ledger, RUN_1) == [COMPENSATE_REVERT_INVENTORY]
    assert summary(ledger)[RUN_1].stock_held == {}


def test_out_of_stock_raises_and_changes_nothing(ledger_location: str) -> None:
    small = open_ledger(ledger_location, initial_stock=5)
    try:
        before = quantities(small)
        with pytest.raises(OutOfStock) as raised:
            small.take_stock(RUN_1, ORDER, {"dough": 3, "cheese": 6, "ham": 7})
        assert raised.value.missing == {"cheese": 1, "ham": 2}
        assert "cheese (short 1)" in str(raised.value)
        assert quantities(small) == before
        assert small.effects() == []
        # No row was written, so the same run may take a smaller order afterwards.
        assert small.take_stock(RUN_1, ORDER, {"cheese": 5}).applied is True
        assert small.stock()["cheese"]["quantity"] == 0
    finally:
        small.close()


def test_stock_never_goes_negative(ledger_location: str) -> None:
    small = open_ledger(ledger_location, initial_stock=5)
    try:
        small.take_stock("run-a", ORDER, {"cheese": 5})
        with pytest.raises(OutOfStock):
            small.take_stock("run-b", ORDER, {"cheese": 1})
        assert small.stock()["cheese"]["quantity"] == 0
        assert all(row["quantity"] >= 0 for row in small.stock().values())
    finally:
        small.close()


operations = st.lists(
    st.tuples(
        st.sampled_from(["take", "put_back"]),
        st.integers(min_value=0, max_value=5),  # which run
        st.dictionaries(
            st.sampled_from(["dough", "cheese", "ham"]),
            st.integers(min_value=1, max_value=4),
            min_size=1,
        ),
    ),
    max_size=25,
)


# Each example opens its own fresh ledger from the fixture's factory.
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_stock_equals_initial_minus_what_runs_still_hold(
    fresh_location: Callable[[], AbstractContextManager[str]],
    ops: list[tuple[str, int, dict[str, int]]],
) -> None:
    with fresh_location() as location:
        small = open_ledger(location, initial_stock=6)
        try:
            for op, run, ingredients in ops:
                ref = f"run-{run}"
                if op == "put_back":
                    small.put_back_stock(ref, ORDER)
                    continue
                with contextlib.suppress(OutOfStock, LateStepRefused):
                    small.take_stock(ref, ORDER, ingredients)
            held: Counter[str] = Counter()
            for order in small.orders():
                held.update(order.stock_held)
            for name, row in small.stock().items():
                assert row["quantity"] >= 0
                assert row["quantity"] == 6 - held[name]
        finally:
            small.close()


# -- money ---------------------------------------------------------------------------------


def test_charge_is_written_once_per_order_ref(ledger: Ledger) -> None:
    first = ledger.charge(RUN_1, ORDER, 3500, "4242")
    assert first.applied is True
    assert (first.step, first.amount, first.reference) == (STEP_PROCESS_CREDIT_CARD, 3500, "4242")
    again = ledger.charge(RUN_1, ORDER, 9999, "0000")
    assert again.applied is False
    assert (again.amount, again.reference) == (3500, "4242")
    assert steps(ledger, RUN_1) == [STEP_PROCESS_CREDIT_CARD]
    assert summary(ledger)[RUN_1].charged == 3500


def test_refund_refunds_exactly_the_charged_amount_once(ledger: Ledger) -> None:
    ledger.charge(RUN_1, ORDER, 3500, "4242")
    refund = ledger.refund(RUN_1, ORDER)
    assert refund.applied is True
    assert refund.tombstone is False
    assert (refund.step, refund.amount) == (COMPENSATE_REFUND_CUSTOMER, 3500)
    again = ledger.refund(RUN_1, ORDER)
    assert again.applied is False
    assert again.amount == 3500
    order = summary(ledger)[RUN_1]
    assert (order.charged, order.refunded) == (3500, 3500)
    assert steps(ledger, RUN_1) == sorted([STEP_PROCESS_CREDIT_CARD, COMPENSATE_REFUND_CUSTOMER])


def test_refund_before_charge_leaves_a_tombstone_and_refuses_a_late_charge(
    ledger: Ledger,
) -> None:
    tombstone = ledger.refund(RUN_1, ORDER)
    assert tombstone.tombstone is True
    assert tombstone.amount == 0
    with pytest.raises(LateStepRefused):
        ledger.charge(RUN_1, ORDER, 3500, "4242")
    assert steps(ledger, RUN_1) == [COMPENSATE_REFUND_CUSTOMER]
    order = summary(ledger)[RUN_1]
    assert (order.charged, order.refunded) == (0, 0)
    # A repeated refund still finds its tombstone.
    assert ledger.refund(RUN_1, ORDER).applied is False


def test_bill_is_written_once_per_order_ref(ledger: Ledger) -> None:
    assert ledger.bill(RUN_1, ORDER, 3500, "PABC").applied is True
    again = ledger.bill(RUN_1, ORDER, 100, "PXYZ")
    assert again.applied is False
    assert (again.amount, again.reference) == (3500, "PABC")
    assert summary(ledger)[RUN_1].billed == 3500


# -- runs ----------------------------------------------------------------------------------


def test_a_different_run_of_the_same_order_never_touches_the_first_runs_rows(
    ledger: Ledger,
) -> None:
    before = took_and_charged(ledger)
    first_rows = ledger.effects(RUN_1)

    # The second run compensates what it never did: tombstones under its own keys.
    assert ledger.put_back_stock(RUN_2, ORDER).tombstone is True
    assert ledger.refund(RUN_2, ORDER).tombstone is True

    assert ledger.effects(RUN_1) == first_rows
    assert quantities(ledger) == minus(before, LARGE)
    orders = summary(ledger)
    assert (orders[RUN_1].charged, orders[RUN_1].refunded) == (3500, 0)
    assert orders[RUN_1].stock_held == LARGE
    assert (orders[RUN_2].charged, orders[RUN_2].refunded) == (0, 0)
    assert orders[RUN_2].stock_held == {}
    assert orders[RUN_1].order_number == orders[RUN_2].order_number == ORDER

    # And the second run's own take works: it is a new run, not a repeat.
    with pytest.raises(LateStepRefused):
        ledger.take_stock(RUN_2, ORDER, LARGE)
    assert ledger.take_stock("pizza-workflow-order-XD001/run-3", ORDER, LARGE).applied is True


# -- an operator abandoning a run -----------------------------------------------------------


def test_abandoning_a_run_puts_back_its_stock_refunds_its_charge_and_refuses_the_bill(
    ledger: Ledger,
) -> None:
    before = took_and_charged(ledger)
    put_back, refund = ledger.abandon_run(RUN_1, ORDER)
    assert (put_back.applied, put_back.tombstone, put_back.ingredients) == (True, False, LARGE)
    assert (refund.applied, refund.tombstone, refund.amount) == (True, False, 3500)
    assert quantities(ledger) == before
    with pytest.raises(LateStepRefused):
        ledger.bill(RUN_1, ORDER, 3500, "P1")
    again = ledger.abandon_run(RUN_1, ORDER)  # a repeat finds the rows: nothing twice
    assert [effect.applied for effect in again] == [False, False]
    (row,) = ledger.orders()
    assert (row.charged, row.refunded, row.billed, row.stock_held) == (3500, 3500, 0, {})


def test_abandoning_a_run_that_did_nothing_leaves_tombstones_refusing_every_late_step(
    ledger: Ledger,
) -> None:
    before = quantities(ledger)
    put_back, refund = ledger.abandon_run(RUN_1, ORDER)
    assert put_back.tombstone and refund.tombstone and refund.amount == 0
    with pytest.raises(LateStepRefused):
        ledger.take_stock(RUN_1, ORDER, LARGE)
    with pytest.raises(LateStepRefused):
        ledger.charge(RUN_1, ORDER, 3500, "4242")
    with pytest.raises(LateStepRefused):
        ledger.bill(RUN_1, ORDER, 3500, "P1")
    assert quantities(ledger) == before
    assert (summary(ledger)[RUN_1].charged, summary(ledger)[RUN_1].billed) == (0, 0)


def test_a_billed_run_is_not_abandoned_and_keeps_every_row(ledger: Ledger) -> None:
    took_and_charged(ledger)
    ledger.bill(RUN_1, ORDER, 3500, "P1")
    rows = ledger.effects(RUN_1)
    with pytest.raises(AlreadyBilled, match="only goes forward"):
        ledger.abandon_run(RUN_1, ORDER)
    assert ledger.effects(RUN_1) == rows  # nothing put back, nothing refunded


def test_idempotency_keys_are_order_ref_and_step(ledger: Ledger) -> None:
    ledger.charge(RUN_1, ORDER, 100, "4242")
    (row,) = ledger.effects(RUN_1)
    assert (
        row["idempotency_key"]
        == idempotency_key(RUN_1, STEP_PROCESS_CREDIT_CARD)
        == f"{RUN_1}/{STEP_PROCESS_CREDIT_CARD}"
    )


def test_orders_summarises_charged_refunded_billed_and_stock_held_per_run(
    ledger: Ledger,
) -> None:
    delivered, failed, never_started = "wf/delivered", "wf/failed", "wf/never"
    ledger.take_stock(delivered, "A1", LARGE)
    ledger.charge(delivered, "A1", 3500, "4242")
    ledger.bill(delivered, "A1", 3500, "P1")

    ledger.take_stock(failed, "B2", {"ham": 1})
    ledger.charge(failed, "B2", 1200, "4242")
    ledger.refund(failed, "B2")
    ledger.put_back_stock(failed, "B2")

    ledger.put_back_stock(never_started, "C3")
    ledger.refund(never_started, "C3")

    assert summary(ledger) == {
        delivered: OrderLedger(delivered, "A1", 3500, 0, 3500, LARGE),
        failed: OrderLedger(failed, "B2", 1200, 1200, 0, {}),
        never_started: OrderLedger(never_started, "C3", 0, 0, 0, {}),
    }


# -- several processes ---------------------------------------------------------------------


def test_two_ledgers_on_one_location_see_each_others_writes_and_stay_idempotent(
    ledger_location: str,
) -> None:
    first, second = open_ledger(ledger_location), open_ledger(ledger_location)
    try:
        before = quantities(first)
        assert first.take_stock(RUN_1, ORDER, LARGE).applied is True
        assert quantities(second) == minus(before, LARGE)
        assert second.take_stock(RUN_1, ORDER, LARGE).applied is False
        assert quantities(first) == minus(before, LARGE)

        assert second.put_back_stock(RUN_1, ORDER).applied is True
        assert first.put_back_stock(RUN_1, ORDER).applied is False
        assert quantities(first) == quantities(second) == before

        assert second.charge(RUN_1, ORDER, 3500, "4242").applied is True
        assert first.charge(RUN_1, ORDER, 3500, "4242").applied is False
        assert first.refund(RUN_1, ORDER).amount == 3500
        assert second.refund(RUN_1, ORDER).applied is False
        assert [o.refunded for o in first.orders()] == [3500]
        assert first.orders() == second.orders()
    finally:
        first.close()
        second.close()


def hammer(ledgers: list[Ledger], calls: list[Callable[[Ledger], Effect]]) -> list[Any]:
    """Run every call at once, each on its own thread, spread over the ledgers."""
    start = threading.Barrier(len(calls))

    def run(index: int) -> Any:
        start.wait()
        try:
            return calls[index](ledgers[index % len(ledgers)])
        except (LateStepRefused, OutOfStock) as refused:
            return refused

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, range(len(calls))))


def test_concurrent_takes_and_put_backs_with_one_key_take_effect_exactly_once(
    ledger_location: str,
) -> None:
    ledgers = [open_ledger(ledger_location) for _ in range(4)]
    try:
        before = quantities(ledgers[0])

        takes = hammer(ledgers, [lambda lg: lg.take_stock(RUN_1, ORDER, LARGE)] * 12)
        assert sum(effect.applied for effect in takes) == 1
        assert quantities(ledgers[0]) == minus(before, LARGE)

        put_backs = hammer(ledgers, [lambda lg: lg.put_back_stock(RUN_1, ORDER)] * 12)
        assert sum(effect.applied for effect in put_backs) == 1
        assert quantities(ledgers[0]) == before

        # Takes racing put-backs of another run: whichever comes first, the stock ends
        # where it started and each key holds at most one row.
        mixed: list[Callable[[Ledger], Effect]] = [
            lambda lg: lg.take_stock(RUN_2, ORDER, LARGE),
            lambda lg: lg.put_back_stock(RUN_2, ORDER),
        ] * 6
        hammer(ledgers, mixed)
        assert quantities(ledgers[0]) == before
        keys = Counter(row["idempotency_key"] for row in ledgers[0].effects())
        assert set(keys.values()) == {1}
        assert summary(ledgers[0])[RUN_2].stock_held == {}
    finally:
        for opened in ledgers:
            opened.close()


def test_concurrent_runs_each_take_their_own_stock(ledger_location: str) -> None:
    ledgers = [open_ledger(ledger_location, initial_stock=100) for _ in range(3)]
    try:

        def take_for(ref: str) -> Callable[[Ledger], Effect]:
            return lambda lg: lg.take_stock(ref, ORDER, {"cheese": 3})

        calls = [take_for(f"run-{n}") for n in range(10)] * 2  # each run twice
        results = hammer(ledgers, calls)
        assert sum(effect.applied for effect in results) == 10
        assert ledgers[1].stock()["cheese"]["quantity"] == 100 - 30
    finally:
        for opened in ledgers:
            opened.close()


def test_concurrent_charges_with_one_key_leave_one_row_and_every_caller_sees_it(
    ledger_location: str,
) -> None:
    ledgers = [open_ledger(ledger_location) for _ in range(3)]
    try:

        def charge(amount: int) -> Callable[[Ledger], Effect]:
            return lambda lg: lg.charge(RUN_1, ORDER, amount, "4242")

        results = hammer(ledgers, [charge(100 * n) for n in range(1, 13)])
        (applied,) = [effect for effect in results if effect.applied]
        assert {effect.amount for effect in results} == {applied.amount}
        (row,) = ledgers[0].effects()
        assert row["amount"] == applied.amount
        assert summary(ledgers[1])[RUN_1].charged == applied.amount
    finally:
        for opened in ledgers:
            opened.close()


def test_many_orders_racing_for_the_last_portions_never_take_more_than_there_is(
    ledger_location: str,
) -> None:
    """21 cheese and 40 orders of 2: exactly 10 get theirs, whatever the interleaving;
    ingredients listed in either order must not deadlock each other."""
    ledgers = [open_ledger(ledger_location, initial_stock=21) for _ in range(4)]
    try:

        def order(n: int) -> Callable[[Ledger], Effect]:
            wanted = {"cheese": 2, "ham": 1} if n % 2 else {"ham": 1, "cheese": 2}
            return lambda lg: lg.take_stock(f"run-{n}", f"N{n}", wanted)

        results = hammer(ledgers, [order(n) for n in range(40)])
        taken = [result for result in results if isinstance(result, Effect)]
        short = [result for result in results if isinstance(result, OutOfStock)]
        assert (len(taken), len(short)) == (10, 30)
        assert all(effect.applied for effect in taken)
        stock = ledgers[0].stock()
        assert (stock["cheese"]["quantity"], stock["ham"]["quantity"]) == (1, 11)
        assert len(ledgers[0].effects()) == 10
    finally:
        for opened in ledgers:
            opened.close()


def test_tombstone_rows_are_marked(ledger: Ledger) -> None:
    ledger.refund(RUN_1, ORDER)
    ledger.put_back_stock(RUN_1, ORDER)
    rows = ledger.effects(RUN_1)
    assert {row["step"] for row in rows} == {
        COMPENSATE_REFUND_CUSTOMER,
        COMPENSATE_REVERT_INVENTORY,
    }
    assert all(row["tombstone"] == 1 for row in rows)


# -- late steps and snapshots --------------------------------------------------------------


def test_a_bill_arriving_after_the_refund_is_refused_and_bills_nothing(ledger: Ledger) -> None:
    ledger.charge(RUN_1, ORDER, 3500, "4242")
    ledger.refund(RUN_1, ORDER)
    with pytest.raises(LateStepRefused):
        ledger.bill(RUN_1, ORDER, 3500, "P1")
    order = summary(ledger)[RUN_1]
    assert (order.charged, order.refunded, order.billed) == (3500, 3500, 0)


def test_a_bill_after_a_refund_tombstone_is_refused_too(ledger: Ledger) -> None:
    ledger.refund(RUN_1, ORDER)  # compensated before anything was charged
    with pytest.raises(LateStepRefused):
        ledger.bill(RUN_1, ORDER, 3500, "P1")
    assert steps(ledger, RUN_1) == [COMPENSATE_REFUND_CUSTOMER]


def test_a_repeated_bill_is_still_answered_after_a_refund(ledger: Ledger) -> None:
    """Not a late step: the bill was written first, so its retry finds it."""
    ledger.bill(RUN_1, ORDER, 3500, "P1")
    ledger.refund(RUN_1, ORDER)
    assert ledger.bill(RUN_1, ORDER, 3500, "P1").applied is False


def test_a_late_take_and_a_late_charge_after_tombstones_leave_every_balance_alone(
    ledger: Ledger,
) -> None:
    before = quantities(ledger)
    ledger.put_back_stock(RUN_1, ORDER)
    ledger.refund(RUN_1, ORDER)
    rows = ledger.effects()
    late_steps: list[Callable[[], Effect]] = [
        lambda: ledger.take_stock(RUN_1, ORDER, LARGE),
        lambda: ledger.charge(RUN_1, ORDER, 3500, "4242"),
    ]
    for late_step in late_steps:
        with pytest.raises(LateStepRefused):
            late_step()
    assert quantities(ledger) == before
    assert ledger.effects() == rows


def test_snapshot_holds_the_stock_and_every_effect(ledger: Ledger) -> None:
    ledger.take_stock(RUN_1, ORDER, LARGE)
    ledger.charge(RUN_1, ORDER, 3500, "4242")
    ledger.refund(RUN_2, ORDER)
    snapshot = ledger.snapshot()
    assert snapshot.stock == ledger.stock()
    assert snapshot.effects == ledger.effects()
    assert snapshot.orders() == ledger.orders()


def test_snapshot_is_consistent_while_another_process_writes(ledger_location: str) -> None:
    """Stock conservation holds in every snapshot taken while takes and put-backs run."""
    reader = open_ledger(ledger_location, initial_stock=500)
    writer = open_ledger(ledger_location)
    stop = threading.Event()

    def write() -> None:
        for run in range(60):
            ref = f"run-{run}"
            writer.take_stock(ref, ORDER, {"cheese": 3, "ham": 1})
            if run % 2:
                writer.put_back_stock(ref, ORDER)
        stop.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        checked = 0
        while not stop.is_set() and checked < 2000:
            snapshot = reader.snapshot()
            held: Counter[str] = Counter()
            for order in snapshot.orders():
                held.update(order.stock_held)
            for name, row in snapshot.stock.items():
                assert row["quantity"] + held[name] == row["initial"], (name, checked)
            checked += 1
    finally:
        thread.join(timeout=30)
        reader.close()
        writer.close()
