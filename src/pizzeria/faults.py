"""Faults on demand: make a step or a compensation fail, so people can watch the saga work.

The worker reads the faults before every activity, from the environment variable
``PIZZERIA_FAULTS`` and from the file named by ``PIZZERIA_FAULTS_FILE`` (default
``<data dir>/faults.json``, written by ``pizzeria faults set``). Editing or clearing the
file takes effect at the next attempt, without restarting the worker.

A fault is ``STEP=MODE`` or ``STEP=MODE:N``, several separated by commas, where ``STEP``
is an activity name (``refund_customer``, ``process_credit_card``, ...) and ``MODE`` is:

* ``fail``: the attempt raises a retryable error;
* ``timeout``: the attempt hangs past its start-to-close timeout (a gateway that does not
  answer), then raises.

``:N`` limits the fault to the first N attempts of each activity; without it the fault
lasts until cleared. Examples: ``refund_customer=fail`` (refunds fail),
``process_credit_card=timeout:2`` (the card gateway times out twice, then answers).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

MODES = ("fail", "timeout")
INJECTED_FAULT_ERROR = "InjectedFault"


@dataclass(frozen=True)
class Fault:
    step: str
    mode: str
    attempts: int | None = None  # None: until cleared

    def __str__(self) -> str:
        return f"{self.step}={self.mode}" + (f":{self.attempts}" if self.attempts else "")


class FaultSyntaxError(ValueError):
    pass


def parse_faults(text: str) -> dict[str, Fault]:
    """Parse ``STEP=MODE[:N],...`` (or a JSON list of such strings)."""
    text = text.strip()
    if not text:
        return {}
    entries: list[str]
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as error:
            raise FaultSyntaxError(f"the faults file is not valid JSON: {error}") from None
        if not isinstance(loaded, list) or not all(isinstance(e, str) for e in loaded):
            raise FaultSyntaxError("the faults file must hold a JSON list of 'STEP=MODE[:N]'")
        entries = loaded
    else:
        entries = [part for part in text.split(",") if part.strip()]
    faults: dict[str, Fault] = {}
    for entry in entries:
        step, sep, rule = entry.strip().partition("=")
        mode, colon, count = rule.partition(":")
        if not sep or not step or mode not in MODES:
            raise FaultSyntaxError(
                f"bad fault {entry.strip()!r}: expected STEP=fail or STEP=timeout, "
                "optionally followed by :N attempts"
            )
        if colon and (not (count.isascii() and count.isdigit()) or int(count) < 1):
            raise FaultSyntaxError(f"bad fault {entry.strip()!r}: N must be a positive number")
        faults[step.strip()] = Fault(step.strip(), mode, int(count) if count else None)
    return faults


class FaultPlan:
    """The faults in force, re-read from the environment and the file on each check."""

    def __init__(self, file: Path | None, env_value: str | None = None) -> None:
        self.file = file
        self.env_value = os.environ.get("PIZZERIA_FAULTS", "") if env_value is None else env_value
        self._cache: tuple[float, dict[str, Fault]] | None = None

    def current(self) -> dict[str, Fault]:
        faults = parse_faults(self.env_value)
        if self.file is not None and self.file.exists():
            mtime = self.file.stat().st_mtime
            if self._cache is None or self._cache[0] != mtime:
                self._cache = (mtime, parse_faults(self.file.read_text()))
            faults.update(self._cache[1])
        return faults

    async def inject(self, step: str) -> None:
        """Called by each activity first: fail or hang this attempt when a fault says so."""
        fault = self.current().get(step)
        if fault is None:
            return
        info = activity.info()
        if fault.attempts is not None and info.attempt > fault.attempts:
            return
        if fault.mode == "timeout":
            timeout = info.start_to_close_timeout or timedelta(seconds=5)
            activity.logger.warning("Injected fault: %s hangs past its timeout", step)
            await asyncio.sleep(timeout.total_seconds() + 1)
            raise ApplicationError(f"Injected fault: {step} timed out", type=INJECTED_FAULT_ERROR)
        activity.logger.warning("Injected fault: %s fails (attempt %d)", step, info.attempt)
        raise ApplicationError(
            f"Injected fault: {step} failed (attempt {info.attempt})", type=INJECTED_FAULT_ERROR
        )


def write_faults(file: Path, faults: dict[str, Fault]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_suffix(".tmp")
    temporary.write_text(json.dumps([str(f) for f in faults.values()]))
    temporary.replace(file)
