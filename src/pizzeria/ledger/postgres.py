"""The shared backend: one PostgreSQL database for workers on several machines.

Imported only when a ``postgresql://`` location is opened, so the embedded default never
loads psycopg. Each process keeps a small pool of connections. What differs from SQLite:

- Writers run at READ COMMITTED, side by side. The steps of one run serialise on a
  transaction-scoped advisory lock keyed by the run (a compensation must not race the step
  it undoes); different runs only meet on stock rows, which the conditional updates of
  the shared logic guard.
- A transaction that fails on a serialization failure, a deadlock or a lost connection is
  retried whole, a bounded number of times with backoff. A retry never doubles an
  effect: if the lost attempt did commit, the retry finds its row under the key.
- Snapshots read at REPEATABLE READ: stock and effects as of one instant.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from pizzeria.ledger.book import Ledger
from pizzeria.ledger.records import LedgerUnavailable
from pizzeria.ledger.sql import Tx
from pizzeria.menu import INITIAL_STOCK

T = TypeVar("T")

log = logging.getLogger(__name__)

POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 10
#: How long a transaction waits for a connection of the pool: less than a step's 5 s
#: timeout, so that a step that cannot reach the ledger fails saying so, not timed out.
POOL_WAIT_SECONDS = 3.0
ATTEMPTS = 6
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0


#: A URL's scheme, then its user part (``user:password``), which runs to the last "@": a
#: password written without percent-encoding may hold "@", ":", "/", "?" or "#".
USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")
#: A password given as a query parameter.
QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#\s]*)")


def passwords_in(url: str) -> list[str]:
    """Every password the URL carries (``user:PASSWORD@``, ``?password=PASSWORD``), as
    written and percent-decoded: what must never be printed, wherever it is quoted."""
    userinfo = USERINFO.match(url)  # all of a password, not its first letters (above)
    found = [userinfo.group(2).partition(":")[2]] if userinfo else []
    found += [given for _, given in QUERY_PASSWORD.findall(url)]
    decoded = [urllib.parse.unquote(secret) for secret in found]
    # Longest first, so that no shorter secret unmasks part of a longer one.
    return sorted({secret for secret in found + decoded if secret}, key=len, reverse=True)


#: A password this long is hidden wherever it stands in a message; a shorter one only
#: where a URL or libpq quotes it (``:pw@``, ``password=pw``, ``"pw"``): hidden anywhere,
#: a password "o" would turn "connection" into "c***nnecti***n", and say what it is.
HIDDEN_ANYWHERE = 6


def masked_url(url: str) -> str:
    """The URL with its password fields (``user:***@``, ``password=***``) masked, and
    nothing else touched: the user name stays, whatever the password."""
    userinfo = USERINFO.match(url)
    if userinfo and ":" in userinfo.group(2):
        user = userinfo.group(2).partition(":")[0]
        url = f"{userinfo.group(1)}{user}:***@{url[userinfo.end() :]}"
    return QUERY_PASSWORD.sub(r"\1***", url)


def hide_passwords(text: str, url: str) -> str:
    """``text`` (an error from libpq, which may quote the URL) with ``url``'s passwords
    replaced by ``***``: the URL where it is quoted whole, then the passwords elsewhere."""
    if not url:
        return text
    parts = text.split(url)
    return masked_url(url).join(_hide_loose(part, url) for part in parts)


def _hide_loose(text: str, url: str) -> str:
    for secret in passwords_in(url):
        if len(secret) >= HIDDEN_ANYWHERE:
            text = text.replace(secret, "***")
            continue
        quoted = re.escape(secret)
        text = re.sub(
            rf'(?<=:){quoted}(?=@)|(?<=password=){quoted}(?![^&#\s"])|(?<="){quoted}(?=")',
            "***",
            text,
        )
    return text


def without_password(url: str) -> str:
    """The URL as it may be printed: every password in it becomes ``***``."""
    return masked_url(url)


def one_line(error: BaseException, url: str = "") -> str:
    """The error in one line, ``url``'s passwords hidden."""
    said = " ".join(str(error).split()) or type(error).__name__
    return hide_passwords(said, url)[:300]


