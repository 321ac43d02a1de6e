"""The PostgreSQL backend's own guarantees: insert-or-nothing on the key between two
connections, transactions retried after a dropped connection or a lost answer without
taking effect twice, and one clear line when the server or the URL is wrong.

The tests that need a server run with ``--ledger-backend=postgres`` (`make suite-postgres`,
the third pass); the location checks and the import check need none and always run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pizzeria.ledger import (
    Effect,
    Ledger,
    LedgerNotFound,
    LedgerUnavailable,
    book,
    open_ledger,
    postgres,
    sql,
)
from pizzeria.ledger.sql import Claim, Tx, claim
from pizzeria.models import STEP_PROCESS_CREDIT_CARD, STEP_UPDATE_INVENTORY
from pizzeria.samples import BAD_CARD
from tests.helpers import pizzeria, run_pizzeria
from tests.helpers.postgres import PostgresServer
from tests.helpers.stack import Stack, StackOptions

RUN = "pizza-workflow-order-PG1/run-1"
server_only = pytest.mark.postgres_only


def kill_connection_of(tx: Tx, location: str) -> None:
    """End the server process behind this transaction, from another connection."""
    pid = tx.one("SELECT pg_backend_pid() AS pid")
    assert pid is not None
    with psycopg.connect(location, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid["pid"],))


def effects_of(ledger: Ledger, step: str) -> list[dict[str, Any]]:
    return [row for row in ledger.effects(RUN) if row["step"] == step]


@server_only
def test_two_connections_racing_one_key_leave_one_row(ledger: Ledger) -> None:
    """Without the run lock, the primary key alone decides: the second insert waits for
    the first transaction, then does nothing and reads the winner's row back."""
    start = threading.Barrier(2)
    results: list[Effect] = []

    def charge(amount: int, hold: float) -> None:
        def body(tx: Tx) -> Effect:
            start.wait()
            effect = claim(tx, Claim(RUN, "PG1", STEP_PROCESS_CREDIT_CARD, amount=amount))
            time.sleep(hold)  # the winner keeps its transaction open a while
            return effect

        results.append(ledger._transaction(body))

    threads = [
        threading.Thread(target=charge, args=(1000, 0.5)),
        threading.Thread(target=charge, args=(2000, 0.5)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    (row,) = effects_of(ledger, STEP_PROCESS_CREDIT_CARD)
    assert sorted(effect.applied for effect in results) == [False, True]
    assert {effect.amount for effect in results} == {row["amount"]}


@server_only
def test_a_take_whose_connection_dies_mid_way_is_retried_and_taken_once(
    ledger: Ledger, ledger_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger.stock()["cheese"]["quantity"]
    attempts: list[int] = []
    real_take = sql.take

    def take_after_a_kill(tx: Tx, ingredients: dict[str, int]) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            # The key is claimed, the stock not yet taken: the server drops us here.
            kill_connection_of(tx, ledger_location)
        real_take(tx, ingredients)

    monkeypatch.setattr(book, "take", take_after_a_kill)
    effect = ledger.take_stock(RUN, "PG1", {"cheese": 3})

    assert len(attempts) == 2
    assert effect.applied is True
    assert len(effects_of(ledger, STEP_UPDATE_INVENTORY)) == 1
    assert ledger.stock()["cheese"]["quantity"] == before - 3


@server_only
def test_a_charge_whose_commit_answer_is_lost_is_retried_and_charged_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit reached the server but its answer did not come back: the retry finds
    the row under its key instead of charging again."""
    real_attempt = ledger._attempt  # type: ignore[attr-defined]
    calls: list[int] = []

    def commit_then_lose_the_answer(body: Callable[[Tx], Any], **options: Any) -> Any:
        result = real_attempt(body, **options)
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result

    monkeypatch.setattr(ledger, "_attempt", commit_then_lose_the_answer)
    monkeypatch.setattr(postgres, "backoff", lambda attempt: 0.0)
    effect = ledger.charge(RUN, "PG1", 3500, "4242")

    assert len(calls) == 2
    assert (effect.applied, effect.amount) == (False, 3500)  # found, not written again
    assert len(effects_of(ledger, STEP_PROCESS_CREDIT_CARD)) == 1
    assert [order.charged for order in ledger.orders()] == [3500]


@server_only
@pytest.mark.parametrize(
    "failure",
    [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected],
    ids=["serialization-failure", "deadlock"],
)
def test_a_transaction_rolled_back_by_the_server_is_retried(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    real_take = sql.take
    raised: list[int] = []

    def take_once_refused(tx: Tx, ingredients: dict[str, int]) -> None:
        if not raised:
            raised.append(1)
            raise failure("could not serialize access")
        real_take(tx, ingredients)

    monkeypatch.setattr(book, "take", take_once_refused)
    monkeypatch.setattr(postgres, "backoff", lambda attempt: 0.0)
    assert ledger.take_stock(RUN, "PG1", {"ham": 2}).applied is True
    assert len(effects_of(ledger, STEP_UPDATE_INVENTORY)) == 1
    assert ledger.stock()["ham"]["quantity"] == ledger.stock()["ham"]["initial"] - 2


@server_only
def test_retries_are_bounded_and_end_in_one_line(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def always_dropped(body: Callable[[Tx], Any], **options: Any) -> Any:
        calls.append(1)
        raise psycopg.OperationalError("server closed the connection unexpectedly\n\tdetail")

    monkeypatch.setattr(ledger, "_attempt", always_dropped)
    monkeypatch.setattr(postgres, "backoff", lambda attempt: 0.0)
    with pytest.raises(LedgerUnavailable) as failed:
        ledger.charge(RUN, "PG1", 3500, "4242")
    assert len(calls) == postgres.ATTEMPTS
    assert "\n" not in str(failed.value)
    assert f"failed {postgres.ATTEMPTS} times" in str(failed.value)


@server_only
def test_a_database_that_does_not_exist_is_named(ledger_location: str) -> None:
    missing = ledger_location.rsplit("/", 1)[0] + "/no_such_ledger"
    with pytest.raises(LedgerUnavailable, match='database "no_such_ledger" does not exist'):
        open_ledger(missing)


@server_only
@pytest.mark.parametrize("given_by", ["url", "PGOPTIONS"])
def test_readers_use_the_schema_the_users_options_name_as_the_workers_do(
    ledger_location: str, given_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger in its own schema (``options=-csearch_path=...`` in the URL, or
    ``PGOPTIONS``): read-only opens (check, doctor, stock, the API) read that schema too,
    not ``public``, where a stray ledger may sit."""
    open_ledger(ledger_location).close()  # a ledger in public, untouched below
    with psycopg.connect(ledger_location, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA kitchen2")
    location = ledger_location
    if given_by == "url":
        location += "?options=-csearch_path%3Dkitchen2"
    else:
        monkeypatch.setenv("PGOPTIONS", "-c search_path=kitchen2")
    writer = open_ledger(location)
    writer.receive("delivery-1", "basil", 7)
    writer.close()
    reader = open_ledger(location, read_only=True)
    try:
        assert reader.stock()["basil"]["quantity"] == 1007
    finally:
        reader.close()
    with psycopg.connect(ledger_location) as conn:
        public = conn.execute("SELECT quantity FROM public.stock WHERE ingredient = 'basil'")
        assert public.fetchone() == (1000,)


@server_only
def test_a_user_who_may_not_create_the_tables_is_told_so_by_readers_and_writers(
    ledger_location: str,
) -> None:
    """PostgreSQL 15 lets only a database's owner create tables in ``public``: a reader
    must not promise that "a worker creates it", and a worker must say what it lacks."""
    with psycopg.connect(ledger_location, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS clerk")
        admin.execute("CREATE ROLE clerk LOGIN")
    as_clerk = ledger_location.replace("postgresql://postgres@", "postgresql://clerk@")
    try:
        with pytest.raises(LedgerNotFound) as missing:
            open_ledger(as_clerk, read_only=True)
        assert "its user clerk may not create tables in schema public" in str(missing.value)
        with pytest.raises(LedgerUnavailable) as refused:
            open_ledger(as_clerk)
        assert "permission denied for schema public" in str(refused.value)
        assert "\n" not in str(refused.value)
        nowhere = ledger_location + "?options=-csearch_path%3Dno_such_schema"
        with pytest.raises(LedgerNotFound, match="names no schema that exists"):
            open_ledger(nowhere, read_only=True)
    finally:
        with psycopg.connect(ledger_location, autocommit=True) as admin:
            admin.execute("DROP OWNED BY clerk")
            admin.execute("DROP ROLE clerk")


# -- without a server ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("postgresql://pizzeria:s3cret@127.0.0.1:1/ledger", "refused"),
        ("postgresql://127.0.0.1:notaport/ledger", "invalid"),
        ("mysql://127.0.0.1/ledger", "give a file path (SQLite) or a postgresql:// URL"),
        # libpq quotes the URL it cannot read, and a password may come as a parameter too.
        ("postgresql://pizzeria:s3cret@[::1", "postgresql://pizzeria:***@[::1"),
        ("postgresql://pizzeria:s3cret%zz@127.0.0.1/ledger", 'token: "***"'),
        ("postgresql://pizzeria:s3%63ret@127.0.0.1:1/ledger", "refused"),  # s3cret, encoded
        ("postgresql://127.0.0.1:1/ledger?sslmode=disable&password=s3cret", "password=***"),
        # Not percent-encoded: the password runs to the last "@", all of it hidden.
        ("postgresql://pz2:s3cret@ss:w/rd?x#1@127.0.0.1:1/ledger", "postgresql://pz2:***@"),
        # libpq's keyword form: refused as such, not opened as a SQLite file of that name.
        ("host=127.0.0.1 port=1 dbname=ledger user=pz password=s3cret", "keyword string"),
    ],
    ids=[
        "unreachable",
        "malformed",
        "other-database",
        "malformed-quoted",
        "bad-escape-quoted",
        "percent-encoded",
        "query-parameter",
        "not-percent-encoded",
        "keyword-string",
    ],
)
def test_a_bad_or_unreachable_location_is_one_line_without_the_password(
    location: str, expected: str
) -> None:
    with pytest.raises(LedgerUnavailable) as failed:
        open_ledger(location)
    message = str(failed.value)
    assert expected in message
    assert "\n" not in message and "s3cret" not in message and "s3%63ret" not in message
    assert "w/rd" not in message and "***ostgresql" not in message
    assert not list(Path.cwd().glob("host=*"))  # no SQLite file made of the string


@pytest.mark.parametrize("password", ["o", "x", "pizzeria"])
def test_a_short_password_is_hidden_in_the_url_and_nowhere_else(password: str) -> None:
    # Hidden wherever its letters stood, a password "o" read "c***nnecti***n refused".
    with pytest.raises(LedgerUnavailable) as failed:
        open_ledger(f"postgresql://pizzeria:{password}@127.0.0.1:1/ledger?password={password}")
    message = str(failed.value)
    assert "postgresql://pizzeria:***@127.0.0.1:1/ledger?password=***" in message
    assert "connection" in message.lower() and "refused" in message


def test_the_embedded_ledger_never_imports_psycopg(tmp_path: Path) -> None:
    """`make demo` and a first `pizzeria worker` need no PostgreSQL driver."""
    script = (
        "import sys, pizzeria.cli.app, pizzeria.demo, pizzeria.worker\n"
        "from pizzeria.ledger import open_ledger\n"
        f"open_ledger({str(tmp_path / 'ledger.db')!r}).take_stock('r/1', 'A', {{'ham': 1}})\n"
        "print(sorted(name for name in sys.modules if name.startswith('psycopg')))\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [
        ("ledger", "--ledger", "postgresql://pizzeria:s3cret@127.0.0.1:1/ledger"),
        ("worker", "--ledger", "postgresql://pizzeria:s3cret@127.0.0.1:1/ledger"),
        ("ledger", "--ledger", "postgresql://127.0.0.1:notaport/ledger"),
        ("worker", "--ledger", "sqlserver://127.0.0.1/ledger"),
    ],
    ids=["ledger-unreachable", "worker-unreachable", "malformed", "other-database"],
)
def test_the_cli_says_in_one_line_when_the_ledger_cannot_be_used(command: tuple[str, ...]) -> None:
    done = run_pizzeria(*command, timeout=60)
    # A location of a kind no ledger lives at is the user's to correct (2); one that does
    # not answer, what stood in the way (1).
    assert done.returncode == (2 if command[-1].startswith("sqlserver:") else 1), done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "ledger" in line
    assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr


# -- a worker and the CLI on a PostgreSQL ledger -------------------------------------------


@pytest.fixture(scope="module")
def stack_database(postgres_server: PostgresServer) -> Iterator[str]:
    with postgres_server.database() as location:
        yield location


@pytest.fixture(scope="module")
def stack_options(stack_database: str) -> StackOptions:
    """The module's stack runs `pizzeria worker` with its ledger on PostgreSQL."""
    return StackOptions(worker_args=("--ledger", stack_database))


@server_only
def test_a_worker_on_a_postgresql_ledger_serves_orders_that_the_cli_then_reads(
    stack: Stack, stack_database: str
) -> None:
    for number, card in (("PG-OK", None), ("PG-KO", BAD_CARD)):
        placed = pizzeria(
            stack,
            "order",
            "--json",
            "--prep-seconds",
            "0",
            "--order-number",
            number,
            *(("--card", card) if card else ()),
        )
        assert placed.stderr == "", placed.stderr
    shown = pizzeria(stack, "ledger", "--json", "--ledger", stack_database)
    assert shown.returncode == 0, shown.stderr
    rows = {row["order_number"]: row for row in json.loads(shown.stdout)["orders"]}
    assert (rows["PG-OK"]["charged"], rows["PG-OK"]["billed"]) == (3500, 3500)
    assert rows["PG-KO"]["charged"] == rows["PG-KO"]["refunded"]
    assert rows["PG-KO"]["stock_held"] == {}
    # The data folder's SQLite file was never used: the worker wrote to PostgreSQL only.
    assert not (stack["data"] / "ledger.db").exists()

    checked = pizzeria(stack, "check", "--closed", "--json", "--ledger", stack_database)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is True and report["violations"] == []


@server_only
def test_check_on_an_empty_database_says_there_is_no_ledger_and_creates_none(
    ledger_location: str,
) -> None:
    done = run_pizzeria("check", "--ledger", ledger_location, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no ledger at postgresql://")
    with psycopg.connect(ledger_location) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
