"""Restocking: each delivery a keyed ledger row, counted once, on the backend chosen by
``--ledger-backend``; `pizzeria stock` and `pizzeria stock add` as a user runs them.

Conservation with deliveries: initial + received = in stock + consumed + held.
"""

from __future__ import annotations

import json
import threading

import pytest

from pizzeria.ledger import DeliveryKeyReused, Ledger, LedgerError, LedgerReadOnly, open_ledger
from pizzeria.ops.check.reconcile import reconcile
from pizzeria.ops.check.records import OrderRecord
from tests.helpers import run_pizzeria

RUN_DONE = "pizza-workflow-order-S1/run-1"
RUN_OPEN = "pizza-workflow-order-S2/run-1"


def received(ledger: Ledger) -> dict[str, int]:
    return dict(ledger.snapshot().received())


def test_a_delivery_adds_to_stock_once_per_key(ledger: Ledger) -> None:
    before = ledger.stock()["dough"]["quantity"]
    first = ledger.receive("note-1", "dough", 40)
    assert (first.applied, first.portions) == (True, 40)
    again = ledger.receive("note-1", "dough", 40)  # a retry after a lost answer
    assert again.applied is False and again.created_at == first.created_at
    assert ledger.stock()["dough"] == {"initial": before, "quantity": before + 40}
    assert received(ledger) == {"dough": 40}
    ledger.receive("note-2", "dough", 5)
    assert received(ledger) == {"dough": 45}


def test_a_key_that_names_another_delivery_is_refused_and_adds_nothing(ledger: Ledger) -> None:
    ledger.receive("note-1", "dough", 40)
    for ingredient, portions in (("dough", 41), ("cheese", 40)):
        with pytest.raises(DeliveryKeyReused, match="already used for 40 dough"):
            ledger.receive("note-1", ingredient, portions)
    assert received(ledger) == {"dough": 40}
    assert ledger.stock()["cheese"]["quantity"] == ledger.stock()["cheese"]["initial"]


def test_an_ingredient_the_ledger_does_not_stock_leaves_no_delivery(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="stocks no 'anchovies'"):
        ledger.receive("note-1", "anchovies", 3)
    assert ledger.snapshot().deliveries == []


def test_a_delivery_raced_by_two_workers_is_counted_once(ledger_location: str) -> None:
    ledgers = [open_ledger(ledger_location) for _ in range(4)]
    start = threading.Barrier(len(ledgers))
    applied: list[bool] = []

    def deliver(ledger: Ledger) -> None:
        start.wait()
        applied.append(ledger.receive("truck-7", "ham", 12).applied)

    threads = [threading.Thread(target=deliver, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert sorted(applied) == [False, False, False, True]
        assert received(ledgers[0]) == {"ham": 12}
        stock = ledgers[0].stock()["ham"]
        assert stock["quantity"] == stock["initial"] + 12
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_read_only_ledger_receives_nothing(ledger_location: str) -> None:
    open_ledger(ledger_location).close()
    reader = open_ledger(ledger_location, read_only=True)
    try:
        with pytest.raises(LedgerReadOnly):
            reader.receive("note-1", "dough", 1)
    finally:
        reader.close()


def test_stock_adds_up_with_deliveries_and_the_check_counts_them(ledger: Ledger) -> None:
    ledger.receive("note-1", "cheese", 30)
    ledger.take_stock(RUN_DONE, "S1", {"cheese": 4})
    ledger.charge(RUN_DONE, "S1", 1200, "4242")
    ledger.bill(RUN_DONE, "S1", 1200, "P1")
    ledger.take_stock(RUN_OPEN, "S2", {"cheese": 2})
    flow = ledger.snapshot().stock_flow()["cheese"]
    assert (flow["received"], flow["consumed"], flow["held"]) == (30, 4, 2)
    assert flow["initial"] + 30 == flow["in_stock"] + 4 + 2 and flow["conserved"] is True

    # The checker counts deliveries row by row: it agrees, and it notices one edited.
    records = [OrderRecord("pizza-workflow-order-S2", "run-1", "RUNNING")]
    stock = reconcile(records, ledger.snapshot()).stock["cheese"]
    assert stock["received"] == 30 and stock["conserved"] is True
    ledger._transaction(lambda tx: tx.run("UPDATE deliveries SET portions = 31"))
    report = reconcile(records, ledger.snapshot())
    assert [(v.kind, v.order) for v in report.violations if v.order == "cheese"] == [
        ("stock not conserved", "cheese")
    ]
    assert "received 31" in report.violations[-1].detail


# -- the commands --------------------------------------------------------------------------------


def test_stock_add_counts_a_delivery_once_per_key_and_stock_shows_it(ledger_location: str) -> None:
    added = run_pizzeria("stock", "add", "Tomato Sauce", "25", "--ledger", ledger_location)
    assert added.returncode == 0, added.stderr
    assert "Received 25 tomato sauce (delivery key delivery-" in added.stdout
    assert "--key delivery-" in added.stdout  # how to retry without counting it twice
    # A file named that was not there, or a database without the ledger: said, and made.
    assert added.stderr.strip() == f"No ledger was at {ledger_location}: made a new one"

    keyed = ("stock", "add", "basil", "7", "--key", "note-9", "--json", "--ledger", ledger_location)
    first, second = run_pizzeria(*keyed), run_pizzeria(*keyed)
    assert json.loads(first.stdout)["counted"] is True
    assert json.loads(second.stdout)["counted"] is False

    shown = run_pizzeria("stock", "--json", "--ledger", ledger_location)
    assert shown.returncode == 0, shown.stderr
    stock = json.loads(shown.stdout)["stock"]
    assert stock["tomato sauce"]["received"] == 25 and stock["basil"]["received"] == 7
    assert stock["basil"]["in_stock"] == stock["basil"]["initial"] + 7
    assert all(row["conserved"] for row in stock.values())
    table = run_pizzeria("stock", "--ledger", ledger_location)
    assert "received" in table.stdout and "consumed" in table.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("anchovies", "3"), "'anchovies' is not one of"),
        (("dough", "0"), "0 is not in the range"),
        (("dough", "-4"), "-4 is not in the range"),
        (("dough", "many"), "'many' is not a valid integer"),
        (("dough", "3", "--key", " "), "--key must be 1 to 255 visible ASCII characters"),
        (("dough", "3", "--key", "x" * 300), "--key must be 1 to 255 visible ASCII characters"),
        (("dough", "3", "--key", "note n°5"), "--key must be 1 to 255 visible ASCII characters"),
    ],
)
def test_a_bad_delivery_is_one_line_and_exit_2(
    ledger_location: str, arguments: tuple[str, ...], message: str
) -> None:
    done = run_pizzeria("stock", "add", *arguments, "--ledger", ledger_location)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and message in line


def test_a_key_reused_for_another_delivery_is_one_line_and_exit_2(ledger_location: str) -> None:
    first = run_pizzeria("stock", "add", "ham", "5", "--key", "k", "--ledger", ledger_location)
    assert first.returncode == 0, first.stderr
    done = run_pizzeria("stock", "add", "ham", "6", "--key", "k", "--ledger", ledger_location)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "delivery key 'k' was already used for 5 ham" in line


def test_stock_of_a_missing_ledger_is_one_line_and_creates_nothing(ledger_location: str) -> None:
    done = run_pizzeria("stock", "--ledger", ledger_location)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: no ledger at")
    with pytest.raises(LedgerError):
        open_ledger(ledger_location, read_only=True)