#: What a refused statement calls for, said after it.
REFUSED_HINT = (
    " (the ledger's user needs to create and write its tables, in the schema its"
    " search_path names; `pizzeria doctor` checks the ledger)"
)


def given_options(url: str) -> str:
    """The server options the user gave: the URL's ``options``, else ``PGOPTIONS``."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url).get("options")
    except psycopg.Error:
        given = None  # said by the first connection, with the passwords hidden
    return str(given or os.environ.get("PGOPTIONS", "")).strip()


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1-based): doubling, capped, with jitter."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


class PostgresLedger(Ledger):
    """One database; a pool of connections shared by the process's threads."""

    def __init__(
        self,
        url: str,
        *,
        initial_stock: int = INITIAL_STOCK,
        read_only: bool = False,
        pool_size: int = POOL_SIZE,
    ) -> None:
        super().__init__(without_password(url), read_only=read_only)
        self._url = url  # its passwords are hidden in every error said (one_line)
        options: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if read_only:
            # The server then refuses any write, whatever this code does; after the
            # user's own options (the URL's, else PGOPTIONS: a search_path), not instead.
            options["options"] = f"{given_options(url)} -c default_transaction_read_only=on"
        try:
            # One connection first, for a precise reason when the server or the URL is wrong
            # (the pool would only time out).
            psycopg.connect(url, **options).close()
        except psycopg.Error as error:
            raise LedgerUnavailable(
                f"cannot reach the ledger at {self.location}: {one_line(error, url)}"
            ) from None
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={**options, "row_factory": dict_row},
            # A connection the server dropped while idle is replaced, not handed out.
            check=ConnectionPool.check_connection,
            timeout=POOL_WAIT_SECONDS,
            name="pizzeria-ledger",
            open=True,
        )
        try:
            self._prepare(initial_stock)
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def _transaction(
        self, body: Callable[[Tx], T], *, lock: str | None = None, writes: bool = True
    ) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._attempt(body, lock=lock, writes=writes)
            except PoolTimeout as error:
                raise LedgerUnavailable(
                    f"no connection to the ledger at {self.location}: {one_line(error, self._url)}"
                ) from error
            except psycopg.ProgrammingError as error:
                # A table or schema missing, a privilege not granted: not a passing fault.
                raise LedgerUnavailable(
                    f"the ledger at {self.location} refused: {one_line(error, self._url)}"
                    f"{REFUSED_HINT}"
                ) from None
            except psycopg.OperationalError as error:
                if attempt == ATTEMPTS:
                    raise LedgerUnavailable(
                        f"the ledger at {self.location} failed {ATTEMPTS} times: "
                        f"{one_line(error, self._url)}"
                    ) from error
                log.warning("Ledger transaction failed (%s); retrying", one_line(error, self._url))
                time.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def _attempt(self, body: Callable[[Tx], T], *, lock: str | None, writes: bool) -> T:
        with self._pool.connection() as conn, conn.transaction():
            if not writes:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if lock is not None:
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock,))
            return body(Tx(lambda sql, params: conn.execute(placeholders(sql), params)))

    def _who_creates_it(self, tx: Tx) -> str:
        row = tx.one(
            "SELECT current_schema() AS name, current_user AS who,"
            " has_schema_privilege(current_schema(), 'CREATE') AS may"
        )
        if row is None or row["name"] is None:
            return "its search_path names no schema that exists: create it, or fix the path"
        if not row["may"]:
            return (
                f"and its user {row['who']} may not create tables in schema {row['name']}, "
                f"so no worker can (GRANT CREATE ON SCHEMA {row['name']} TO {row['who']})"
            )
        return super()._who_creates_it(tx)

    def _table_names(self, tx: Tx) -> set[str]:
        rows = tx.all("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {row["tablename"] for row in rows}

    def _column_names(self, tx: Tx, table: str) -> set[str]:
        rows = tx.all(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {row["column_name"] for row in rows}


def placeholders(sql: str) -> str:
    """The shared SQL's ``?`` in psycopg's style."""
    return sql.replace("?", "%s")
