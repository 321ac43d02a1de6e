"""The ledger's money rows, on the backend chosen by ``--ledger-backend``: each names the
provider's payment and where the money is after it, each is written once, and a release
never lands on a hold it did not see."""

from __future__ import annotations

import pytest

from pizzeria.ledger import (
    LATE_PAYMENT_UNDONE,
    REAUTHORIZE_HOLD,
    HoldChanged,
    LateStepRefused,
    Ledger,
)

RUN = "pizza-workflow-order-M1/run-1"
ORDER = "M1"


def hold(ledger: Ledger, payment_id: str = "pi_1", amount: int = 3500) -> None:
    ledger.charge(RUN, ORDER, amount, "4242", payment_id=payment_id, money_state="held")


def test_a_captured_order_reads_as_one_hold_captured(ledger: Ledger) -> None:
    hold(ledger)
    ledger.bill(RUN, ORDER, 3500, "P1", payment_id="pi_1", money_state="captured")
    (order,) = ledger.orders()
    assert (order.charged, order.billed, order.refunded, order.money) == (3500, 3500, 0, "captured")
    assert order.payment_ids == ["pi_1"]
    assert order.to_json()["money"] == "captured"


def test_a_release_records_the_amount_held_once(ledger: Ledger) -> None:
    hold(ledger)
    first = ledger.release(
        RUN, ORDER, seen_hold=("pi_1", None), payment_id="pi_1", money_state="released"
    )
    again = ledger.release(
        RUN, ORDER, seen_hold=("pi_1", None), payment_id="pi_1", money_state="released"
    )
    assert (first.amount, first.applied, first.tombstone) == (3500, True, False)
    assert (again.amount, again.applied) == (3500, False)
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.money) == (3500, 3500, "released")


def test_a_release_of_nothing_is_a_tombstone_that_refuses_a_late_hold(ledger: Ledger) -> None:
    tomb = ledger.release(RUN, ORDER, seen_hold=(None, None))
    assert (tomb.tombstone, tomb.amount) == (True, 0)
    with pytest.raises(LateStepRefused):
        hold(ledger)
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.money) == (0, 0, "")


def test_a_release_refuses_a_hold_it_did_not_see(ledger: Ledger) -> None:
    """A late step recorded a hold after the compensation looked: no tombstone over it."""
    hold(ledger)
    with pytest.raises(HoldChanged):
        ledger.release(RUN, ORDER, seen_hold=(None, None))
    ledger.reauthorized(RUN, ORDER, 3500, "pi_2", "pi_1")
    with pytest.raises(HoldChanged):
        ledger.release(RUN, ORDER, seen_hold=("pi_1", None), payment_id="pi_1")
    assert [e["step"] for e in ledger.effects(RUN)] == ["process_credit_card", REAUTHORIZE_HOLD]


def test_a_renewed_hold_is_not_a_second_charge(ledger: Ledger) -> None:
    hold(ledger)
    renewed = ledger.reauthorized(RUN, ORDER, 3500, "pi_2", "pi_1")
    assert ledger.reauthorized(RUN, ORDER, 3500, "pi_2", "pi_1").applied is False
    ledger.bill(RUN, ORDER, 3500, "P1", payment_id="pi_2", money_state="captured")
    (order,) = ledger.orders()
    assert (renewed.reference, renewed.money_state) == ("pi_1", "held")
    assert (order.charged, order.billed, order.payment_ids) == (3500, 3500, ["pi_1", "pi_2"])


def test_a_renewal_after_the_release_is_refused(ledger: Ledger) -> None:
    hold(ledger)
    ledger.release(RUN, ORDER, seen_hold=("pi_1", None), payment_id="pi_1", money_state="expired")
    with pytest.raises(LateStepRefused):
        ledger.reauthorized(RUN, ORDER, 3500, "pi_2", "pi_1")


def test_a_refund_after_the_bill_is_counted_apart_from_the_sagas_refund(ledger: Ledger) -> None:
    hold(ledger)
    ledger.bill(RUN, ORDER, 3500, "P1", payment_id="pi_1", money_state="captured")
    first = ledger.refund_after_bill(RUN, ORDER, 3500, "pi_1", "re_1")
    assert ledger.refund_after_bill(RUN, ORDER, 3500, "pi_1", "re_1").applied is False
    (order,) = ledger.orders()
    # The bill stands (charged - refunded = billed); the customer got it all back after.
    assert (order.charged, order.refunded, order.billed) == (3500, 0, 3500)
    assert (order.refunded_after_bill, order.money) == (3500, "refunded")
    assert first.reference == "re_1"


def test_a_late_payment_undone_is_recorded_once_and_moves_no_total(ledger: Ledger) -> None:
    ledger.release(RUN, ORDER, seen_hold=(None, None))
    ledger.late_payment_undone(RUN, ORDER, 3500, "pi_9", "released")
    ledger.late_payment_undone(RUN, ORDER, 3500, "pi_9", "released")
    rows = [e for e in ledger.effects(RUN) if e["step"] == LATE_PAYMENT_UNDONE]
    assert [(r["payment_id"], r["money_state"]) for r in rows] == [("pi_9", "released")]
    (order,) = ledger.orders()
    assert (order.charged, order.refunded, order.billed) == (0, 0, 0)


def test_run_rows_reads_every_row_of_a_run_by_step(ledger: Ledger) -> None:
    hold(ledger)
    ledger.put_back_stock(RUN, ORDER)  # a tombstone
    rows = ledger.run_rows(RUN)
    assert set(rows) == {"process_credit_card", "revert_inventory"}
    assert rows["process_credit_card"].payment_id == "pi_1"
    assert rows["revert_inventory"].tombstone is True
    assert ledger.run_rows("pizza-workflow-order-M1/other") == {}
