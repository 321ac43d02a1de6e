"""The embedded backend: one SQLite file, for workers on one machine.

WAL mode lets readers go on while one writer writes; ``BEGIN IMMEDIATE`` takes the file's
write lock at the start of every write, so the writes of several worker processes
serialise whole (which also serialises the steps of one run: no finer lock is needed).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pizzeria.ledger.book import Ledger
from pizzeria.ledger.records import LedgerNotFound, LedgerUnavailable
from pizzeria.ledger.sql import Tx
from pizzeria.menu import INITIAL_STOCK
from pizzeria.private import UnsafeSecret, refuse_foreign_database

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
# A reader (pizzeria check, pizzeria stock) says at once that another process holds the
# file, instead of waiting as long as a worker would for its turn to write.
READ_BUSY_TIMEOUT_SECONDS = 2.0


class SqliteLedger(Ledger):
    """One file; one connection shared by the process's threads, one at a time."""

    WITHOUT_TABLES = (
        "; this file holds none of its tables (a copy of a ledger made with `cp` while it "
        'was in use may lack them: copy one with `sqlite3 LEDGER ".backup COPY"`)'
    )

    def __init__(
        self, path: str | Path, *, initial_stock: int = INITIAL_STOCK, read_only: bool = False
    ) -> None:
        self.path = Path(path)
        super().__init__(str(self.path), read_only=read_only)
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
        except sqlite3.Error as error:
            raise LedgerUnavailable(f"cannot open the ledger at {self.path}: {error}") from None
        try:
            self._prepare(initial_stock)
        except sqlite3.DatabaseError as error:  # not a database, or a damaged one
            self._db.close()
            raise LedgerUnavailable(f"cannot use the ledger at {self.path}: {error}") from None
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise LedgerUnavailable(
                f"cannot use the ledger at {self.path}: it is a folder; give the ledger's "
                "file (ledger.db in the data folder)"
            )
        try:
            refuse_foreign_database(self.path, "ledger file")
        except UnsafeSecret as planted:
            raise LedgerUnavailable(str(planted)) from None
        if self.read_only:
            if not self.path.is_file():
                raise LedgerNotFound(f"no ledger at {self.path}: a worker creates it")
            # mode=ro: never creates the file, never writes to it.
            target, uri = self.path.resolve().as_uri() + "?mode=ro", True
        else:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            target, uri = str(self.path), False
        busy_timeout = READ_BUSY_TIMEOUT_SECONDS if self.read_only else BUSY_TIMEOUT_SECONDS
        # Workers that create a new file at the same moment race to switch it to WAL; the
        # loser may be told "locked" at once, without SQLite's busy wait: it tries again.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                return self._open(target, uri, busy_timeout)
            except sqlite3.OperationalError as error:
                if not locked(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _open(self, target: str, uri: bool, busy_timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(
            target, uri=uri, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            if not self.read_only and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            if not self.read_only:
                db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(
        self, body: Callable[[Tx], T], *, lock: str | None = None, writes: bool = True
    ) -> T:
        with self._lock:
            try:
                return self._attempt(body, writes)
            except sqlite3.OperationalError as error:
                if str(error).startswith(("no such table", "no such column")):
                    raise LedgerUnavailable(
                        f"the ledger at {self.path} is damaged ({error}): restore it from a backup"
                    ) from None
                if not locked(error):
                    raise
                raise LedgerUnavailable(
                    f"the ledger at {self.path} is locked by another process ({error}):"
                    " try again once it is released"
                ) from None

    def _attempt(self, body: Callable[[Tx], T], writes: bool) -> T:
        self._db.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        try:
            result = body(Tx(self._db.execute))
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    def _table_names(self, tx: Tx) -> set[str]:
        return {
            row["name"] for row in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")
        }

    def _column_names(self, tx: Tx, table: str) -> set[str]:
        return {row["name"] for row in tx.all("SELECT name FROM pragma_table_info(?)", (table,))}


def locked(error: sqlite3.OperationalError) -> bool:
    """SQLite's busy or locked answer, once its busy timeout ran out."""
    return "locked" in str(error) or "busy" in str(error)
