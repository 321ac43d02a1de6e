"""Schema versions: ordered plain-SQL migrations, applied when a ledger is opened for writing.

Version *n* is reached by running ``MIGRATIONS[n - 1]``. Each applied version is recorded
in ``schema_version`` with the time it was applied. Ledgers created before versions were
recorded (the first release's SQLite files) hold version 1's tables and no
``schema_version`` table: they count as version 1 and gain the table on their next open.

The SQL is written once for both backends: ``DOUBLE PRECISION`` is a REAL column in SQLite
and an 8-byte float in PostgreSQL (whose ``REAL`` would round timestamps to minutes).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from pizzeria.ledger.records import SchemaDamaged, SchemaTooNew, SchemaTooOld
from pizzeria.ledger.sql import Tx

MIGRATIONS: list[str] = [
    # 1: stock per ingredient, and one row per effect under its idempotency key.
    """
    CREATE TABLE IF NOT EXISTS stock (
        ingredient TEXT PRIMARY KEY,
        initial INTEGER NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity >= 0)
    );
    CREATE TABLE IF NOT EXISTS effects (
        idempotency_key TEXT PRIMARY KEY,
        order_ref TEXT NOT NULL,
        order_number TEXT NOT NULL,
        step TEXT NOT NULL,
        amount INTEGER NOT NULL DEFAULT 0,
        ingredients TEXT NOT NULL DEFAULT '{}',
        tombstone INTEGER NOT NULL DEFAULT 0,
        reference TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS effects_by_order ON effects (order_ref);
    """,
    # 2: deliveries received into stock, each once under its delivery key, so that
    # conservation reads initial + received = in stock + consumed + held.
    """
    CREATE TABLE IF NOT EXISTS deliveries (
        delivery_key TEXT PRIMARY KEY,
        ingredient TEXT NOT NULL,
        portions INTEGER NOT NULL CHECK (portions > 0),
        created_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 3: money moves through a payment provider: each money row names the provider's
    # payment (hold, capture, void, refund) and where the money is after it. Rows written
    # before keep '' in both.
    """
    ALTER TABLE effects ADD COLUMN payment_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE effects ADD COLUMN money_state TEXT NOT NULL DEFAULT '';
    """,
]

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


def latest_version() -> int:
    return len(MIGRATIONS)


def statements(script: str) -> list[str]:
    return [statement for statement in script.split(";") if statement.strip()]


def recorded_version(tx: Tx, tables: set[str]) -> int:
    """0 for an empty database, 1 for a ledger from before versions were recorded."""
    if "schema_version" in tables:
        row = tx.one("SELECT MAX(version) AS version FROM schema_version")
        return int(row["version"]) if row and row["version"] is not None else 0
    return 1 if "effects" in tables else 0


def refuse_newer(version: int, location: str) -> None:
    if version > latest_version():
        raise SchemaTooNew(
            f"the ledger at {location} has schema version {version}, newer than this "
            f"pizzeria knows ({latest_version()}): upgrade pizzeria before using it"
        )


def refuse_other_than_latest(version: int, location: str) -> None:
    """For read-only opens, which cannot upgrade."""
    refuse_newer(version, location)
    if version < latest_version():
        raise SchemaTooOld(
            f"the ledger at {location} has schema version {version}, older than "
            f"{latest_version()}: start a worker on it once to upgrade it"
        )


#: The tables of the current version.
TABLES = frozenset({"stock", "effects", "deliveries", "schema_version"})


def refuse_damaged(tables: set[str], version: int, location: str) -> None:
    """A ledger at the current version must hold every table of it: one dropped by hand
    would fail each step, or each check, on the first statement that names it."""
    missing = sorted(TABLES - tables)
    if version == latest_version() and missing:
        raise SchemaDamaged(
            f"the ledger at {location} records schema version {version} but has no "
            f"{' or '.join(missing)} table: it was damaged; restore it from a backup"
        )


ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)\b", re.IGNORECASE)


def upgrade(
    tx: Tx, version: int, location: str, columns: Callable[[str], set[str]] | None = None
) -> None:
    """Run every migration above ``version`` in order, in the caller's transaction.

    A migration may run again on tables that already hold its change (a ledger whose
    version table was lost counts as version 1): tables are created only if missing, and
    an ``ADD COLUMN`` is skipped when ``columns(table)`` already names the column.
    """
    refuse_newer(version, location)
    tx.run(VERSION_TABLE)
    # A version only inferred (a first-release file) gets its row; a recorded one keeps it.
    if version >= 1:
        record(tx, version)
    for target in range(version + 1, latest_version() + 1):
        for statement in statements(MIGRATIONS[target - 1]):
            added = ADD_COLUMN.match(statement)
            if added and columns is not None and added.group(2) in columns(added.group(1)):
                continue
            tx.run(statement)
        record(tx, target)


def record(tx: Tx, version: int) -> None:
    tx.run(
        "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"
        " ON CONFLICT (version) DO NOTHING",
        (version, time.time()),
    )
