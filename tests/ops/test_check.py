"""``pizzeria check``: the ledger and the payment provider against Temporal's record, and
every violation named.

First the comparison itself, on a real ledger with Temporal's side written by hand (the
order each run was given, how it ended; each invariant broken on purpose, by SQL, since the
ledger's own methods refuse to), and the provider's side written by hand where real orders
cannot make it (a hold that expired and was held again, a late bill undone); a run
Temporal really terminated, read from its history on either server; the provider's records
read page by page; then the command against a real dev server, worker and provider.
tests/ops/test_check_mutations.py damages copies of a real ledger, and of a real provider's
records, in every way we know.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import DataConverter
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from pizzeria import menu
from pizzeria.client import abandon_order
from pizzeria.ledger import Ledger
from pizzeria.models import (
    CreditCardInfo,
    OrderConfirmation,
    Pizza,
    PizzaOrder,
    order_number_of,
    order_ref,
    split_order_ref,
    workflow_id_for,
)
from pizzeria.ops.check import provider as provider_book
from pizzeria.ops.check.provider import ProviderBook, read_provider
from pizzeria.ops.check.reconcile import reconcile
from pizzeria.ops.check.records import (
    OrderRecord,
    failure_type,
    order_record,
    resolved_by_update,
)
from pizzeria.ops.processes import free_port
from pizzeria.order_refund import REFUND_UNDELIVERED_PATCH
from pizzeria.payments import process
from pizzeria.payments.port import MoneyState, Payment, RefundRecord, order_metadata
from pizzeria.payments.stripe_gateway import URL_VARIABLE, StripeGateway
from pizzeria.samples import BAD_CARD, sample_order
from pizzeria.temporal.faults import parse_faults, write_faults
from tests.helpers import PIZZERIA, eventually, pizzeria, wait_until
from tests.helpers.stack import StackOptions


def placed(number: str) -> PizzaOrder:
    return sample_order(number, prep_seconds=0)


RECIPE = menu.ingredients_for(placed("X").items)  # the exercise's three pizzas
AMOUNT = menu.billed_for(placed("X").items)  # $35.00 after the discount


def wf(order: str) -> str:
    return workflow_id_for(order)


def ref(order: str, run: str = "r1") -> str:
    return order_ref(wf(order), run)


def record(order: str, status: str, run: str = "r1", **fields: Any) -> OrderRecord:
    """A run of the exercise's order; a completed one returned its bill's confirmation."""
    if status == "COMPLETED" and "confirmation" not in fields:
        fields["confirmation"] = OrderConfirmation(order, "SUCCESS", f"P-{order}", 0, AMOUNT)
    if "confirmation" in fields:
        fields.setdefault("amount", fields["confirmation"].amount)
    return OrderRecord(wf(order), run, status, order=placed(order), **fields)


def tamper(ledger: Ledger, sql: str, *params: Any) -> None:
    """Write what the ledger's own methods would refuse to."""
    with sqlite3.connect(ledger.location) as db:
        db.execute(sql, params)


def insert_row(ledger: Ledger, run_ref: str, step: str, amount: int = 0, **extra: Any) -> None:
    tamper(
        ledger,
        "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
        " ingredients, tombstone, reference, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, '', ?)",
        f"{run_ref}/{step}",
        run_ref,
        order_number_of(split_order_ref(run_ref)[0]),
        step,
        amount,
        json.dumps(extra.get("ingredients", {})),
        time.time(),
    )


@pytest.fixture
def book(ledger: Ledger) -> Ledger:
    """A ledger with one order of each outcome, all of them consistent."""
    ledger.take_stock(ref("DONE"), "DONE", RECIPE)
    ledger.charge(ref("DONE"), "DONE", AMOUNT, "4242")
    ledger.bill(ref("DONE"), "DONE", AMOUNT, "P-DONE")

    ledger.take_stock(ref("FAIL"), "FAIL", RECIPE)
    ledger.charge(ref("FAIL"), "FAIL", AMOUNT, "4242")
    ledger.refund(ref("FAIL"), "FAIL")
    ledger.put_back_stock(ref("FAIL"), "FAIL")

    ledger.refund(ref("CANCEL"), "CANCEL")  # cancelled before any effect: tombstones
    ledger.put_back_stock(ref("CANCEL"), "CANCEL")

    ledger.take_stock(ref("OPEN"), "OPEN", RECIPE)
    return ledger


def records() -> list[OrderRecord]:
    return [
        record("DONE", "COMPLETED"),
        record("FAIL", "FAILED", error_type="CreditCardProcessingError"),
        record("CANCEL", "CANCELLED", error_type="CancelledError"),
        record("OPEN", "RUNNING", details="Charging card"),
        record("EARLY", "FAILED", error_type="InvalidOrderError"),  # no ledger rows at all
    ]


def kinds(report: Any) -> list[tuple[str, str]]:
    return [(violation.kind, violation.order) for violation in report.violations]


