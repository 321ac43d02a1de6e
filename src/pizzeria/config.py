"""Where pizzeria keeps its files, how a worker says it is up, its simulation settings.

Everything lives in one data folder: ``$PIZZERIA_DATA_DIR``, by default ``.pizzeria`` in
the current directory (the Temporal history file, the ledger, the faults file, the local
payment provider's file and URL), unless
``$PIZZERIA_LEDGER`` puts the ledger elsewhere (another file, or a PostgreSQL database).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pizzeria.private import UnsafeSecret, read_private_file, write_private_text

N = TypeVar("N", bound=float)

#: What a worker prints once it polls its task queue (``pizzeria worker`` and the
#: benchmark's worker): the sign that orders placed now will be picked up. Here, not in
#: `pizzeria.worker`, so that whoever waits for a worker need not import the workflow.
READY_LINE = "Worker polling task queue"
# Long enough for the longest step to finish after a SIGTERM: the driver search runs up to
# 10 rounds of 1 s; every other step has 5 s.
DEFAULT_GRACEFUL_SHUTDOWN_SECONDS = 15.0


def data_dir() -> Path:
    return Path(os.environ.get("PIZZERIA_DATA_DIR", ".pizzeria"))


def use_data_dir(folder: Path) -> None:
    """Make ``folder`` this process's data folder (and its children's), as
    ``PIZZERIA_DATA_DIR`` would: a command's ``--data-dir`` moves every file of the folder,
    its keys and secrets included, not only the ones that command names."""
    os.environ["PIZZERIA_DATA_DIR"] = str(folder)


def ledger_location() -> str:
    """A SQLite file path or a ``postgresql://`` URL (see `pizzeria.ledger.open_ledger`)."""
    return os.environ.get("PIZZERIA_LEDGER", str(data_dir() / "ledger.db"))


def faults_file() -> Path:
    return Path(os.environ.get("PIZZERIA_FAULTS_FILE", str(data_dir() / "faults.json")))


def history_file() -> Path:
    return data_dir() / "temporal.db"


#: Where the local payment provider listens unless told otherwise (`pizzeria payments`).
LOCAL_PAYMENTS_URL = "http://127.0.0.1:8091"


def api_secret_file() -> Path:
    """The order API's token secret, made on first use (`pizzeria.api.auth.load_secret`)."""
    return data_dir() / "api.secret"


def payments_url_file() -> Path:
    """Where whoever starts the local payment provider for this data folder (`pizzeria
    server`, the demo) writes its URL, for the workers to find it."""
    return data_dir() / "payments.url"


def web_ui_file() -> Path:
    """Where `pizzeria server` writes its gRPC port and its Web UI's address while it runs
    (``7233 http://localhost:8233``), for the links the commands print."""
    return data_dir() / "web-ui.url"


def local_web_ui(grpc_port: int) -> str | None:
    """The Web UI of this folder's dev server when it listens on ``grpc_port``, as the
    server wrote it; None when it did not (or another user could have written it)."""
    try:
        written = read_private_file(web_ui_file(), "dev server's Web UI address").split()
    except (OSError, UnsafeSecret):
        return None
    if len(written) == 2 and written[0] == str(grpc_port) and written[1].startswith("http"):
        return written[1]
    return None


@contextlib.contextmanager
def web_ui_said(grpc_port: int, ui_port: int) -> Iterator[None]:
    """For the block (a dev server we started runs): `web_ui_file` says where its Web UI
    is, for the links the commands print; removed after."""
    with contextlib.suppress(OSError):  # links to the usual port: nothing worse
        write_private_text(web_ui_file(), f"{grpc_port} http://localhost:{ui_port}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            web_ui_file().unlink()


def local_payments_url(usual: str = LOCAL_PAYMENTS_URL) -> str:
    """The local provider of the data folder: the URL its starter wrote, else ``usual``.

    Raises:
        private.UnsafeSecret: another user could have written the file (the folder is a
            shared one): it would send the workers' holds, and the order page's card
            numbers, wherever it says.
    """
    try:
        written = read_private_file(payments_url_file(), "local payment provider's URL").strip()
    except OSError:
        written = ""
    return written if written.startswith("http://") else usual


@dataclass(frozen=True)
class DriverSimulation:
    """How ``notify_delivery_driver`` looks for a driver.

    The exercise polls for up to 10 one-second rounds and finds a driver with probability
    2/3. Tests and benchmarks set ``seconds_per_round`` to 0 and ``found_probability`` to
    1 or 0 so the outcome is deterministic.
    """

    rounds: int = 10
    seconds_per_round: float = 1.0
    found_probability: float = 2 / 3

    @classmethod
    def from_env(cls) -> DriverSimulation:
        """The search as ``PIZZERIA_DRIVER_ROUNDS``, ``_SECONDS`` and ``_PROBABILITY`` say.

        Raises:
            DriverSettingError: one of them is no setting (not a number, or out of its
                range): a worker refuses to start with it rather than fail every search.
        """
        return cls(
            rounds=int(driver_setting("PIZZERIA_DRIVER_ROUNDS", cls.rounds, int, 1, None)),
            seconds_per_round=driver_setting(
                "PIZZERIA_DRIVER_SECONDS", cls.seconds_per_round, float, 0, None
            ),
            found_probability=driver_setting(
                "PIZZERIA_DRIVER_PROBABILITY", cls.found_probability, float, 0, 1
            ),
        )


class DriverSettingError(ValueError):
    """A ``PIZZERIA_DRIVER_*`` variable that is no valid setting."""


def driver_setting(
    name: str,
    default: float,
    parse: Callable[[str], float],
    low: float,
    high: float | None,
) -> float:
    """``name``'s value from the environment (``default`` when unset), within ``low`` and
    ``high``; `DriverSettingError`, in one line saying what it takes, otherwise."""
    text = os.environ.get(name)
    if text is None:
        return default
    value = number_within(text, parse, low, high)
    if value is None:
        what = "a whole number" if parse is int else "a number"
        bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise DriverSettingError(f"{name}: {text!r} is not {what} {bounds}; fix it or unset {name}")
    return value


def number_within(
    text: str, parse: Callable[[str], N], low: float, high: float | None = None
) -> N | None:
    """``text`` as ``parse`` reads it (``int``, ``float``), when that is a finite number
    from ``low`` to ``high`` (None: no ceiling); None for anything else. The one reader of
    numbers set in the environment: each caller says in its own words what it takes."""
    try:
        value = parse(text.strip())
    except ValueError:
        return None
    if math.isfinite(value) and value >= low and (high is None or value <= high):
        return value
    return None
