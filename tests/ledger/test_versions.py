"""Schema versions and read-only opens, on the backend chosen by ``--ledger-backend``.

A ledger records its schema version; an older one is upgraded when opened for writing, a
newer one is refused in one line. A read-only open (the checker's) creates, seeds and
upgrades nothing, and refuses to write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pizzeria.ledger import (
    Ledger,
    LedgerNotFound,
    LedgerReadOnly,
    LedgerUnavailable,
    SchemaDamaged,
    SchemaTooNew,
    SchemaTooOld,
    latest_version,
    open_ledger,
    schema,
)
from pizzeria.ledger.sql import Tx
from tests.helpers import run_pizzeria

RUN = "pizza-workflow-order-V1/run-1"
# The first release created version 1's tables with no version recorded, and its
# timestamps as REAL (SQLite's 8-byte float, as DOUBLE PRECISION is there).
FIRST_RELEASE_SCHEMA = schema.MIGRATIONS[0].replace("DOUBLE PRECISION", "REAL")


def execute(ledger: Ledger, sql: str, *params: Any) -> None:
    """Change the ledger behind its methods' back, as an old or a newer release would."""
    ledger._transaction(lambda tx: tx.run(sql, params))


def versions_recorded(ledger: Ledger) -> list[int]:
    def read(tx: Tx) -> list[int]:
        rows = tx.all("SELECT version FROM schema_version ORDER BY version")
        return [row["version"] for row in rows]

    return ledger._transaction(read, writes=False)


def tables(ledger: Ledger) -> set[str]:
    return ledger._transaction(ledger._table_names, writes=False)


@pytest.fixture
def written(ledger_location: str) -> Iterator[str]:
    """A location holding a ledger with one charge, closed again."""
    ledger = open_ledger(ledger_location, initial_stock=7)
    ledger.charge(RUN, "V1", 3500, "4242")
    ledger.close()
    yield ledger_location


def test_a_new_ledger_records_the_current_version(ledger: Ledger) -> None:
    assert ledger.schema_version() == latest_version()
    assert versions_recorded(ledger) == list(range(1, latest_version() + 1))


def test_a_ledger_from_before_versions_counts_as_version_1_and_is_upgraded_with_its_rows(
    written: str,
) -> None:
    ledger = open_ledger(written)
    execute(ledger, "DROP TABLE schema_version")
    ledger.close()

    with pytest.raises(SchemaTooOld, match="schema version 1, older than"):
        open_ledger(written, read_only=True)  # a reader upgrades nothing

    reopened = open_ledger(written)
    try:
        assert versions_recorded(reopened) == list(range(1, latest_version() + 1))
        assert [order.charged for order in reopened.orders()] == [3500]
        assert reopened.stock()["cheese"] == {"initial": 7, "quantity": 7}
    finally:
        reopened.close()


def test_a_first_release_sqlite_file_is_upgraded_with_its_rows_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE_SCHEMA)
        db.execute("INSERT INTO stock VALUES ('cheese', 10, 4)")
        db.execute(
            "INSERT INTO effects (idempotency_key, order_ref, order_number, step, ingredients,"
            " created_at) VALUES (?, ?, 'V1', 'update_inventory', '{\"cheese\": 6}', 1.5)",
            (f"{RUN}/update_inventory", RUN),
        )
    db.close()
    ledger = open_ledger(path)
    try:
        assert ledger.schema_version() == latest_version()
        assert ledger.stock()["cheese"] == {"initial": 10, "quantity": 4}
        (order,) = ledger.orders()
        assert order.stock_held == {"cheese": 6}
        assert ledger.put_back_stock(RUN, "V1").ingredients == {"cheese": 6}
        assert ledger.stock()["cheese"]["quantity"] == 10
    finally:
        ledger.close()


def test_a_ledger_newer_than_the_code_is_refused_in_one_line(written: str) -> None:
    ledger = open_ledger(written)
    execute(ledger, "INSERT INTO schema_version VALUES (?, 0)", latest_version() + 1)
    ledger.close()
    for read_only in (False, True):
        with pytest.raises(SchemaTooNew) as refused:
            open_ledger(written, read_only=read_only)
        message = str(refused.value)
        assert f"schema version {latest_version() + 1}" in message
        assert "upgrade pizzeria" in message and "\n" not in message