# -- the comparison --------------------------------------------------------------------------


def test_a_consistent_ledger_has_no_violations_and_counts_every_outcome(book: Ledger) -> None:
    report = reconcile(records(), book.snapshot())
    assert report.ok and report.violations == []
    assert report.orders == {
        "total": 5,
        "completed": 1,
        "failed": 2,
        "cancelled": 1,
        "terminated": 0,
        "timed_out": 0,
        "open": 1,
    }
    assert report.failures == {"CreditCardProcessingError": 1, "InvalidOrderError": 1}
    assert report.open_orders == ["OPEN"]
    assert report.money == {
        "charged": 2 * AMOUNT,
        "refunded": AMOUNT,
        "net": AMOUNT,
        "refunded_after_bill": 0,
        "kept": AMOUNT,
        "billed_completed": AMOUNT,
        "completed_orders_settled": 1,
        "undone_orders_settled": 3,  # FAIL, CANCEL and EARLY
    }
    assert (report.double_effects, report.refunds_above_charges) == (0, 0)
    cheese = report.stock["cheese"]
    assert (cheese["consumed"], cheese["held_open"], cheese["held_undone"]) == (8, 8, 0)
    assert cheese["initial"] == cheese["in_stock"] + 16 and cheese["conserved"] is True


def test_an_open_order_that_needs_an_operator_is_named_with_what_to_run(book: Ledger) -> None:
    waiting = "Needs attention: revert_inventory failed; retry or resolve by hand"
    opened = record("OPEN", "RUNNING", details=waiting, needs_attention=True)
    changed = [*records()[:3], opened, *records()[4:]]
    report = reconcile(changed, book.snapshot())
    assert report.ok and report.open_orders == ["OPEN"]
    (warning,) = report.warnings
    assert (warning.kind, warning.order) == ("needs attention", "OPEN")
    assert warning.detail.startswith(waiting) and "pizzeria repair OPEN --retry" in warning.detail
    # Decided from the saga's state, not from its words: the same text, no such state.
    worded = record("OPEN", "RUNNING", details=waiting)
    report = reconcile([*records()[:3], worded, *records()[4:]], book.snapshot())
    assert report.ok and report.warnings == []


def test_an_open_order_is_a_violation_only_when_every_order_must_be_closed(book: Ledger) -> None:
    report = reconcile(records(), book.snapshot(), require_closed=True)
    assert kinds(report) == [("still open", "OPEN")]
    assert "Charging card" in report.violations[0].detail


def test_a_failed_order_that_kept_the_money_is_named(book: Ledger) -> None:
    tamper(book, "DELETE FROM effects WHERE idempotency_key = ?", f"{ref('FAIL')}/refund_customer")
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [("effects kept by an undone order", "FAIL")]
    assert f"charged {AMOUNT} - refunded 0 = {AMOUNT}" in report.violations[0].detail
    assert report.money["undone_orders_settled"] == 2
    assert report.violations[0].run_id == "r1"


def test_a_cancelled_order_still_holding_stock_is_named(book: Ledger) -> None:
    book.take_stock(ref("CANCEL", "r2"), "CANCEL", RECIPE)
    report = reconcile([*records(), record("CANCEL", "CANCELLED", "r2")], book.snapshot())
    assert kinds(report) == [("effects kept by an undone order", "CANCEL")]
    assert f"holds {sum(RECIPE.values())} portions" in report.violations[0].detail
    assert report.stock["cheese"]["held_undone"] == 8
    assert report.stock["cheese"]["conserved"] is True  # conserved, but held by the wrong order


def test_an_order_terminated_after_its_bill_is_a_warning_with_what_to_do_not_a_violation(
    book: Ledger,
) -> None:
    """Terminated from outside during its driver search: billed, its stock used. Nothing
    was to be undone past its pivot, so keeping them is no violation; the operator is told
    how to give the money back. Terminated before its bill, it must have undone all."""
    book.take_stock(ref("TERM"), "TERM", RECIPE)
    book.charge(ref("TERM"), "TERM", AMOUNT, "4242")
    book.bill(ref("TERM"), "TERM", AMOUNT, "P-TERM")
    book.take_stock(ref("HALT"), "HALT", RECIPE)  # terminated before its bill
    ended = [*records(), record("TERM", "TERMINATED"), record("HALT", "TERMINATED")]
    report = reconcile(ended, book.snapshot())
    assert kinds(report) == [("effects kept by an undone order", "HALT")]
    (warning,) = [w for w in report.warnings if w.order == "TERM"]
    assert warning.kind == "ended from outside after its bill"
    assert "terminated after its bill of $35.00" in warning.detail
    assert "pizzeria refund TERM AMOUNT --reason TEXT" in warning.detail
    cheese = report.stock["cheese"]
    assert (cheese["consumed"], cheese["held_undone"]) == (16, 8)  # DONE and TERM; HALT
    assert cheese["conserved"] is True


