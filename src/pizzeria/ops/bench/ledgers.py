"""Where a benchmark stack keeps its ledger, and how much it grew.

SQLite: a fresh file in the stack's folder. PostgreSQL: the database the user named, in a
schema of its own per stack (created before the workers start, dropped after), so stacks
never share rows and nothing the user keeps in that database is touched. The workers find
the schema through the URL's ``options=-csearch_path=...``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pizzeria.ops.bench.cases import SQLITE, BenchError

# Rows of the effects table and the bytes of their text columns (the same SQL on both).
EFFECTS_SIZE = (
    "SELECT count(*), coalesce(sum(length(idempotency_key) + length(order_ref)"
    " + length(order_number) + length(step) + length(ingredients)"
    " + length(reference)), 0) FROM effects"
)
SCHEMA_BYTES = (
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
)


def in_schema(url: str, schema: str) -> str:
    """The URL with ``schema`` first on its search path."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "options"]
    earlier = dict(parse_qsl(parts.query)).get("options", "")
    query.append(("options", f"{earlier} -csearch_path={schema}".strip()))
    return urlunsplit(parts._replace(query=urlencode(query)))


def run_sql(url: str, sql: str) -> tuple[int, ...]:
    """One statement on PostgreSQL; its first row. A failure is a `BenchError` line."""
    import psycopg

    from pizzeria.ledger.postgres import one_line, without_password

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            row = cursor.fetchone() if cursor.description else None
    except psycopg.Error as error:
        raise BenchError(
            f"the ledger at {without_password(url)} failed: {one_line(error, url)}"
        ) from None
    return tuple(int(value) for value in row) if row else ()


@contextlib.contextmanager
def stack_ledger(setting: str, data_dir: Path) -> Iterator[str]:
    """The ledger location of one stack, for the duration of the block."""
    if setting == SQLITE:
        yield str(data_dir / "ledger.db")
        return
    schema = f"pizzeria_bench_{uuid.uuid4().hex[:10]}"
    run_sql(setting, f"CREATE SCHEMA {schema}")
    try:
        yield in_schema(setting, schema)
    finally:
        run_sql(setting, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def ledger_size(location: str) -> tuple[int, int, int]:
    """Rows of the effects table, their text payload bytes, and the ledger's bytes on disk
    (the SQLite file after a checkpoint; the schema's tables with their indexes)."""
    if location.startswith("postgresql://"):
        rows, payload = run_sql(location, EFFECTS_SIZE)
        (stored,) = run_sql(location, SCHEMA_BYTES)
        return rows, payload, stored
    path = Path(location)
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows, payload = db.execute(EFFECTS_SIZE).fetchone()
    finally:
        db.close()
    return int(rows), int(payload), path.stat().st_size
