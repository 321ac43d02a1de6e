"""The checker is trusted only as far as these tests go: real books, damaged on purpose.

Real orders (a delivery no driver took, refunded in full; a bad card; a declined card; a
pickup; one cancelled after it took stock, one cancelled after its card was held) and a
delivery of stock go through a dev server, a `pizzeria worker` and a payment provider of
the module's own, once. Each test then damages a COPY of the ledger, or of the provider's
records, in one way (the hand edits of an independent review, and more) and runs
`pizzeria check` on it as a user would: it must exit 1 naming the order (or the ingredient)
and the rule, and leave the ledger byte for byte as it found it. The undamaged copies pass.
A check that cannot be made (a locked ledger, a codec key that is not the orders', a
provider that does not answer) exits 2 in one line; a second stack, whose orders all
failed or were cancelled after writing to the ledger, shows that a run the check must
judge and cannot decrypt stops it even when no completed order does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pizzeria.ops.processes import free_port
from pizzeria.payments import process
from pizzeria.payments.stripe_gateway import URL_VARIABLE
from pizzeria.samples import BAD_CARD
from pizzeria.temporal.devserver import stop_process
from tests.helpers import PIZZERIA, pizzeria, wait_until
from tests.helpers.stack import Stack, StackOptions, open_stack

pytestmark = pytest.mark.timeout(240)

Mutation = Callable[[sqlite3.Connection], None]
DECLINED_CARD = "4000000000000002"  # the provider's generic decline


# -- the real ledger, built once -------------------------------------------------------------


def place(stack: Mapping[str, Any], number: str, *flags: str) -> dict[str, Any]:
    flags = ("--json", "--prep-seconds", "0", "--order-number", number, *flags)
    done = pizzeria(stack, "order", *flags)
    assert "Traceback" not in done.stderr, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


def wrote(ledger: Path, number: str, step: str) -> bool:
    with sqlite3.connect(f"{ledger.resolve().as_uri()}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT 1 FROM effects WHERE order_number = ? AND step = ?", (number, step)
        ).fetchone()
    db.close()
    return row is not None


def cancel_once_written(
    stack: Mapping[str, Any], number: str, step: str, *flags: str
) -> dict[str, Any]:
    """An order cancelled once ``step`` wrote its row: what it did is undone."""
    placing = subprocess.Popen(
        [PIZZERIA, "order", "--json", "--order-number", number, *flags],
        env=stack["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ledger = stack["data"] / "ledger.db"
        wait_until(lambda: wrote(ledger, number, step), f"{number}'s {step}", 60)
        cancelled = pizzeria(stack, "cancel", number)
        assert cancelled.returncode == 0, cancelled.stderr
        out, _ = placing.communicate(timeout=60)
    finally:
        placing.kill()
    outcome: dict[str, Any] = json.loads(out)
    return outcome


def cancel_after_it_took_stock(stack: Mapping[str, Any], number: str) -> dict[str, Any]:
    """An order cancelled while its charge fails: its stock was taken, then put back."""
    assert pizzeria(stack, "faults", "set", "process_credit_card=fail").returncode == 0
    try:
        return cancel_once_written(stack, number, "update_inventory", "--prep-seconds", "0")
    finally:
        pizzeria(stack, "faults", "clear")


def cancel_after_its_hold(stack: Mapping[str, Any], number: str) -> dict[str, Any]:
    """An order cancelled in the kitchen, after its card was held: the hold is voided."""
    return cancel_once_written(stack, number, "process_credit_card", "--prep-seconds", "60")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[process.ProviderProcess]:
    """The module's own payment provider: its records hold these orders' money alone."""
    with process.running(tmp_path_factory.mktemp("payments") / "payments.db") as running:
        yield running


@pytest.fixture(scope="module")
def stack_options(provider: process.ProviderProcess) -> StackOptions:
    # No driver ever takes a delivery: MUT-GOOD is billed, then refunded in full.
    return StackOptions(env={URL_VARIABLE: provider.url, "PIZZERIA_DRIVER_PROBABILITY": "0"})


def backup(live_file: Path, copy: Path) -> Path:
    """A consistent copy of a SQLite file another process is using."""
    live, target = sqlite3.connect(live_file), sqlite3.connect(copy)
    live.backup(target)
    live.close()
    target.close()
    return copy


@pytest.fixture(scope="module")
def books(
    stack: dict[str, Any],
    provider: process.ProviderProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """Consistent copies of a real ledger and of the provider's records: one order of each
    kind, and a delivery of stock."""
    outcomes = {
        "MUT-GOOD": place(stack, "MUT-GOOD"),
        "MUT-BAD": place(stack, "MUT-BAD", "--card", BAD_CARD),
        "MUT-DECLINED": place(stack, "MUT-DECLINED", "--card", DECLINED_CARD),
        "MUT-PICKUP": place(stack, "MUT-PICKUP", "--pickup"),
        "MUT-CANCEL": cancel_after_it_took_stock(stack, "MUT-CANCEL"),
        "MUT-RELEASED": cancel_after_its_hold(stack, "MUT-RELEASED"),
    }
    assert {number: outcome["status"] for number, outcome in outcomes.items()} == {
        "MUT-GOOD": "COMPLETED",
        "MUT-BAD": "FAILED",
        "MUT-DECLINED": "FAILED",
        "MUT-PICKUP": "COMPLETED",
        "MUT-CANCEL": "CANCELLED",
        "MUT-RELEASED": "CANCELLED",
    }
    # Staff give $5.00 of the pickup back.
    given = pizzeria(stack, "refund", "MUT-PICKUP", "5.00", "--reason", "cold", "--key", "MUT-5")
    assert given.returncode == 0, given.stdout + given.stderr
    delivered = pizzeria(stack, "stock", "add", "dough", "10", "--key", "MUT-DELIVERY")
    assert delivered.returncode == 0, delivered.stderr
    folder = tmp_path_factory.mktemp("pristine")
    ledger = backup(stack["data"] / "ledger.db", folder / "ledger.db")
    payments = backup(provider.log_file.with_suffix(".db"), folder / "payments.db")
    return ledger, payments


@pytest.fixture(scope="module")
def pristine(books: tuple[Path, Path]) -> Path:
    """The copy of the real ledger (the provider's live records are as consistent)."""
    return books[0]


@pytest.fixture
def damaged(pristine: Path, tmp_path: Path) -> Callable[[Mutation], Path]:
    """``damaged(mutation)``: a fresh copy of the real ledger, changed by ``mutation``."""

    def copy_with(mutation: Mutation) -> Path:
        path = tmp_path / "ledger.db"
        shutil.copy(pristine, path)
        db = sqlite3.connect(path)
        with db:
            mutation(db)
        db.close()
        return path

    return copy_with


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cannot_check_said(done: subprocess.CompletedProcess[str]) -> str:
    """What `check --json` puts on standard output when it cannot check: no verdict, and
    the error its one line on standard error says."""
    said = json.loads(done.stdout)
    assert (said["ok"], said["checked"]) == (False, False), said
    return str(said["error"])


def check(
    stack: Mapping[str, Any], ledger: Path, *flags: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`pizzeria check --json` on ``ledger``, which it must leave byte for byte."""
    before = fingerprint(ledger)
    done = subprocess.run(
        [PIZZERIA, "check", "--json", "--ledger", str(ledger), *flags],
        env={**stack["env"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert fingerprint(ledger) == before, "the check changed the ledger"
    return done


def found(done: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    return {(violation["kind"], violation["order"]) for violation in report["violations"]}


# -- ways to damage a ledger -------------------------------------------------------------------


def row_of(db: sqlite3.Connection, number: str, step: str) -> dict[str, Any]:
    db.row_factory = sqlite3.Row
    row = db.execute(
        "SELECT * FROM effects WHERE order_number = ? AND step = ?", (number, step)
    ).fetchone()
    assert row is not None, f"{number} has no {step} row"
    return dict(row)


def restock(db: sqlite3.Connection, portions: dict[str, int]) -> None:
    """Move stock so that conservation still adds up after an edit (as a careful forger)."""
    for name, count in portions.items():
        db.execute("UPDATE stock SET quantity = quantity + ? WHERE ingredient = ?", (count, name))


def insert(db: sqlite3.Connection, key: str, ref: str, number: str, step: str, **row: Any) -> None:
    db.execute(
        "INSERT INTO effects (idempotency_key, order_ref, order_number, step, amount,"
        " ingredients, tombstone, reference, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key,
            ref,
            number,
            step,
            row.get("amount", 0),
            json.dumps(row.get("ingredients", {})),
            row.get("tombstone", 0),
            row.get("reference", ""),
            time.time(),
        ),
    )


def stock_take_deleted_and_put_back(db: sqlite3.Connection) -> None:
    taken = row_of(db, "MUT-GOOD", "update_inventory")
    db.execute("DELETE FROM effects WHERE idempotency_key = ?", (taken["idempotency_key"],))
    restock(db, json.loads(taken["ingredients"]))


def one_dough_instead(db: sqlite3.Connection, number: str, step: str) -> dict[str, int]:
    """The row's ingredients made one portion of dough; what they were."""
    row = row_of(db, number, step)
    db.execute(
        "UPDATE effects SET ingredients = ? WHERE idempotency_key = ?",
        (json.dumps({"dough": 1}), row["idempotency_key"]),
    )
    was: dict[str, int] = json.loads(row["ingredients"])
    return was


def stock_take_made_one_dough(db: sqlite3.Connection) -> None:
    recipe = one_dough_instead(db, "MUT-GOOD", "update_inventory")
    restock(db, {name: count - (name == "dough") for name, count in recipe.items()})


def tombstone_of_an_unknown_run(db: sqlite3.Connection) -> None:
    ref = f"pizza-workflow-order-MUT-GHOST/{uuid.uuid4()}"
    insert(db, f"{ref}/revert_inventory", ref, "MUT-GHOST", "revert_inventory", tombstone=1)


def charge_doubled_under_another_key(db: sqlite3.Connection) -> None:
    charge = row_of(db, "MUT-GOOD", "process_credit_card")
    insert(
        db,
        charge["idempotency_key"] + "/again",
        charge["order_ref"],
        "MUT-GOOD",
        "process_credit_card",
        amount=charge["amount"],
        reference=charge["reference"],
    )


def charge_of_an_unknown_run(db: sqlite3.Connection) -> None:
    ref = f"pizza-workflow-order-MUT-NOBODY/{uuid.uuid4()}"
    insert(db, f"{ref}/process_credit_card", ref, "MUT-NOBODY", "process_credit_card", amount=3500)


def put_back_edited(db: sqlite3.Connection) -> None:
    returned = one_dough_instead(db, "MUT-CANCEL", "revert_inventory")
    restock(db, {name: (name == "dough") - count for name, count in returned.items()})


def refund_beside_its_tombstone(db: sqlite3.Connection) -> None:
    """MUT-BAD's refund found nothing to refund (a tombstone); a refund row beside it, under
    another key (the primary key refuses a second row under its own)."""
    tombstone = row_of(db, "MUT-BAD", "refund_customer")
    assert tombstone["tombstone"] == 1
    ref = tombstone["order_ref"]
    insert(db, f"{ref}/refund_customer/again", ref, "MUT-BAD", "refund_customer")


def sql(name: str, statement: str) -> Mutation:
    """A damage that is one SQL statement, named for the test ids."""

    def mutate(db: sqlite3.Connection) -> None:
        db.execute(statement)

    mutate.__name__ = name
    return mutate


MUTATIONS: list[tuple[Mutation, tuple[str, str]]] = [
    # The review's four hand edits, each of which an earlier check passed.
    (stock_take_deleted_and_put_back, ("stock taken differs from the order", "MUT-GOOD")),
    (stock_take_made_one_dough, ("stock taken differs from the order", "MUT-GOOD")),
    (tombstone_of_an_unknown_run, ("unknown run", "MUT-GHOST")),
    (
        sql(
            "charge_to_another_card",
            "UPDATE effects SET reference = '1881' WHERE order_number = 'MUT-GOOD'"
            " AND step = 'process_credit_card'",
        ),
        ("charged to another card", "MUT-GOOD"),
    ),
    # And more.
    (charge_doubled_under_another_key, ("double effect", "MUT-GOOD")),
    # The bad card was never charged: its refund is a tombstone. Make it a refund.
    (
        sql(
            "refund_above_its_charge",
            "UPDATE effects SET tombstone = 0, amount = 500 WHERE order_number = 'MUT-BAD'"
            " AND step = 'refund_customer'",
        ),
        ("refund above charge", "MUT-BAD"),
    ),
    (
        sql(
            "stock_row_edited",
            "UPDATE stock SET quantity = quantity - 3 WHERE ingredient = 'cheese'",
        ),
        ("stock not conserved", "cheese"),
    ),
    (
        sql(
            "initial_stock_edited",
            "UPDATE stock SET initial = initial + 50 WHERE ingredient = 'onions'",
        ),
        ("stock not conserved", "onions"),
    ),
    (
        sql(
            "ingredient_row_deleted",
            "DELETE FROM stock WHERE ingredient = 'basil'",
        ),
        ("ingredient missing from stock", "basil"),
    ),
    (
        sql(
            "bill_of_a_completed_order_removed",
            "DELETE FROM effects WHERE order_number = 'MUT-PICKUP' AND step = 'send_bill'",
        ),
        ("bill differs from confirmation", "MUT-PICKUP"),
    ),
    (
        sql(
            "charge_and_bill_lowered_together",
            "UPDATE effects SET amount = 3000 WHERE order_number = 'MUT-GOOD'"
            " AND step IN ('process_credit_card', 'send_bill')",
        ),
        ("bill differs from the order", "MUT-GOOD"),
    ),
    (
        sql(
            "confirmation_number_changed",
            "UPDATE effects SET reference = 'P00000000' WHERE order_number = 'MUT-PICKUP'"
            " AND step = 'send_bill'",
        ),
        ("bill differs from confirmation", "MUT-PICKUP"),
    ),
    (
        sql(
            "charge_lowered_below_its_bill",
            "UPDATE effects SET amount = amount - 500 WHERE order_number = 'MUT-GOOD'"
            " AND step = 'process_credit_card'",
        ),
        ("charge differs from bill", "MUT-GOOD"),
    ),
    (refund_beside_its_tombstone, ("double effect", "MUT-BAD")),
    (charge_of_an_unknown_run, ("unknown run", "MUT-NOBODY")),
    (put_back_edited, ("put back differs from stock taken", "MUT-CANCEL")),
    (
        sql(
            "delivery_edited",
            "UPDATE deliveries SET portions = 20 WHERE delivery_key = 'MUT-DELIVERY'",
        ),
        ("stock not conserved", "dough"),
    ),
    (
        sql(
            "delivery_deleted",
            "DELETE FROM deliveries WHERE delivery_key = 'MUT-DELIVERY'",
        ),
        ("stock not conserved", "dough"),
    ),
    # The ledger's side of the money at the provider.
    (
        sql(
            "hold_names_a_payment_the_provider_lacks",
            "UPDATE effects SET payment_id = 'pi_forged' WHERE order_number = 'MUT-PICKUP'"
            " AND step = 'process_credit_card'",
        ),
        ("payment missing at the provider", "MUT-PICKUP"),
    ),
    (
        sql(
            "bill_names_no_payment",
            "UPDATE effects SET payment_id = '' WHERE order_number = 'MUT-PICKUP'"
            " AND step = 'send_bill'",
        ),
        ("captured without a bill", "MUT-PICKUP"),
    ),
    (
        sql(
            "undelivered_refund_deleted",
            "DELETE FROM effects WHERE order_number = 'MUT-GOOD'"
            " AND step = 'refund_undelivered_order'",
        ),
        ("undelivered order not refunded in full", "MUT-GOOD"),
    ),
    (
        sql(
            "undelivered_refund_lowered",
            "UPDATE effects SET amount = 1000 WHERE order_number = 'MUT-GOOD'"
            " AND step = 'refund_undelivered_order'",
        ),
        ("refunds differ from the ledger", "MUT-GOOD"),
    ),
    (
        sql(
            "staff_refund_raised",
            "UPDATE effects SET amount = 700 WHERE order_number = 'MUT-PICKUP'"
            " AND step LIKE 'staff_refund/%'",
        ),
        ("refunds differ from the ledger", "MUT-PICKUP"),
    ),
    (
        sql(
            "staff_refund_beyond_the_capture",
            "UPDATE effects SET amount = 9999 WHERE order_number = 'MUT-PICKUP'"
            " AND step LIKE 'staff_refund/%'",
        ),
        ("refund above capture", "MUT-PICKUP"),
    ),
    (
        sql(
            "staff_refund_forgotten",
            "DELETE FROM effects WHERE order_number = 'MUT-PICKUP' AND step LIKE 'staff_refund/%'",
        ),
        ("refunds differ from the ledger", "MUT-PICKUP"),
    ),
    (
        sql(  # `pizzeria ledger` then lists the bill under MUT-PICKUP, which never had it
            "bill_moved_to_another_order_number",
            "UPDATE effects SET order_number = 'MUT-PICKUP' WHERE order_number = 'MUT-GOOD'"
            " AND step = 'send_bill'",
        ),
        ("row of another order", "MUT-GOOD"),
    ),
    (
        sql(  # the ledger would say the money went back; the provider still has it captured
            "bill_said_refunded",
            "UPDATE effects SET money_state = 'refunded' WHERE order_number = 'MUT-PICKUP'"
            " AND step = 'send_bill'",
        ),
        ("money state differs from its step", "MUT-PICKUP"),
    ),
    (
        sql(  # `ledger` would list the cancelled order's hold as still held, forever
            "release_said_held",
            "UPDATE effects SET money_state = 'held' WHERE order_number = 'MUT-RELEASED'"
            " AND step = 'refund_customer'",
        ),
        ("money state differs from its step", "MUT-RELEASED"),
    ),
    (
        sql(
            "charge_moved_to_another_key",
            "UPDATE effects SET idempotency_key = idempotency_key || '-2'"
            " WHERE order_number = 'MUT-PICKUP' AND step = 'process_credit_card'",
        ),
        ("row under a foreign key", "MUT-PICKUP"),
    ),
]


# -- ways to damage the provider's records -----------------------------------------------------


def intent_of(db: sqlite3.Connection, number: str) -> dict[str, Any]:
    """The order's one PaymentIntent, as the provider stores it (its JSON)."""
    (body,) = db.execute(
        "SELECT body FROM objects WHERE kind = 'payment_intent'"
        " AND json_extract(body, '$.metadata.order_number') = ?",
        (number,),
    ).fetchone()
    intent: dict[str, Any] = json.loads(body)
    return intent


def body_of(db: sqlite3.Connection, object_id: str) -> dict[str, Any]:
    (body,) = db.execute("SELECT body FROM objects WHERE id = ?", (object_id,)).fetchone()
    found: dict[str, Any] = json.loads(body)
    return found


def save(db: sqlite3.Connection, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        db.execute("UPDATE objects SET body = ? WHERE id = ?", (json.dumps(body), body["id"]))


def add(db: sqlite3.Connection, kind: str, body: dict[str, Any], parent: str | None) -> None:
    db.execute(
        "INSERT INTO objects (id, kind, parent, created, body) VALUES (?, ?, ?, ?, ?)",
        (body["id"], kind, parent, time.time() - 60, json.dumps(body)),
    )


def captured_as(db: sqlite3.Connection, number: str, **changes: Any) -> None:
    """The order's intent and its charge changed as one (what Stripe would show)."""
    intent = intent_of(db, number)
    charge = body_of(db, intent["latest_charge"])
    intent.update({k: v for k, v in changes.items() if k in intent})
    charge.update({k: v for k, v in changes.items() if k in charge})
    save(db, intent, charge)


def charged_to_another_card(db: sqlite3.Connection) -> None:
    """The pickup's charge made to a card ending 1111: not the order's 4242."""
    charge = body_of(db, intent_of(db, "MUT-PICKUP")["latest_charge"])
    charge["payment_method_details"]["card"]["last4"] = "1111"
    save(db, charge)


def charged_in_another_currency(db: sqlite3.Connection) -> None:
    captured_as(db, "MUT-PICKUP", currency="eur")


def payment_dropped(db: sqlite3.Connection) -> None:
    intent = intent_of(db, "MUT-PICKUP")
    db.execute("DELETE FROM objects WHERE id IN (?, ?)", (intent["id"], intent["latest_charge"]))


def captured_amount_lowered(db: sqlite3.Connection) -> None:
    captured_as(db, "MUT-PICKUP", amount_received=3000, amount_captured=3000)


def charge_capture_lowered(db: sqlite3.Connection) -> None:
    """Only the charge's record of the capture changed: the intent still says $15.00."""
    charge = body_of(db, intent_of(db, "MUT-PICKUP")["latest_charge"])
    charge["amount_captured"] = 100
    save(db, charge)


def hold_left_uncaptured(db: sqlite3.Connection) -> None:
    """The completed pickup's hold never captured: still requires_capture."""
    intent = intent_of(db, "MUT-PICKUP")
    captured_as(
        db,
        "MUT-PICKUP",
        status="requires_capture",
        amount_received=0,
        amount_capturable=intent["amount"],
        amount_captured=0,
        captured=False,
    )


def completed_orders_payment_voided(db: sqlite3.Connection) -> None:
    captured_as(
        db,
        "MUT-PICKUP",
        status="canceled",
        cancellation_reason="requested_by_customer",
        amount_received=0,
        amount_captured=0,
        captured=False,
    )


def released_hold_captured(db: sqlite3.Connection) -> None:
    """The cancelled order's voided hold shows captured instead."""
    intent = intent_of(db, "MUT-RELEASED")
    captured_as(
        db,
        "MUT-RELEASED",
        status="succeeded",
        cancellation_reason=None,
        amount_received=intent["amount"],
        amount_captured=intent["amount"],
        captured=True,
    )


def hold_amount_changed(db: sqlite3.Connection) -> None:
    captured_as(db, "MUT-RELEASED", amount=3000)


def copy_of_intent(
    db: sqlite3.Connection, number: str, metadata: dict[str, str] | None = None, **changes: Any
) -> None:
    """Another PaymentIntent like the order's (its own id), with other metadata or state."""
    intent = intent_of(db, number)
    intent.update(id=f"pi_{uuid.uuid4().hex[:24]}", latest_charge=None, **changes)
    intent["metadata"] = {**intent["metadata"], **(metadata or {})}
    add(db, "payment_intent", intent, None)


def orphan_intent_of_a_known_order(db: sqlite3.Connection) -> None:
    """A hold naming order MUT-PICKUP, under a run Temporal never had."""
    intent = intent_of(db, "MUT-PICKUP")
    run_id = str(uuid.uuid4())
    workflow_id = intent["metadata"]["workflow_id"]
    copy_of_intent(
        db,
        "MUT-PICKUP",
        {"run_id": run_id, "order_ref": f"{workflow_id}/{run_id}"},
        status="requires_capture",
        amount_received=0,
        amount_capturable=intent["amount"],
    )


def unrecorded_payment_of_a_run(db: sqlite3.Connection) -> None:
    """A second payment naming MUT-PICKUP's run (voided), which no ledger row names."""
    copy_of_intent(
        db, "MUT-PICKUP", status="canceled", amount_received=0, cancellation_reason="abandoned"
    )


def payment_moved_to_another_run(db: sqlite3.Connection) -> None:
    """MUT-PICKUP's payment says it belongs to MUT-GOOD's run."""
    pickup, good = intent_of(db, "MUT-PICKUP"), intent_of(db, "MUT-GOOD")
    pickup["metadata"] = dict(good["metadata"])
    save(db, pickup)


def refund_of(db: sqlite3.Connection, number: str) -> dict[str, Any]:
    """The order's one refund (MUT-GOOD's in full, MUT-PICKUP's by staff)."""
    intent = intent_of(db, number)
    (body,) = db.execute(
        "SELECT body FROM objects WHERE kind = 'refund' AND parent = ?", (intent["id"],)
    ).fetchone()
    refund: dict[str, Any] = json.loads(body)
    return refund


def staff_refund_dropped(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM objects WHERE id = ?", (refund_of(db, "MUT-PICKUP")["id"],))


def extra_refund(db: sqlite3.Connection) -> None:
    """Another refund of $5.00 on the pickup, which nobody recorded."""
    intent = intent_of(db, "MUT-PICKUP")
    charge = body_of(db, intent["latest_charge"])
    refund = {
        "id": f"re_{uuid.uuid4().hex[:24]}",
        "object": "refund",
        "amount": 500,
        "currency": "usd",
        "charge": charge["id"],
        "payment_intent": intent["id"],
        "created": int(time.time()) - 60,
        "metadata": {},
        "reason": "requested_by_customer",
        "status": "succeeded",
    }
    charge["amount_refunded"] += 500
    save(db, charge)
    add(db, "refund", refund, intent["id"])


def undelivered_refund_dropped(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM objects WHERE id = ?", (refund_of(db, "MUT-GOOD")["id"],))


def undelivered_refund_raised(db: sqlite3.Connection) -> None:
    refund = refund_of(db, "MUT-GOOD")
    refund["amount"] = 9999
    save(db, refund)


def refund_of_no_payment(db: sqlite3.Connection) -> None:
    refund = refund_of(db, "MUT-GOOD")
    refund.update(id=f"re_{uuid.uuid4().hex[:24]}", payment_intent="pi_nowhere")
    add(db, "refund", refund, "pi_nowhere")


PROVIDER_MUTATIONS: list[tuple[Mutation, tuple[str, str]]] = [
    (payment_dropped, ("payment missing at the provider", "MUT-PICKUP")),
    (captured_amount_lowered, ("capture differs from the bill", "MUT-PICKUP")),
    (charge_capture_lowered, ("charge differs from its payment", "MUT-PICKUP")),
    (charged_to_another_card, ("payment on another card", "MUT-PICKUP")),
    (charged_in_another_currency, ("payment in another currency", "MUT-PICKUP")),
    (hold_left_uncaptured, ("orphan hold", "MUT-PICKUP")),
    (completed_orders_payment_voided, ("released by a completed order", "MUT-PICKUP")),
    (released_hold_captured, ("captured by an undone order", "MUT-RELEASED")),
    (released_hold_captured, ("release differs from the ledger", "MUT-RELEASED")),
    (hold_amount_changed, ("hold differs from the order", "MUT-RELEASED")),
    (orphan_intent_of_a_known_order, ("payment of no known run", "MUT-PICKUP")),
    (unrecorded_payment_of_a_run, ("payment the ledger does not record", "MUT-PICKUP")),
    (payment_moved_to_another_run, ("payment of another run", "MUT-PICKUP")),
    (extra_refund, ("refunds differ from the ledger", "MUT-PICKUP")),
    (undelivered_refund_dropped, ("refunds differ from the ledger", "MUT-GOOD")),
    (staff_refund_dropped, ("refunds differ from the ledger", "MUT-PICKUP")),
    (undelivered_refund_raised, ("refund above capture", "MUT-GOOD")),
    (refund_of_no_payment, ("refund of no known payment", "-")),
]


@pytest.fixture
def provider_damaged(
    books: tuple[Path, Path], tmp_path: Path
) -> Callable[[Mutation], contextlib.AbstractContextManager[str]]:
    """``with provider_damaged(mutation) as url:`` a provider serving a fresh copy of the
    real records, changed by ``mutation``."""

    @contextlib.contextmanager
    def serving(mutation: Mutation) -> Iterator[str]:
        path = tmp_path / "payments.db"
        shutil.copy(books[1], path)
        db = sqlite3.connect(path)
        with db:
            mutation(db)
        db.close()
        with process.running(path) as running:
            yield running.url

    return serving


# -- the tests ---------------------------------------------------------------------------------


def test_the_undamaged_copies_pass_and_are_left_as_they_were(
    stack, damaged, provider_damaged
) -> None:
    with provider_damaged(lambda db: None) as url:
        done = check(stack, damaged(lambda db: None), "--payments", url, "--whole-account")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["orders"]["completed"] == 2
    assert (report["orders"]["failed"], report["orders"]["cancelled"]) == (2, 2)
    assert report["stock"]["dough"]["received"] == 10
    assert all(row["conserved"] for row in report["stock"].values())
    # MUT-GOOD, MUT-PICKUP captured; MUT-GOOD refunded (no driver), MUT-PICKUP $5.00 by
    # staff; MUT-RELEASED's hold voided; MUT-DECLINED's card said no. The bad card and
    # MUT-CANCEL reached no card.
    assert report["payments"] == {
        "payments": 4,
        "refunds": 2,
        "held": 0,
        "captured": 7000,
        "refunded": 4000,
        "completed_orders_settled": 2,
        "undone_orders_settled": 4,
        "not_judged": 0,
    }
    assert report["warnings"] == []


@pytest.mark.parametrize(
    ("mutation", "expected"), MUTATIONS, ids=[mutation.__name__ for mutation, _ in MUTATIONS]
)
def test_each_damage_is_named_by_order_and_rule(
    stack, damaged, mutation: Mutation, expected: tuple[str, str]
) -> None:
    assert expected in found(check(stack, damaged(mutation)))


def test_a_charge_doubled_under_another_key_is_a_double_effect_and_a_foreign_key(
    stack, damaged
) -> None:
    violations = found(check(stack, damaged(charge_doubled_under_another_key)))
    assert {
        ("double effect", "MUT-GOOD"),
        ("row under a foreign key", "MUT-GOOD"),
        ("charge differs from the order", "MUT-GOOD"),
    } <= violations


@pytest.mark.parametrize(
    ("mutation", "expected"),
    PROVIDER_MUTATIONS,
    ids=[f"{mutation.__name__}-{kind}" for mutation, (kind, _) in PROVIDER_MUTATIONS],
)
def test_each_damage_to_the_providers_records_is_named_by_order_and_rule(
    stack, damaged, provider_damaged, mutation: Mutation, expected: tuple[str, str]
) -> None:
    with provider_damaged(mutation) as url:
        assert expected in found(check(stack, damaged(lambda db: None), "--payments", url))


def test_a_payment_of_an_order_neither_book_knows_is_judged_with_the_whole_account(
    stack, damaged, provider_damaged
) -> None:
    """Another deployment's payment (or a run Temporal no longer keeps) is a warning: the
    account may be shared. With --whole-account the account is ours alone: a violation."""

    def stranger(db: sqlite3.Connection) -> None:
        ref = f"pizza-workflow-order-ELSEWHERE/{uuid.uuid4()}"
        copy_of_intent(db, "MUT-PICKUP", {"order_ref": ref, "order_number": "ELSEWHERE"})

    ledger = damaged(lambda db: None)
    with provider_damaged(stranger) as url:
        lenient = check(stack, ledger, "--payments", url)
        strict = check(stack, ledger, "--payments", url, "--whole-account")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    report = json.loads(lenient.stdout)
    assert report["payments"]["not_judged"] == 1
    (warning,) = report["warnings"]
    assert warning["kind"] == "not judged" and "--whole-account" in warning["detail"]
    assert found(strict) == {("payment of no known run", "ELSEWHERE")}


def test_a_staff_refund_whose_answer_was_lost_is_a_warning_made_or_not(
    stack, damaged, provider_damaged
) -> None:
    """A staff refund claimed in the ledger, its provider's answer never recorded (the
    row pending): whether or not the provider made it, the books may differ by it. A
    warning says to finish it; anything beyond it is still a violation."""

    def pending(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE effects SET reference = '', payment_id = '', money_state = ''"
            " WHERE order_number = 'MUT-PICKUP' AND step LIKE 'staff_refund/%'"
        )

    ledger = damaged(pending)
    with provider_damaged(lambda db: None) as made:
        done = check(stack, ledger, "--payments", made)
    with provider_damaged(staff_refund_dropped) as not_made:
        not_done = check(stack, ledger, "--payments", not_made)
    with provider_damaged(extra_refund) as beyond:
        too_much = check(stack, ledger, "--payments", beyond)
    for outcome in (done, not_done):
        assert outcome.returncode == 0, outcome.stdout + outcome.stderr
        (warning,) = json.loads(outcome.stdout)["warnings"]
        assert (warning["kind"], warning["order"]) == ("staff refund pending", "MUT-PICKUP")
        assert "$5.00" in warning["detail"] and "same key" in warning["detail"]
    assert ("refunds differ from the ledger", "MUT-PICKUP") in found(too_much)


def test_a_provider_that_does_not_answer_cannot_check_exit_2(stack, damaged) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = check(stack, damaged(lambda db: None), "--payments", url)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: cannot read the payment provider at {url}: ")
    assert cannot_check_said(done) == line.removeprefix("error: ")
    bad = check(stack, damaged(lambda db: None), "--payments", "127.0.0.1:8091")
    assert bad.returncode == 2
    (line,) = bad.stderr.splitlines()
    assert line == (
        "error: the payment provider's URL must be http(s)://HOST[:PORT], not '127.0.0.1:8091'"
    )


def test_a_codec_key_that_is_not_the_orders_cannot_check_exit_2(stack, damaged) -> None:
    other_key = base64.b64encode(bytes(32)).decode()
    done = check(stack, damaged(lambda db: None), PIZZERIA_CODEC_KEY=other_key)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: cannot decrypt order MUT-") and "key" in line
    assert cannot_check_said(done) == line.removeprefix("error: ")


def test_a_locked_ledger_cannot_be_checked_in_a_few_seconds_exit_2(stack, damaged) -> None:
    path = damaged(lambda db: None)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA locking_mode=EXCLUSIVE')\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "db.execute('UPDATE stock SET quantity = quantity')\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        done = check(stack, path)
        took = time.monotonic() - started
    finally:
        stop_process(holder, timeout=5)  # type: ignore[arg-type]
        if holder.stdout is not None:
            holder.stdout.close()
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: the ledger at") and "locked" in line
    assert took < 20


# -- runs that failed or were cancelled, and that the check cannot decrypt -------------------


@pytest.fixture(scope="module")
def undone_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, dict[str, str]]]:
    """A stack of its own holding only undone orders, each of which wrote to the ledger (it
    took stock and put it back): a failed one and a cancelled one. No completed order: a
    completed run the check cannot decrypt stops it anyway. Their run ids by order number."""
    with open_stack(tmp_path_factory.mktemp("undone")) as stack:
        outcomes = {
            "UNDONE-BAD": place(stack, "UNDONE-BAD", "--card", BAD_CARD),
            "UNDONE-CANCEL": cancel_after_it_took_stock(stack, "UNDONE-CANCEL"),
        }
        statuses = {number: outcome["status"] for number, outcome in outcomes.items()}
        assert statuses == {"UNDONE-BAD": "FAILED", "UNDONE-CANCEL": "CANCELLED"}
        yield stack, {number: outcome["run_id"] for number, outcome in outcomes.items()}


def ledger_copy(stack: Stack, path: Path, delete: str = "", *params: str) -> Path:
    """A copy of the stack's ledger at ``path``, without the effects ``delete`` selects."""
    live, target = sqlite3.connect(stack["data"] / "ledger.db"), sqlite3.connect(path)
    live.backup(target)
    live.close()
    with target:
        if delete:
            target.execute(f"DELETE FROM effects WHERE {delete}", params)
    target.close()
    return path


def test_an_undone_run_that_wrote_and_cannot_be_decrypted_cannot_be_checked_exit_2(
    undone_stack: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    """A failed or a cancelled run that wrote to the ledger is judged on what it was asked:
    without its key (another key, or none) the check says it cannot judge it, naming the
    run, instead of a verdict; a key file naming the orders' key id with other bytes is
    refused before anything is read."""
    stack, runs = undone_stack
    assert check(stack, ledger_copy(stack, tmp_path / "whole.db")).returncode == 0
    other_key = {"PIZZERIA_CODEC_KEY": base64.b64encode(bytes(32)).decode()}
    # A key file naming the orders' key id with other bytes (a rotation typed by hand).
    key_id = (stack["data"] / "codec.key").read_text().partition(":")[0]
    same_id = tmp_path / "same-id.key"
    same_id.write_text(f"{key_id}:{base64.b64encode(bytes(32)).decode()}\n")
    same_id.chmod(0o600)
    other_key_under_its_id = {"PIZZERIA_CODEC_KEY_FILE": str(same_id)}
    no_key = {"PIZZERIA_CODEC_KEY_FILE": str(tmp_path / "no-such.key")}
    for number, run_id in runs.items():
        # The other order's rows gone: this run is the only one that wrote.
        alone = ledger_copy(stack, tmp_path / f"{number}.db", "order_number != ?", number)
        refused = check(stack, alone, **other_key_under_its_id)  # before any order is read
        assert refused.returncode == 2, refused.stdout + refused.stderr
        (line,) = refused.stderr.splitlines()
        assert f"the key id {key_id} is not this key's" in line, line
        for env in (other_key, no_key):
            done = check(stack, alone, **env)
            assert done.returncode == 2, done.stdout + done.stderr
            assert cannot_check_said(done) == done.stderr.strip().removeprefix("error: ")
            (line,) = done.stderr.splitlines()
            assert line.startswith(f"error: cannot decrypt order {number} (run {run_id}): ")
            assert "key" in line


def test_undone_runs_with_tombstones_only_are_judged_without_their_key(
    undone_stack: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    """A run that left only tombstones holds nothing: its status is enough to judge it."""
    stack, _ = undone_stack
    tombstones = ledger_copy(stack, tmp_path / "tombstones.db", "tombstone = 0")
    done = check(stack, tombstones, PIZZERIA_CODEC_KEY=base64.b64encode(bytes(32)).decode())
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["orders"]["failed"], report["orders"]["cancelled"]) == (1, 1)
    assert report["money"]["undone_orders_settled"] == 2


@pytest.fixture(autouse=True)
def no_stray_ledger(tmp_path: Path) -> Iterator[None]:
    """The check creates no ledger where there was none (a missing one is exit 2)."""
    yield
    assert not (tmp_path / "nowhere.db").exists()


def test_a_missing_ledger_is_exit_2_and_stays_missing(stack, tmp_path: Path) -> None:
    done = pizzeria(stack, "check", "--ledger", str(tmp_path / "nowhere.db"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: no ledger at")


def test_an_order_no_driver_took_says_it_was_refunded_where_users_look(stack, books):
    # MUT-GOOD: billed, no driver, refunded in full. `order` (its number completed: the
    # run is shown as it went) and `orders` say the money went back, not only `status`.
    again = pizzeria(stack, "order", "--order-number", "MUT-GOOD")
    assert again.returncode == 0, again.stderr
    assert "  delivery:      DELIVERY FAILURE" in again.stdout
    assert "  refunded:      $35.00 (no driver took it)" in again.stdout
    listed = json.loads(pizzeria(stack, "orders", "--json", "--limit", "100").stdout)["orders"]
    (row,) = [r for r in listed if r["order_number"] == "MUT-GOOD"]
    assert row["compensation"] == "none; refunded in full: no driver took it"