def test_a_completed_order_billed_other_than_its_confirmation_is_named(book: Ledger) -> None:
    other = OrderConfirmation("DONE", "SUCCESS", "P-DONE", 0, 3000)
    changed = [record("DONE", "COMPLETED", confirmation=other), *records()[1:]]
    report = reconcile(changed, book.snapshot())
    assert kinds(report) == [("bill differs from confirmation", "DONE")]
    assert "Temporal returned $30.00 as P-DONE" in report.violations[0].detail

    renumbered = OrderConfirmation("DONE", "SUCCESS", "P-ELSE", 0, AMOUNT)
    changed = [record("DONE", "COMPLETED", confirmation=renumbered), *records()[1:]]
    report = reconcile(changed, book.snapshot())
    assert kinds(report) == [("bill differs from confirmation", "DONE")]
    assert "billed $35.00 as P-DONE" in report.violations[0].detail


def test_a_completed_order_charged_other_than_its_bill_is_named(book: Ledger) -> None:
    tamper(
        book,
        "UPDATE effects SET amount = 4000 WHERE step = 'process_credit_card' AND order_ref = ?",
        ref("DONE"),
    )
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [
        ("charge differs from the order", "DONE"),
        ("charge differs from bill", "DONE"),
    ]


def test_a_completed_order_charged_less_than_its_bill_is_named(book: Ledger) -> None:
    """Less as well as more: the shop billed $35.00 and kept less than that."""
    tamper(
        book,
        "UPDATE effects SET amount = 3000 WHERE step = 'process_credit_card' AND order_ref = ?",
        ref("DONE"),
    )
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [
        ("charge differs from the order", "DONE"),
        ("charge differs from bill", "DONE"),
    ]
    assert report.violations[1].detail == f"charged 3000 - refunded 0 != billed {AMOUNT}"
    assert report.money["completed_orders_settled"] == 0


def test_a_completed_order_refunded_in_part_is_charged_less_than_its_bill(book: Ledger) -> None:
    """The charge is the order's, but a refund beside it leaves the bill unpaid in part."""
    insert_row(book, ref("DONE"), "refund_customer", 500)
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [("charge differs from bill", "DONE")]
    assert report.violations[0].detail == f"charged {AMOUNT} - refunded 500 != billed {AMOUNT}"
    assert report.money["completed_orders_settled"] == 0


def test_a_compensation_row_beside_its_own_tombstone_is_a_double_effect(book: Ledger) -> None:
    """CANCEL's revert_inventory found nothing to undo (a tombstone); a row of the same
    compensation beside it (under another key: the primary key would refuse its own) is
    the compensation taking effect twice."""
    tamper(
        book,
        "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
        " ingredients, tombstone, reference, created_at)"
        " VALUES (?, ?, 'CANCEL', 'revert_inventory', 0, '{}', 0, '', ?)",
        f"{ref('CANCEL')}/revert_inventory/again",
        ref("CANCEL"),
        time.time(),
    )
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [("double effect", "CANCEL"), ("row under a foreign key", "CANCEL")]
    assert report.violations[0].detail == (
        "revert_inventory written both as a row and as a tombstone"
    )
    assert report.double_effects == 1


def test_a_refund_above_the_charge_is_counted_and_named(book: Ledger) -> None:
    tamper(
        book,
        "UPDATE effects SET amount = 9999 WHERE step = 'refund_customer' AND order_ref = ?",
        ref("FAIL"),
    )
    report = reconcile(records(), book.snapshot())
    assert report.refunds_above_charges == 1
    assert ("refund above charge", "FAIL") in kinds(report)


@pytest.mark.parametrize(
    ("step", "amount"), [("update_inventory", 0), ("process_credit_card", 1500)]
)
def test_a_step_written_after_its_compensations_tombstone_is_a_double_effect(
    book: Ledger, step: str, amount: int
) -> None:
    insert_row(book, ref("CANCEL"), step, amount, ingredients={"ham": 1} if amount == 0 else {})
    report = reconcile(records(), book.snapshot())
    assert report.double_effects == 1
    assert ("late effect after tombstone", "CANCEL") in kinds(report)


def test_a_bill_on_a_failed_order_is_named(book: Ledger) -> None:
    insert_row(book, ref("FAIL"), "send_bill", 1200)
    report = reconcile(records(), book.snapshot())
    assert ("effects kept by an undone order", "FAIL") in kinds(report)
    assert ("late effect after tombstone", "FAIL") in kinds(report)  # billed after refund


def test_every_row_of_a_run_temporal_does_not_know_is_named_a_tombstone_too(
    book: Ledger,
) -> None:
    book.charge(ref("GHOST", "r9"), "GHOST", 800, "4242")
    book.refund(ref("NOTHING", "r9"), "NOTHING")  # a tombstone alone
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [("unknown run", "GHOST"), ("unknown run", "NOTHING")]
    assert "holds rows of" in report.violations[1].detail