def test_a_table_dropped_by_hand_is_one_line_at_once_and_refused_at_the_next_open(
    written: str,
) -> None:
    """A ledger damaged under a running worker: its next statement on the table fails in
    one line (the step is retried, not crashed with a traceback); every open after, the
    worker's and the readers', is refused saying what is missing; `check` cannot check."""
    ledger = open_ledger(written)
    execute(ledger, "DROP TABLE deliveries")
    with pytest.raises(LedgerUnavailable) as failed:
        ledger.receive("delivery-1", "basil", 7)
    assert "deliveries" in str(failed.value) and "\n" not in str(failed.value)
    ledger.close()
    for read_only in (False, True):
        with pytest.raises(SchemaDamaged, match="has no deliveries table: it was damaged"):
            open_ledger(written, read_only=read_only)
    for command, code in (("check", 2), ("worker", 1), ("ledger", 1)):
        done = run_pizzeria(command, "--ledger", written, timeout=60)
        assert done.returncode == code, (command, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert "has no deliveries table" in line, (command, line)


def test_the_cli_refuses_a_newer_ledger_in_one_line_and_exit_1(written: str) -> None:
    ledger = open_ledger(written)
    execute(ledger, "INSERT INTO schema_version VALUES (?, 0)", latest_version() + 1)
    ledger.close()
    for command in ("ledger", "worker"):
        done = run_pizzeria(command, "--ledger", written, timeout=60)
        assert done.returncode == 1
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: the ledger at ") and "upgrade pizzeria" in line


def test_opening_runs_the_missing_migrations_in_order(
    written: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = latest_version() + 1
    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        [
            *schema.MIGRATIONS,
            "ALTER TABLE effects ADD COLUMN note TEXT NOT NULL DEFAULT '';"
            " UPDATE effects SET note = 'migrated'",
        ],
    )
    with pytest.raises(SchemaTooOld, match="start a worker on it once"):
        open_ledger(written, read_only=True)

    upgraded = open_ledger(written)
    try:
        assert upgraded.schema_version() == later
        assert versions_recorded(upgraded) == list(range(1, later + 1))
        (row,) = upgraded.effects()
        assert (row["note"], row["amount"]) == ("migrated", 3500)
    finally:
        upgraded.close()
    # Opening again runs nothing twice (the ALTER would fail).
    open_ledger(written).close()


def test_workers_opening_a_new_ledger_at_once_create_it_once(ledger_location: str) -> None:
    opened: list[Ledger] = []
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_ledger(ledger_location, initial_stock=9))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failures == []
        assert len(opened) == 6
        assert versions_recorded(opened[0]) == list(range(1, latest_version() + 1))
        assert opened[0].stock()["dough"] == {"initial": 9, "quantity": 9}
    finally:
        for ledger in opened:
            ledger.close()


# -- read-only -----------------------------------------------------------------------------


def test_a_read_only_open_of_a_missing_ledger_says_so_and_creates_nothing(
    ledger_location: str,
) -> None:
    with pytest.raises(LedgerNotFound, match="no ledger at"):
        open_ledger(ledger_location, read_only=True)
    if not ledger_location.startswith("postgresql://"):
        assert not Path(ledger_location).exists()
    # Still nothing there: a writable open now creates a fresh ledger, seeded as asked.
    fresh = open_ledger(ledger_location, initial_stock=3)
    try:
        assert fresh.effects() == []
        assert fresh.stock()["ham"] == {"initial": 3, "quantity": 3}
    finally:
        fresh.close()


def test_a_read_only_ledger_reads_everything_and_writes_nothing(written: str) -> None:
    writer = open_ledger(written)
    reader = open_ledger(written, read_only=True)
    try:
        writer.take_stock(RUN, "V1", {"ham": 2})
        assert reader.snapshot() == writer.snapshot()
        assert reader.orders() == writer.orders()
        with pytest.raises(LedgerReadOnly, match="read-only"):
            reader.refund(RUN, "V1")
        with pytest.raises(LedgerReadOnly):
            reader.take_stock("another/run", "V2", {"ham": 1})
        # Below the ledger's own guard, the database refuses the write too.
        with pytest.raises(Exception, match=r"(?i)read-only|readonly"):
            execute(reader, "UPDATE stock SET quantity = 0")
        assert reader.snapshot() == writer.snapshot()
        assert writer.stock()["ham"]["quantity"] == 5
    finally:
        reader.close()
        writer.close()


def test_a_file_without_the_ledger_tables_says_so_and_how_to_copy_a_ledger(
    tmp_path: Path,
) -> None:
    other = tmp_path / "copied.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LedgerNotFound, match="this file holds none of its tables") as missing:
        open_ledger(str(other), read_only=True)
    assert ".backup" in str(missing.value) and "\n" not in str(missing.value)
