"""A private PostgreSQL server for the tests: a temporary cluster on 127.0.0.1 and a free
port, fsync off (its data dies with the session), one fresh database per test.

initdb and postgres refuse to run as root; as root they run as the ``postgres`` user that
the Debian package creates. The server is stopped by its PID when the session ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pizzeria.ops.processes import free_port

INSTALL_HINT = (
    "PostgreSQL is not installed: `apt-get install postgresql` "
    "(or run without --ledger-backend=postgres)"
)
INITDB_FLAGS = ("--encoding=UTF8", "--locale=C", "--no-sync")
# Durability off (the cluster dies with the session); room for many pools at once.
SERVER_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def as_server_user() -> dict[str, Any]:
    """``subprocess`` options that drop root to ``postgres``; nothing when not root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and there is no `postgres` user") from None
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="pizzeria-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.user = as_server_user()
        if self.user:
            shutil.chown(self.folder, "postgres", "postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, seconds: float = 60) -> None:
        data = self.folder / "data"
        initdb = [str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run([*initdb, *INITDB_FLAGS], check=True, capture_output=True, **self.user)
        listen = ["-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.folder)]
        settings = [f"--{setting}" for setting in SERVER_SETTINGS]
        with open(self.folder / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(data), *listen, *settings],
                stdout=log,
                stderr=subprocess.STDOUT,
                **self.user,
            )
        self.wait_ready(seconds)

    def wait_ready(self, seconds: float) -> None:
        import psycopg

        deadline = time.monotonic() + seconds
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_tail()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not ready in {seconds}s: {self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def log_tail(self) -> str:
        log = self.folder / "server.log"
        return log.read_text(errors="replace")[-800:] if log.exists() else "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: ends open sessions
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database, dropped afterwards even if a connection is still open."""
        name = f"ledger_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