def test_stock_that_does_not_add_up_is_named_by_ingredient(book: Ledger) -> None:
    tamper(book, "UPDATE stock SET quantity = quantity - 1 WHERE ingredient = 'olives'")
    report = reconcile(records(), book.snapshot())
    assert kinds(report) == [("stock not conserved", "olives")]
    assert report.stock["olives"]["conserved"] is False


def test_a_compensation_resolved_by_hand_is_a_warning_not_a_violation(book: Ledger) -> None:
    tamper(book, "DELETE FROM effects WHERE idempotency_key = ?", f"{ref('FAIL')}/refund_customer")
    resolved = [
        *(r for r in records() if r.workflow_id != wf("FAIL")),
        record("FAIL", "FAILED", settled_by_hand="refunded by phone"),
    ]
    report = reconcile(resolved, book.snapshot())
    assert report.ok
    (warning,) = report.warnings
    assert warning.order == "FAIL" and "refunded by phone" in warning.detail


def test_a_compensation_resolved_by_hand_is_a_warning_even_when_the_ledger_kept_nothing(
    book: Ledger,
) -> None:
    resolved = [
        *(r for r in records() if r.workflow_id != wf("FAIL")),
        record("FAIL", "FAILED", settled_by_hand="checked the provider by hand"),
    ]
    report = reconcile(resolved, book.snapshot())
    assert report.ok
    assert [(w.kind, w.order) for w in report.warnings] == [("resolved by hand", "FAIL")]
    assert "checked the provider by hand" in report.warnings[0].detail


def test_a_terminated_order_before_its_bill_must_have_been_undone_like_a_failed_one(
    book: Ledger,
) -> None:
    changed = [*records()[:3], record("OPEN", "TERMINATED"), *records()[4:]]
    report = reconcile(changed, book.snapshot())
    assert kinds(report) == [("effects kept by an undone order", "OPEN")]
    assert report.orders["terminated"] == 1


def test_failure_type_names_a_typed_error_or_else_the_innermost_cause() -> None:
    assert failure_type(ApplicationError("no", type="OutOfStockError")) == "OutOfStockError"
    timeout = ActivityError(
        "activity timed out",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="update_inventory",
        activity_id="2",
        retry_state=RetryState.MAXIMUM_ATTEMPTS_REACHED,
    )
    timeout.__cause__ = TimeoutError(
        "timed out", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[]
    )
    assert failure_type(timeout) == "TimeoutError"
    assert failure_type(None) == "unknown"


# -- a run Temporal really terminated, on either server ----------------------------------------


async def test_a_truly_terminated_run_is_read_as_such_and_must_have_been_undone(
    client, worker, start, ledger, faults_file
) -> None:
    """A run terminated by Temporal, read back from its history (not a record written by
    hand): while the ledger holds its charge and stock that is a violation; once
    `abandon_order` has undone them in the ledger, there is none.

    test_hostile.py's stuck-order test also checks a terminated run, but only on the dev
    server: it first makes a bad deploy's workflow task fail. Terminating an order held
    before its bill needs no stuck task, so this runs on the time-skipping server too.
    """
    write_faults(faults_file, parse_faults("send_bill=fail"))  # retried: held before the pivot
    async with worker():
        handle = await start(placed("TERM"))

        def charged() -> bool:
            return any(row["step"] == "process_credit_card" for row in ledger.effects())

        await eventually(charged, "the order to be charged")
    await handle.terminate("test: terminated before its bill")
    run_id = (await handle.describe()).run_id
    number = order_number_of(handle.id)
    record = await order_record(client, handle.id, run_id)
    assert record is not None and (record.status, record.order) == ("TERMINATED", placed(number))

    report = reconcile([record], ledger.snapshot())
    assert kinds(report) == [("effects kept by an undone order", number)]
    assert report.violations[0].detail == (
        f"terminated but charged {AMOUNT} - refunded 0 = {AMOUNT}; "
        f"holds {sum(RECIPE.values())} portions of stock"
    )
    assert (report.orders["terminated"], report.money["undone_orders_settled"]) == (1, 0)
    assert report.stock["cheese"]["held_undone"] == RECIPE["cheese"]

    abandoned = await abandon_order(client, ledger, number)
    assert (abandoned.status, abandoned.refunded, abandoned.put_back) == (
        "TERMINATED",
        AMOUNT,
        RECIPE,
    )
    report = reconcile([record], ledger.snapshot())
    assert report.ok and report.money["undone_orders_settled"] == 1
    assert all(row["conserved"] and not row["held_undone"] for row in report.stock.values())


# -- the provider's side, written by hand -------------------------------------------------------

