"""Idempotency keys of ``POST /orders``: the body and the order each key was first used for.

The IETF Idempotency-Key draft: a key is bound to its first request. A retry with the
same key and the same body gets the first answer again (the same order number, which the
API chose, and the same token), even when the first answer was lost; the same key with
another body is refused with 422. The table outlives the API process, beside the ledger:

- a SQLite ledger (a file): a SQLite file of its own next to it, ``<ledger>-api-keys.db``,
  so that placing an order never waits for the ledger's write lock;
- a PostgreSQL ledger: a table ``api_idempotency_keys`` in the same database, which API
  processes on several machines then share.

Only a SHA-256 of each key is kept, never the key (with the body, it gets the order's
token back). A key is kept until the token it answered with expires; after that the same
key is a new request.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pizzeria.api.opening import OpenedWhenAsked
from pizzeria.ledger import is_postgres_location
from pizzeria.private import make_private_dir

T = TypeVar("T")
TABLE = "api_idempotency_keys"
CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key_sha256 TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    order_number TEXT NOT NULL,
    expires BIGINT NOT NULL,
    run_id TEXT
)"""
CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE} (expires)"
BUSY_SECONDS = 5.0


class KeyTableUnavailable(Exception):
    """The table cannot be read or written now (one line, no password in it)."""


@dataclass(frozen=True)
class KeyUse:
    """What a key was first used for: its body, its order, its token's expiry, its run."""

    body_sha256: str
    order_number: str
    expires: int
    run_id: str | None = None


class Execute(Protocol):
    def __call__(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class Backend(Protocol):
    def transaction(self, body: Callable[[Execute], T]) -> T: ...

    def close(self) -> None: ...


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class KeyTable:
    """The keys, in the database beside the ledger at ``ledger_location``; opened when
    first used (the API starts, and answers what needs no key, while it cannot be)."""

    def __init__(self, ledger_location: str) -> None:
        self.location = ledger_location
        #: A SQLite file on this machine (else a PostgreSQL table): a transaction takes
        #: tens of microseconds, less than handing it to a thread and back, so the API
        #: calls it at once (a server's table on a thread).
        self.in_a_file = not is_postgres_location(ledger_location)
        self._backend = OpenedWhenAsked(self._open_backend)

    def _open_backend(self) -> Backend:
        if self.in_a_file:
            return SqliteKeys(beside(self.location))
        return PostgresKeys(self.location)

    def claim(self, key: str, use: KeyUse, now: float) -> KeyUse:
        """Bind ``key`` to ``use`` unless it is bound already; what it is bound to."""

        def body(execute: Execute) -> KeyUse:
            execute(f"DELETE FROM {TABLE} WHERE expires <= ?", (int(now),))
            execute(
                f"INSERT INTO {TABLE} (key_sha256, body_sha256, order_number, expires)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key_sha256) DO NOTHING",
                (key_hash(key), use.body_sha256, use.order_number, use.expires),
            )
            ((body_sha256, order_number, expires, run_id),) = execute(
                f"SELECT body_sha256, order_number, expires, run_id FROM {TABLE}"
                " WHERE key_sha256 = ?",
                (key_hash(key),),
            )
            return KeyUse(body_sha256, order_number, int(expires), run_id)

        return self._backend.get().transaction(body)

    def record_run(self, key: str, run_id: str) -> None:
        """The run the key's order started (a retry then needs no lookup)."""
        self._backend.get().transaction(
            lambda execute: execute(
                f"UPDATE {TABLE} SET run_id = ? WHERE key_sha256 = ? AND run_id IS NULL",
                (run_id, key_hash(key)),
            )
        )

    def close(self) -> None:
        self._backend.close()


def beside(ledger_file: str) -> Path:
    """``.pizzeria/ledger.db`` -> ``.pizzeria/ledger-api-keys.db``."""
    path = Path(ledger_file)
    return path.with_name(f"{path.stem}-api-keys.db")


class SqliteKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            make_private_dir(path.parent)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # As the ledger's: a commit survives the process (a crash, a kill) without
            # waiting for the disk; the last ones may be lost with the machine's power.
            # FULL made every POST /orders wait for two flushes to disk (1 ms each here).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(CREATE)
            self._db.execute(CREATE_INDEX)
        except (OSError, sqlite3.Error) as error:
            raise KeyTableUnavailable(f"cannot use the key table {path}: {error}") from None
        self._lock = threading.Lock()

    def transaction(self, body: Callable[[Execute], T]) -> T:
        def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            return list(self._db.execute(sql, params).fetchall())

        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = body(execute)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as error:
                raise KeyTableUnavailable(f"the key table {self.path}: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresKeys:
    def __init__(self, url: str) -> None:
        # Imported here so that the embedded default never loads psycopg.
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        from pizzeria.ledger.postgres import CONNECT_TIMEOUT_SECONDS, one_line, without_password

        self.where = without_password(url)
        self._said: Callable[[BaseException], str] = lambda error: one_line(error, url)
        self.errors: tuple[type[Exception], ...] = (psycopg.Error, PoolTimeout)
        options = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS}
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            kwargs=options,
            check=ConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT_SECONDS,
            name="pizzeria-api-keys",
            open=True,
        )

        def create(execute: Execute) -> None:
            # Two API processes starting at once: the lock makes the second wait, then
            # find the table (CREATE ... IF NOT EXISTS alone may race in PostgreSQL).
            execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (TABLE,))
            execute(CREATE)
            execute(CREATE_INDEX)

        try:
            self.transaction(create)
        except BaseException:
            self._pool.close()
            raise

    def transaction(self, body: Callable[[Execute], T]) -> T:
        try:
            with self._pool.connection() as conn, conn.transaction():

                def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                    cursor = conn.execute(sql.replace("?", "%s"), params)
                    return list(cursor.fetchall()) if cursor.description else []

                return body(execute)
        except self.errors as error:
            raise KeyTableUnavailable(
                f"the key table at {self.where}: {self._said(error)}"
            ) from None

    def close(self) -> None:
        self._pool.close()
