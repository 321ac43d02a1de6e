"""The ledger: stock, charges, refunds and bills, each effect written exactly once.

Every row is keyed by an idempotency key ``<workflow id>/<run id>/<step>``. Activities run
at least once, so a repeated call finds its key and changes nothing; a later run of the
same order number has another run id and so never touches this run's rows. A compensation
that finds nothing to undo leaves a *tombstone* under its own key, so a step that arrives
late (after its compensation) is refused instead of taking effect with nobody to undo it;
so is a bill arriving after the run's refund (the order is being undone, not billed).

One location names the ledger (``PIZZERIA_LEDGER`` / ``--ledger``): a file path is an
embedded SQLite ledger (the default, for workers on one machine), a ``postgresql://`` URL
a shared PostgreSQL one (for workers on several machines). `open_ledger` picks the
backend; both run the same logic (book.py) on the same tables (schema.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from pizzeria.ledger.book import Ledger
from pizzeria.ledger.records import (
    LATE_PAYMENT_UNDONE,
    REAUTHORIZE_HOLD,
    AlreadyBilled,
    Delivery,
    DeliveryKeyReused,
    Effect,
    HoldChanged,
    LateStepRefused,
    LedgerError,
    LedgerNotFound,
    LedgerReadOnly,
    LedgerSnapshot,
    LedgerUnavailable,
    OrderLedger,
    OutOfStock,
    RunRows,
    SchemaDamaged,
    SchemaTooNew,
    SchemaTooOld,
    UnsupportedLedger,
    idempotency_key,
    per_order_totals,
    runs_of,
)
from pizzeria.ledger.schema import latest_version
from pizzeria.menu import INITIAL_STOCK

__all__ = [
    "LATE_PAYMENT_UNDONE",
    "REAUTHORIZE_HOLD",
    "AlreadyBilled",
    "Delivery",
    "DeliveryKeyReused",
    "Effect",
    "HoldChanged",
    "LateStepRefused",
    "Ledger",
    "LedgerError",
    "LedgerNotFound",
    "LedgerReadOnly",
    "LedgerSnapshot",
    "LedgerUnavailable",
    "OrderLedger",
    "OutOfStock",
    "RunRows",
    "SchemaDamaged",
    "SchemaTooNew",
    "SchemaTooOld",
    "UnsupportedLedger",
    "check_location",
    "idempotency_key",
    "is_postgres_location",
    "latest_version",
    "open_ledger",
    "per_order_totals",
    "runs_of",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: ``key=value`` pairs and nothing else (libpq's keyword form), naming one of these keys.
KEYWORD_STRING = re.compile(r"\s*(\w+\s*=\s*('[^']*'|\S+)\s*)+")
LIBPQ_KEYWORD = re.compile(r"(^|\s)(host|hostaddr|port|dbname|user|password|sslmode)\s*=")


def check_location(location: str | Path) -> str:
    """``location`` as text, unless it is of a kind no ledger lives at (`UnsupportedLedger`):
    a file path (SQLite) or a ``postgresql://`` URL."""
    text = str(location)
    if KEYWORD_STRING.fullmatch(text) and LIBPQ_KEYWORD.search(text):
        # Not a file name: a libpq keyword string, which may hold a password (not echoed).
        raise UnsupportedLedger(
            "the ledger is a file path (SQLite) or a postgresql:// URL, not a keyword "
            "string (host=... dbname=...): write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        )
    if not is_postgres_location(text) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        scheme = text.split("://", 1)[0]
        raise UnsupportedLedger(
            f"unsupported ledger location {scheme}://...: "
            "give a file path (SQLite) or a postgresql:// URL"
        )
    return text


def is_postgres_location(location: str | Path) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def open_ledger(
    location: str | Path, *, initial_stock: int = INITIAL_STOCK, read_only: bool = False
) -> Ledger:
    """The ledger at ``location``: a file path (SQLite) or a ``postgresql://`` URL.

    Writable (the default): created when missing, with ``initial_stock`` portions of each
    ingredient, and upgraded to the current schema. ``read_only``: nothing is created,
    seeded, upgraded or written; `LedgerNotFound` when there is no ledger there yet.
    Raises a `LedgerError` (one line for the user) when the ledger cannot be used.
    """
    text = check_location(location)
    if is_postgres_location(text):
        # Imported here so that the embedded default never loads psycopg.
        from pizzeria.ledger.postgres import PostgresLedger

        return PostgresLedger(text, initial_stock=initial_stock, read_only=read_only)
    from pizzeria.ledger.sqlite import SqliteLedger

    return SqliteLedger(text, initial_stock=initial_stock, read_only=read_only)