STATUS_OF = {
    MoneyState.HELD: "requires_capture",
    MoneyState.CAPTURED: "succeeded",
    MoneyState.REFUNDED: "succeeded",
    MoneyState.RELEASED: "canceled",
    MoneyState.EXPIRED: "canceled",
}


def payment(pid: str, order: str, state: MoneyState, *, captured: int = 0) -> Payment:
    """A payment of the exercise's order (run r1) as the provider would show it."""
    return Payment(
        id=pid,
        state=state,
        amount=AMOUNT,
        currency="usd",
        amount_capturable=AMOUNT if state == MoneyState.HELD else 0,
        amount_captured=captured,
        amount_refunded=captured if state == MoneyState.REFUNDED else 0,
        created=0,
        provider_status=STATUS_OF[state],
        metadata=order_metadata(ref(order), order),
    )


def refund(payment_id: str, amount: int = AMOUNT) -> RefundRecord:
    return RefundRecord(f"re_{payment_id}", payment_id, amount, "usd", "succeeded", 0)


def provider_of(*payments: Payment, refunds: tuple[RefundRecord, ...] = ()) -> ProviderBook:
    return ProviderBook({p.id: p for p in payments}, list(refunds))


def test_a_hold_that_expired_and_was_held_again_agrees_once_the_second_is_captured(
    ledger: Ledger,
) -> None:
    """The bill found its hold expired and held the card again: the first payment stays
    expired and named by the ledger, the second is the one captured and billed."""
    number = "RENEW"
    ledger.take_stock(ref(number), number, RECIPE)
    ledger.charge(ref(number), number, AMOUNT, "4242", payment_id="pi_1", money_state="held")
    ledger.reauthorized(ref(number), number, AMOUNT, "pi_2", "pi_1")
    captured = {"money_state": "captured"}
    ledger.bill(ref(number), number, AMOUNT, f"P-{number}", payment_id="pi_2", **captured)
    first = payment("pi_1", number, MoneyState.EXPIRED)
    second = payment("pi_2", number, MoneyState.CAPTURED, captured=AMOUNT)
    records = [record(number, "COMPLETED")]
    report = reconcile(records, ledger.snapshot(), provider=provider_of(first, second))
    assert report.ok, report.violations
    assert report.payments is not None and report.payments["captured"] == AMOUNT

    # Had the bill captured the expired one instead, both books would disagree.
    wrong = payment("pi_1", number, MoneyState.CAPTURED, captured=AMOUNT)
    second_held = payment("pi_2", number, MoneyState.HELD)
    report = reconcile(records, ledger.snapshot(), provider=provider_of(wrong, second_held))
    assert kinds(report) == [
        ("captured without a bill", number),
        ("capture differs from the bill", number),
        ("orphan hold", number),
    ]

    # The renewal's row deleted: the bill names a hold the ledger no longer records.
    number = "RENEW-GONE"
    ledger.take_stock(ref(number), number, RECIPE)
    ledger.charge(ref(number), number, AMOUNT, "4242", payment_id="pi_3", money_state="held")
    ledger.bill(ref(number), number, AMOUNT, f"P-{number}", payment_id="pi_4", **captured)
    books = provider_of(
        first,
        second,
        payment("pi_3", number, MoneyState.EXPIRED),
        payment("pi_4", number, MoneyState.CAPTURED, captured=AMOUNT),
    )
    records.append(record(number, "COMPLETED"))
    report = reconcile(records, ledger.snapshot(), provider=books)
    assert kinds(report) == [("bill of a hold the ledger does not record", number)]
    assert report.violations[0].detail == (
        "the ledger's send_bill captured pi_4; no process_credit_card or reauthorize_hold "
        "row names it"
    )


def test_a_late_bill_undone_by_the_compensation_is_refunded_in_full(ledger: Ledger) -> None:
    """The bill captured the hold after its attempt timed out; the compensation found it
    captured and refunded it, so the failed order keeps nothing: both books say so."""
    number = "LATE"
    ledger.charge(ref(number), number, AMOUNT, "4242", payment_id="pi_9", money_state="held")
    ledger.release(
        ref(number), number, seen_hold=("pi_9", None), payment_id="pi_9", money_state="refunded"
    )
    captured = payment("pi_9", number, MoneyState.REFUNDED, captured=AMOUNT)
    records = [record(number, "FAILED", error_type="CreditCardProcessingError")]
    books = provider_of(captured, refunds=(refund("pi_9"),))
    report = reconcile(records, ledger.snapshot(), provider=books)
    assert report.ok, report.violations
    assert report.payments is not None and report.payments["undone_orders_settled"] == 1

    report = reconcile(records, ledger.snapshot(), provider=provider_of(captured))
    assert kinds(report) == [("refunds differ from the ledger", number)]
    assert report.violations[0].detail == (
        "payment pi_9 (refunded): refunded $0.00 at the provider; the ledger says $35.00"
    )


