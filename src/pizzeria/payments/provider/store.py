"""The provider's state: one SQLite file, surviving restarts.

Every object (PaymentIntent, charge, refund, PaymentMethod) is a row holding its JSON as
the API shows it; ``seq`` orders them (lists are newest first). The answers stored for
idempotency keys sit beside them, written in the same transaction as the effect they
answer, so a crash can never leave an effect without its stored answer. No card number
is ever written: objects hold the last four digits and a fingerprint, idempotency rows a
hash of the parameters.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pizzeria.private import make_private_dir, refuse_foreign_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    parent TEXT,
    created REAL NOT NULL,
    expires_at REAL,
    body TEXT NOT NULL,
    internal TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS objects_by_kind ON objects (kind, seq);
CREATE INDEX IF NOT EXISTS objects_by_parent ON objects (parent, kind, seq);
CREATE INDEX IF NOT EXISTS holds_by_expiry ON objects (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created);
"""


@dataclass
class Row:
    seq: int
    id: str
    kind: str
    parent: str | None
    created: float
    expires_at: float | None
    body: dict[str, Any]
    internal: dict[str, Any]


@dataclass(frozen=True)
class StoredAnswer:
    endpoint: str
    fingerprint: str
    status: int
    body: dict[str, Any]


_COLUMNS = "seq, id, kind, parent, created, expires_at, body, internal"


def _row(values: tuple[Any, ...]) -> Row:
    seq, object_id, kind, parent, created, expires_at, body, internal = values
    return Row(
        seq, object_id, kind, parent, created, expires_at, json.loads(body), json.loads(internal)
    )


class Store:
    """The SQLite file. One connection, used under `lock` by one request at a time."""

    def __init__(self, path: Path) -> None:
        make_private_dir(path.parent)
        refuse_foreign_database(path, "payment provider's data file")
        self.path = path
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL, as the ledger: a commit survives the process being killed (the
        # log is written before COMMIT returns), and is flushed to disk at checkpoints, not
        # at every commit (FULL cost about a millisecond of every call).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: the effect and its stored answer."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def insert(
        self,
        kind: str,
        body: dict[str, Any],
        *,
        created: float,
        parent: str | None = None,
        expires_at: float | None = None,
        internal: dict[str, Any] | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO objects (id, kind, parent, created, expires_at, body, internal)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                body["id"],
                kind,
                parent,
                created,
                expires_at,
                json.dumps(body),
                json.dumps(internal or {}),
            ),
        )

    def update(self, body: dict[str, Any], *, expires_at: float | None = None) -> None:
        """Replace an object's JSON; ``expires_at`` None ends a hold's clock."""
        self._db.execute(
            "UPDATE objects SET body = ?, expires_at = ? WHERE id = ?",
            (json.dumps(body), expires_at, body["id"]),
        )

    def get(self, kind: str, object_id: str) -> Row | None:
        found = self._db.execute(
            f"SELECT {_COLUMNS} FROM objects WHERE id = ? AND kind = ?", (object_id, kind)
        ).fetchone()
        return _row(found) if found else None

    def page(
        self,
        kind: str,
        *,
        limit: int,
        before_seq: int | None = None,
        parent: str | None = None,
    ) -> tuple[list[Row], bool]:
        """Up to ``limit`` objects (of ``parent``, if given), newest first, older than
        ``before_seq``; and whether there are more."""
        where = [("parent = ?", [parent])] if parent is not None else []
        return self._newest(kind, where, limit, before_seq)

    def search(
        self,
        kind: str,
        fields: list[tuple[str, str]],
        *,
        limit: int,
        before_seq: int | None = None,
    ) -> tuple[list[Row], bool]:
        """Objects whose JSON has each ``(path, value)`` (``$.metadata."k"``), newest first."""
        where = [("json_extract(body, ?) = ?", [path, value]) for path, value in fields]
        return self._newest(kind, where, limit, before_seq)

    def _newest(
        self, kind: str, where: list[tuple[str, list[Any]]], limit: int, before_seq: int | None
    ) -> tuple[list[Row], bool]:
        """Up to ``limit`` objects of ``kind`` meeting each ``(condition, values)``, newest
        first, older than ``before_seq``; and whether there are more."""
        if before_seq is not None:
            where = [*where, ("seq < ?", [before_seq])]
        sql = f"SELECT {_COLUMNS} FROM objects WHERE kind = ?"
        args: list[Any] = [kind]
        for condition, values in where:
            sql += f" AND {condition}"
            args += values
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)
        rows = [_row(values) for values in self._db.execute(sql, args).fetchall()]
        return rows[:limit], len(rows) > limit

    def seq_of(self, kind: str, object_id: str) -> int | None:
        found = self._db.execute(
            "SELECT seq FROM objects WHERE id = ? AND kind = ?", (object_id, kind)
        ).fetchone()
        return int(found[0]) if found else None

    def due_holds(self, now: float) -> list[Row]:
        return [
            _row(values)
            for values in self._db.execute(
                f"SELECT {_COLUMNS} FROM objects WHERE expires_at IS NOT NULL"
                " AND expires_at <= ? ORDER BY expires_at",
                (now,),
            ).fetchall()
        ]

    def stored_answer(self, key: str, not_before: float) -> StoredAnswer | None:
        found = self._db.execute(
            "SELECT endpoint, fingerprint, status, body FROM idempotency"
            " WHERE key = ? AND created >= ?",
            (key, not_before),
        ).fetchone()
        if found is None:
            return None
        return StoredAnswer(found[0], found[1], int(found[2]), json.loads(found[3]))

    def remember(
        self, key: str, answer: StoredAnswer, *, created: float, forget_before: float
    ) -> None:
        """Store the answer under ``key``, and forget keys older than ``forget_before``."""
        self._db.execute("DELETE FROM idempotency WHERE created < ?", (forget_before,))
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency (key, endpoint, fingerprint, status, body,"
            " created) VALUES (?, ?, ?, ?, ?, ?)",
            (
                key,
                answer.endpoint,
                answer.fingerprint,
                answer.status,
                json.dumps(answer.body),
                created,
            ),
        )
