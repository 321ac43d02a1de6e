"""Faults of the provider on demand: what a real card gateway does on a bad day.

The file named by ``pizzeria payments --faults-file`` holds them, in the syntax of the
worker's faults (`pizzeria.temporal.faults`), comma-separated or as a JSON list of
strings: ``OPERATION=MODE[/ARG][:N][@RATE]``. The file is read again whenever it
changes (a new plan starts its counts afresh); a missing or empty file means no fault.
The syntax is read by `pizzeria.fault_syntax`, which the worker's faults share; what the
operations and modes mean is this module's: these are API operations, not activities.

``OPERATION`` is ``authorize`` (create a PaymentIntent), ``capture``, ``void`` (cancel),
``refund``, ``retrieve`` (any GET of one object), ``list``, ``search``,
``payment_method`` (create a PaymentMethod), or ``*`` (every request). ``MODE``:

* ``error``: answer a 5xx (``ARG``, default 500) ``api_error`` before doing anything; no
  answer is stored for the idempotency key, so a retry with it does the work;
* ``slow``: wait ``ARG`` seconds (default 2) before handling the request;
* ``lost``: do the work (and store its answer under the idempotency key), then close the
  connection without answering: the caller cannot tell it happened;
* ``refuse``: drop the connection (a reset) before doing anything, as a gateway that
  refuses connections does from the caller's side.

``:N`` limits the fault to the first N requests it matches; ``@RATE`` (``0 < RATE <= 1``)
makes it strike only that share of them, drawn from a hash of the seed, the operation, the
idempotency key (or the path) and how many times that key came, so a retry draws again
and a rerun meets the same faults.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from pizzeria.fault_syntax import (
    count_of,
    entries_of,
    hashed_fraction,
    number,
    rate_of,
    split_entry,
)
from pizzeria.private import UnsafeSecret, file_version, read_private_file

log = logging.getLogger("pizzeria.payments.provider")

OPERATIONS = (
    "authorize",
    "capture",
    "void",
    "refund",
    "retrieve",
    "list",
    "search",
    "payment_method",
)
ANY = "*"
ERROR, SLOW, LOST, REFUSE = "error", "slow", "lost", "refuse"
MODES = (ERROR, SLOW, LOST, REFUSE)
DEFAULT_ARGUMENT = {ERROR: 500.0, SLOW: 2.0}
MAX_TRACKED = 100_000


class FaultFileError(ValueError):
    """The faults file does not parse: one line saying where."""


@dataclass(frozen=True)
class ProviderFault:
    operation: str
    mode: str
    argument: float | None = None  # error: the HTTP status; slow: seconds
    times: int | None = None  # None: until the file changes
    rate: float | None = None  # None: every request it matches

    def __str__(self) -> str:
        return (
            f"{self.operation}={self.mode}"
            + (f"/{self.argument:g}" if self.argument is not None else "")
            + (f":{self.times}" if self.times else "")
            + (f"@{self.rate!r}" if self.rate is not None else "")
        )


@dataclass(frozen=True)
class Decision:
    """What the faults do to one request."""

    refuse: bool = False
    error_status: int | None = None
    delay: float = 0.0
    lose_answer: bool = False


def _number(text: str, entry: str, what: str) -> float:
    value = number(text)
    if not math.isfinite(value):
        raise FaultFileError(f"bad fault {entry!r}: {what} must be a number")
    return value


def parse_entry(entry: str) -> ProviderFault:
    parts = split_entry(entry)
    operation = parts.name
    mode, slash, argument_text = parts.head.partition("/")
    if not parts.named or operation not in (*OPERATIONS, ANY) or mode not in MODES:
        raise FaultFileError(
            f"bad fault {entry!r}: expected OPERATION=MODE[/ARG][:N][@RATE] with OPERATION "
            f"one of {', '.join((*OPERATIONS, ANY))} and MODE one of {', '.join(MODES)}"
        )
    argument = None
    if slash:
        if mode not in DEFAULT_ARGUMENT:
            raise FaultFileError(f"bad fault {entry!r}: {mode} takes no /ARG")
        argument = _number(argument_text, entry, "ARG")
        if mode == ERROR and not (argument.is_integer() and 500 <= argument <= 599):
            raise FaultFileError(f"bad fault {entry!r}: error/ARG must be a 5xx status")
        if mode == SLOW and not 0 <= argument <= 3600:
            raise FaultFileError(f"bad fault {entry!r}: slow/ARG must be 0 to 3600 seconds")
    times = count_of(entry, parts.count, FaultFileError)
    rate = None
    if parts.rate is not None:
        _number(parts.rate, entry, "RATE")  # a non-number says so before the range does
        rate = rate_of(entry, parts.rate, FaultFileError)
    return ProviderFault(operation, mode, argument, times, rate)


def parse_faults(text: str) -> list[ProviderFault]:
    """``OPERATION=MODE[/ARG][:N][@RATE],...`` or a JSON list of such strings."""
    return [parse_entry(entry) for entry in entries_of(text, FaultFileError, "strings")]


def draw(seed: str, operation: str, mode: str, key: str, attempt: int) -> float:
    return hashed_fraction(seed, operation, mode, key, str(attempt))


class ProviderFaults:
    """The faults in force, from the file, re-read when it changes (a stat per request)."""

    def __init__(self, file: Path | None, seed: str = "0") -> None:
        self.file = file
        self.seed = seed
        self._lock = threading.Lock()
        self._version: tuple[int, ...] | None = None
        self._faults: list[ProviderFault] | str = []
        self._struck: dict[ProviderFault, int] = {}
        self._seen: dict[tuple[ProviderFault, str], int] = {}

    def current(self) -> list[ProviderFault]:
        """The faults in force; raises `FaultFileError` while the file does not parse."""
        with self._lock:
            self._reload()
            if isinstance(self._faults, str):
                raise FaultFileError(self._faults)
            return list(self._faults)

    def _reload(self) -> None:
        if self.file is None:
            return
        try:
            stat = self.file.stat()
            version = file_version(stat)
            if version == self._version:
                return
            # A file another user could have written is not obeyed (it could refuse or
            # lose every request): the provider says so once and answers as without one.
            text = read_private_file(self.file, "provider's faults")
        except FileNotFoundError:
            version, text = (0, 0, 0), ""
        except UnsafeSecret as unsafe:  # not obeyed, and no request fails for it
            text = ""
            if version != self._version:
                log.warning("faults file not obeyed: %s", unsafe)
        if version == self._version:
            return
        self._version = version
        self._struck.clear()
        self._seen.clear()
        try:
            self._faults = parse_faults(text)
        except FaultFileError as error:
            self._faults = str(error)

    def decide(self, operation: str, key: str) -> Decision:
        """What happens to this request (``key``: its idempotency key, else its path)."""
        faults = [f for f in self.current() if f.operation in (operation, ANY)]
        if not faults:
            return Decision()
        with self._lock:
            striking = [fault for fault in faults if self._strikes(fault, operation, key)]
        modes = {fault.mode: fault for fault in striking}
        if REFUSE in modes:
            return Decision(refuse=True)
        if ERROR in modes:
            status = modes[ERROR].argument or DEFAULT_ARGUMENT[ERROR]
            return Decision(error_status=int(status))
        slow = modes.get(SLOW)
        delay = 0.0 if slow is None else (slow.argument or DEFAULT_ARGUMENT[SLOW])
        return Decision(delay=delay, lose_answer=LOST in modes)

    def _strikes(self, fault: ProviderFault, operation: str, key: str) -> bool:
        if fault.times is not None and self._struck.get(fault, 0) >= fault.times:
            return False
        if fault.rate is not None:
            if len(self._seen) > MAX_TRACKED:
                self._seen.clear()
            attempt = self._seen.get((fault, key), 0) + 1
            self._seen[(fault, key)] = attempt
            if draw(self.seed, operation, fault.mode, key, attempt) >= fault.rate:
                return False
        self._struck[fault] = self._struck.get(fault, 0) + 1
        return True