def test_a_delivery_that_failed_is_refunded_unless_the_order_predates_the_refund(
    ledger: Ledger,
) -> None:
    number = "NODRIVER"
    ledger.take_stock(ref(number), number, RECIPE)
    ledger.charge(ref(number), number, AMOUNT, "4242")
    ledger.bill(ref(number), number, AMOUNT, f"P-{number}")
    failed = OrderConfirmation(number, "DELIVERY FAILURE", f"P-{number}", 0, AMOUNT)
    older = record(number, "COMPLETED", confirmation=failed)
    assert reconcile([older], ledger.snapshot()).ok  # billed before the refund step existed
    newer = record(
        number, "COMPLETED", confirmation=failed, patches=frozenset({REFUND_UNDELIVERED_PATCH})
    )
    report = reconcile([newer], ledger.snapshot())
    assert kinds(report) == [("undelivered order not refunded in full", number)]
    assert report.violations[0].detail == "no driver took it: refunded $0.00 of its bill $35.00"


def test_without_the_providers_records_the_check_judges_two_books(book: Ledger) -> None:
    report = reconcile(records(), book.snapshot())
    assert report.ok and report.payments is None
    assert "payments" in report.to_json() and report.to_json()["payments"] is None


@pytest.fixture
async def quiet_gateway(tmp_path: Path) -> Any:
    """A provider of the test's own: its records are the test's alone (the session's
    provider also holds the money of orders other tests' workers are still closing)."""
    with process.running(tmp_path / "payments.db") as running:
        opened = StripeGateway(process.LOCAL_SECRET_KEY, running.url)
        try:
            yield opened
        finally:
            await opened.close()


async def test_the_providers_records_are_read_page_by_page(
    quiet_gateway: StripeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every payment and refund, however many pages they take (two per page here)."""
    gateway = quiet_gateway
    metadata = order_metadata(ref("PAGES", "r-pages"), "PAGES")
    made = [
        await gateway.authorize(
            600 + n,
            idempotency_key=f"pages-{n}-{time.time()}",
            metadata=metadata,
            card_number="4242424242424242",
        )
        for n in range(5)
    ]
    await gateway.capture(made[0].id, idempotency_key=f"pages-capture-{time.time()}")
    for n in range(3):
        key = f"pages-refund-{n}-{time.time()}"
        await gateway.refund(made[0].id, 100, reason="pages", idempotency_key=key)
    payments = [p.id async for p in gateway.iter_payments(100)]
    refunds = [r.id async for r in gateway.iter_refunds(100)]
    monkeypatch.setattr(provider_book, "PAGE_SIZE", 2)
    book = await read_provider(gateway)
    assert sorted(book.payments) == sorted(payments) and {p.id for p in made} <= set(payments)
    assert sorted(r.id for r in book.refunds) == sorted(refunds)
    assert [r.amount for r in book.refunds_by_payment()[made[0].id]] == [100, 100, 100]


# -- the command against a real server ---------------------------------------------------------

DECLINED_CARD = "4000000000000002"


@pytest.fixture(scope="module")
def own_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[process.ProviderProcess]:
    """The module's own payment provider: its records hold this stack's orders alone."""
    with process.running(tmp_path_factory.mktemp("payments") / "payments.db") as running:
        yield running


@pytest.fixture(scope="module")
def stack_options(own_provider: process.ProviderProcess) -> StackOptions:
    # No driver ever takes a delivery: a delivery is billed, then refunded in full.
    return StackOptions(env={URL_VARIABLE: own_provider.url, "PIZZERIA_DRIVER_PROBABILITY": "0"})


def held(ledger: Path, number: str) -> bool:
    with sqlite3.connect(f"{ledger.resolve().as_uri()}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT 1 FROM effects WHERE order_number = ? AND step = 'process_credit_card'",
            (number,),
        ).fetchone()
    db.close()
    return row is not None


def cancelled_in_the_kitchen(stack: dict[str, Any], number: str) -> None:
    """An order cancelled while it waits in the kitchen, after its card was held."""
    placing = subprocess.Popen(
        [PIZZERIA, "order", "--order-number", number, "--prep-seconds", "60"],
        env=stack["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: held(stack["data"] / "ledger.db", number), "the card held", 60)
        assert pizzeria(stack, "cancel", number).returncode == 0
        placing.wait(timeout=60)
    finally:
        placing.kill()


@pytest.mark.timeout(240)
def test_check_agrees_with_real_orders_then_names_the_order_whose_ledger_was_tampered(stack):
    """A delivery no driver took (refunded in full), the exercise's bad card, a pickup
    (then $5.00 of it refunded by staff), a declined card and an order cancelled after
    its hold: Temporal, the ledger and the provider agree. Then the ledger is tampered
    with."""
    for number, card in (("CHK-1", "4242424242424242"), ("CHK-2", BAD_CARD)):
        placed = pizzeria(
            stack, "order", "--order-number", number, "--card", card, "--prep-seconds", "0"
        )
        assert "Traceback" not in placed.stderr
    pickup = pizzeria(stack, "order", "--order-number", "CHK-3", "--pickup", "--prep-seconds", "0")
    assert pickup.returncode == 0, pickup.stderr
    declined = pizzeria(
        stack, "order", "--order-number", "CHK-4", "--card", DECLINED_CARD, "--prep-seconds", "0"
    )
    assert declined.returncode != 0 and "Traceback" not in declined.stderr
    cancelled_in_the_kitchen(stack, "CHK-5")
    given = pizzeria(stack, "refund", "CHK-3", "5.00", "--reason", "late", "--key", "CHK-3-5")
    assert given.returncode == 0, given.stdout + given.stderr

    done = pizzeria(stack, "check", "--json", "--closed", "--whole-account")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["violations"] == [] and report["warnings"] == []
    assert report["orders"]["total"] == 5
    assert (report["orders"]["completed"], report["orders"]["failed"]) == (2, 2)
    assert report["orders"]["cancelled"] == 1
    assert report["failures"] == {"CreditCardProcessingError": 2}
    assert all(row["conserved"] for row in report["stock"].values())
    # CHK-1 captured and refunded, CHK-3 captured and $5.00 refunded, CHK-4 declined,
    # CHK-5 voided.
    assert report["payments"] == {
        "payments": 4,
        "refunds": 2,
        "held": 0,
        "captured": 2 * AMOUNT,
        "refunded": AMOUNT + 500,
        "completed_orders_settled": 2,
        "undone_orders_settled": 3,
        "not_judged": 0,
    }

    # What was kept is what the bills captured less what went back after them: CHK-1's
    # whole bill (no driver), $5.00 of CHK-3's (staff).
    money = report["money"]
    assert (money["refunded_after_bill"], money["kept"]) == (AMOUNT + 500, AMOUNT - 500)

    shown = pizzeria(stack, "status", "CHK-1").stdout.splitlines()[0]
    assert shown == (
        "Order CHK-1: COMPLETED - DELIVERY FAILURE: no driver took it, its amount was refunded"
    )

    text = pizzeria(stack, "check")
    assert "refunded after the bill (no driver, staff) $40.00; kept $30.00" in text.stdout
    assert text.returncode == 0 and "No violations" in text.stdout
    assert "the ledger, Temporal and the payment provider agree" in text.stdout
    assert "Payment provider: 4 payments, 2 refunds; held $0.00, captured $70.00" in text.stdout

    # The bad-card order was never charged: its refund is a tombstone. Charge it anyway.
    with sqlite3.connect(stack["data"] / "ledger.db") as db:
        (run_ref,) = db.execute(
            "SELECT order_ref FROM effects WHERE order_number = 'CHK-2' LIMIT 1"
        ).fetchone()
        db.execute(
            "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
            " ingredients, tombstone, reference, created_at)"
            " VALUES (?, ?, 'CHK-2', 'process_credit_card', 3500, '{}', 0, '4242', ?)",
            (f"{run_ref}/process_credit_card", run_ref, time.time()),
        )
    broken = pizzeria(stack, "check", "--json")
    assert broken.returncode == 1
    violations = json.loads(broken.stdout)["violations"]
    assert {(v["kind"], v["order"]) for v in violations} == {
        ("late effect after tombstone", "CHK-2"),
        ("effects kept by an undone order", "CHK-2"),
        ("charged to another card", "CHK-2"),  # the bad card ends 2424, not 4242
    }
    human = pizzeria(stack, "check")
    assert human.returncode == 1
    assert "CHK-2" in human.stdout and "3 violations" in human.stdout


def test_an_order_paid_with_a_token_is_charged_to_whichever_card_the_token_is(
    ledger: Ledger,
) -> None:
    # The order page sends the provider's token, never the number: the order knows no last
    # four digits, and the charge records the card's (from the hold).
    order = placed("TOKEN")
    order.credit_card_info = CreditCardInfo(holderName="Lisa Anderson", payment_method="pm_1")
    ledger.take_stock(ref("TOKEN"), "TOKEN", RECIPE)
    ledger.charge(ref("TOKEN"), "TOKEN", AMOUNT, "4242")
    ledger.bill(ref("TOKEN"), "TOKEN", AMOUNT, "P-TOKEN")
    done = OrderConfirmation("TOKEN", "SUCCESS", "P-TOKEN", 0, AMOUNT)
    paid = OrderRecord(
        wf("TOKEN"), "r1", "COMPLETED", order=order, confirmation=done, amount=AMOUNT
    )
    assert reconcile([paid], ledger.snapshot()).violations == []
    # A number, though, is checked: the same charge under another card's order is named.
    other_card = placed("TOKEN")
    other_card.credit_card_info.number = "4000056655665556"
    numbered = OrderRecord(
        wf("TOKEN"), "r1", "COMPLETED", order=other_card, confirmation=done, amount=AMOUNT
    )
    assert kinds(reconcile([numbered], ledger.snapshot())) == [("charged to another card", "TOKEN")]


def test_check_says_it_cannot_judge_without_the_payment_provider_exit_2(stack) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = pizzeria(stack, "check", "--payments", nowhere)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: cannot read the payment provider at {nowhere}: ")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_check_without_a_ledger_or_a_server_says_it_cannot_check_exit_2(tmp_path, stack):
    missing = pizzeria(stack, "check", "--ledger", str(tmp_path / "nope.db"))
    assert missing.returncode == 2
    assert (
        missing.stderr.startswith("error: no ledger at") and len(missing.stderr.splitlines()) == 1
    )
    assert not (tmp_path / "nope.db").exists()  # the check created nothing
    nowhere = pizzeria(stack, "check", "--address", f"127.0.0.1:{free_port()}")
    assert nowhere.returncode == 2  # 1 is "violations found"
    assert nowhere.stderr.startswith("error: cannot reach Temporal")
    assert len(nowhere.stderr.splitlines()) == 1
    # With --json, a script reads the same on standard output.
    as_json = pizzeria(stack, "check", "--json", "--address", f"127.0.0.1:{free_port()}")
    assert as_json.returncode == 2
    said = json.loads(as_json.stdout)
    assert (said["ok"], said["checked"]) == (False, False)
    assert said["error"].startswith("cannot reach Temporal")


def test_a_run_whose_order_cannot_be_read_may_take_no_effect(book: Ledger) -> None:
    unreadable = OrderRecord(wf("DONE"), "r1", "COMPLETED", unreadable="not a PizzaOrder: bad JSON")
    report = reconcile([unreadable, *records()[1:]], book.snapshot())
    assert ("order unreadable", "DONE") in kinds(report)
    assert "not a PizzaOrder" in report.violations[0].detail

    # A rejected order that wrote nothing is what the workflow does with it: no violation.
    quiet = OrderRecord(wf("EARLY"), "r1", "FAILED", unreadable="not a PizzaOrder")
    assert reconcile([*records()[:4], quiet], book.snapshot()).ok


def test_an_order_the_menu_refuses_that_took_stock_is_named(book: Ledger) -> None:
    odd = placed("FAIL")
    odd.items[0].description = "Large, with anchovies"
    changed = [OrderRecord(wf("FAIL"), "r1", "FAILED", order=odd), *records()[2:]]
    report = reconcile([records()[0], *changed], book.snapshot())
    assert kinds(report) == [("order unreadable", "FAIL")]
    assert "Unknown topping 'anchovies'" in report.violations[0].detail


def test_an_order_billed_at_prices_other_than_the_menus_is_a_warning(book: Ledger) -> None:
    cheap = sample_order("CHEAP", prep_seconds=0, items=[Pizza("Largewith ham", 100)])
    book.take_stock(ref("CHEAP"), "CHEAP", menu.ingredients_for(cheap.items))
    book.charge(ref("CHEAP"), "CHEAP", 100, "4242")
    book.bill(ref("CHEAP"), "CHEAP", 100, "P-CHEAP")
    confirmation = OrderConfirmation("CHEAP", "SUCCESS", "P-CHEAP", 0, 100)
    done = OrderRecord(wf("CHEAP"), "r1", "COMPLETED", order=cheap, confirmation=confirmation)
    report = reconcile([*records(), dataclasses.replace(done, amount=100)], book.snapshot())
    assert report.ok, kinds(report)  # the three books agree with what the order said
    (warning,) = [w for w in report.warnings if w.kind == "priced off the menu"]
    assert warning.order == "CHEAP"
    assert warning.detail.startswith("its items claim $1.00; the menu prices them at $15.00")
    # The exercise's order, at the menu's prices: no such warning.
    assert "priced off the menu" not in [
        w.kind for w in reconcile(records(), book.snapshot()).warnings
    ]


async def test_a_cancelled_order_resolved_by_hand_is_read_from_its_update() -> None:
    # A cancelled order closes CANCELLED, without the failure that carries the operator's
    # note: the note is read from the resolve_manually Update its history accepted.
    def accepted(name: str, note: str) -> HistoryEvent:
        event = HistoryEvent(event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
        asked = event.workflow_execution_update_accepted_event_attributes.accepted_request.input
        asked.name = name
        asked.args.payloads.extend(DataConverter.default.payload_converter.to_payloads([note]))
        return event

    reader = SimpleNamespace(data_converter=DataConverter.default)
    found = record("CANCELLED-BY-HAND", "CANCELLED")
    events = [accepted("cancel_order", "changed my mind"), accepted("resolve_manually", "voided")]
    assert await resolved_by_update(reader, found, events) == "voided"  # type: ignore[arg-type]
    assert await resolved_by_update(reader, found, events[:1]) is None  # type: ignore[arg-type]
