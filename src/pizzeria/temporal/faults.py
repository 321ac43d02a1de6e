"""Faults on demand: make a step or a compensation fail, so people can watch the saga work.

The worker injects them around every activity (`FaultInterceptor`, installed by
``pizzeria.worker.build_worker``), from the environment variable ``PIZZERIA_FAULTS`` and
from the file named by ``PIZZERIA_FAULTS_FILE`` (default ``<data dir>/faults.json``,
written by ``pizzeria faults set``). Editing or clearing the file takes effect at the next
attempt, without restarting the worker: the file is parsed again whenever it changed.

A fault is ``STEP=MODE``, optionally followed by ``:N`` and ``@RATE``
(``STEP=MODE[:N][@RATE]``), several separated by commas, where ``STEP`` is an activity
name (``refund_customer``, ``process_credit_card``, ...) and ``MODE`` is:

* ``fail``: the attempt raises a retryable error (a card gateway or a stock service
  having a bad moment);
* ``timeout``: the attempt hangs past its start-to-close timeout (a gateway that does not
  answer), then raises;
* ``refuse``: the attempt fails for good (a non-retryable error) before any effect, so
  the order fails at that step and the saga compensates what came before;
* ``decline`` (``process_credit_card`` only): the card is declined, a non-retryable
  ``CreditCardProcessingError`` ("Card declined"), before anything is charged;
* ``out_of_stock`` (``update_inventory`` only): a non-retryable ``OutOfStockError``
  before anything is taken;
* ``lost``: the attempt takes effect, then its answer is lost: it hangs past its timeout
  (as when its worker dies right after writing), so Temporal retries a step that already
  took effect, or, out of attempts, compensates it;
* ``late``: the attempt takes effect only *after* its start-to-close timeout, even when
  Temporal cancels it: by then Temporal has retried the step (the late write finds the
  retry's row and changes nothing) or compensated it (the late write finds the
  compensation's tombstone and is refused).

``:N`` limits the fault to the first N attempts of each activity; without it the fault
lasts until cleared. ``@RATE`` (a fraction, ``0 < RATE <= 1``) makes it strike only that
share of the attempts, or, for ``refuse``, ``decline`` and ``out_of_stock``, of the orders
(a declined card stays declined). Whether it strikes is not random: it is derived from a hash of the
seed ``PIZZERIA_FAULTS_SEED`` (default 0), the workflow id, the step, the mode and the
attempt, so the same orders meet the same faults when a run is repeated.

A step holds at most one ``fail`` or ``timeout`` fault (the last one given wins); the other
modes add to it. Examples: ``refund_customer=fail`` (refunds fail),
``process_credit_card=timeout:2`` (the card gateway times out twice, then answers),
``process_credit_card=fail:3@0.2,process_credit_card=decline@0.05`` (a flaky gateway that
also declines one card in twenty), ``update_inventory=late:1@0.1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from pizzeria.fault_syntax import count_of, entries_of, hashed_fraction, rate_of, split_entry
from pizzeria.models import (
    COMPENSATIONS,
    CREDIT_CARD_PROCESSING_ERROR,
    OUT_OF_STOCK_ERROR,
    STEP_PROCESS_CREDIT_CARD,
    STEP_UPDATE_INVENTORY,
    STEPS,
)
from pizzeria.private import UnsafeSecret, file_version, read_private_file, write_private_text

FAIL = "fail"
TIMEOUT = "timeout"
REFUSE = "refuse"
DECLINE = "decline"
OUT_OF_STOCK = "out_of_stock"
LATE = "late"
LOST = "lost"
MODES = (FAIL, TIMEOUT, REFUSE, DECLINE, OUT_OF_STOCK, LATE, LOST)
#: What a fault can strike: every activity (a typo would make a fault that never fires).
FAULTABLE_STEPS = (*STEPS, *COMPENSATIONS)
# Verdicts answer for the order, not for one attempt: the same answer every time.
VERDICTS = (REFUSE, DECLINE, OUT_OF_STOCK)
# Business verdicts belong to one step each.
VERDICT_STEPS = {DECLINE: STEP_PROCESS_CREDIT_CARD, OUT_OF_STOCK: STEP_UPDATE_INVENTORY}
INJECTED_FAULT_ERROR = "InjectedFault"
SEED_VARIABLE = "PIZZERIA_FAULTS_SEED"
# How long after its timeout a late attempt writes: long enough for Temporal's retry
# (1 s later) or the compensation to have run first.
log = logging.getLogger(__name__)
LATE_MARGIN_SECONDS = 3.0


@dataclass(frozen=True)
class Fault:
    step: str
    mode: str
    attempts: int | None = None  # None: until cleared
    rate: float | None = None  # None: every attempt (within ``attempts``)

    @property
    def key(self) -> str:
        """One ``fail``/``timeout`` fault per step; each other mode has its own slot."""
        return self.step if self.mode in (FAIL, TIMEOUT) else f"{self.step}={self.mode}"

    def __str__(self) -> str:
        return (
            f"{self.step}={self.mode}"
            + (f":{self.attempts}" if self.attempts else "")
            + (f"@{self.rate!r}" if self.rate is not None else "")
        )


#: What a faults file that does not parse is told with.
FILE_WAY_OUT = "`pizzeria faults clear` starts afresh"


class FaultSyntaxError(ValueError):
    pass


class EnvironmentFaultError(FaultSyntaxError):
    """``PIZZERIA_FAULTS`` does not parse: a worker refuses to start with it."""


def _shown(text: str, most: int = 60) -> str:
    """An entry as an error quotes it: its start only (a file named by mistake, such as
    /proc/self/environ, is not printed whole)."""
    return text if len(text) <= most else text[: most - 3] + "..."


def _parse_entry(entry: str) -> Fault:
    parts = split_entry(entry)
    step, mode = parts.name, parts.head
    if not parts.named or not step or mode not in MODES or step not in FAULTABLE_STEPS:
        unknown = parts.named and step not in FAULTABLE_STEPS
        what = f"unknown step {_shown(step)!r}" if unknown else "bad fault"
        raise FaultSyntaxError(
            f"{what} in {_shown(entry)!r}: expected STEP=MODE[:N][@RATE] with STEP one of "
            + ", ".join(FAULTABLE_STEPS)
            + " and MODE one of "
            + ", ".join(MODES)
        )
    attempts = count_of(entry, parts.count, FaultSyntaxError)
    rate = rate_of(entry, parts.rate, FaultSyntaxError)
    verdict_step = VERDICT_STEPS.get(mode)
    if verdict_step is not None and step != verdict_step:
        raise FaultSyntaxError(f"bad fault {entry!r}: {mode} applies to {verdict_step} only")
    return Fault(step, mode, attempts, rate)


def parse_faults(text: str) -> dict[str, Fault]:
    """Parse ``STEP=MODE[:N][@RATE],...`` (or a JSON list of such strings)."""
    faults: dict[str, Fault] = {}
    for entry in entries_of(text, FaultSyntaxError, "'STEP=MODE[:N]'"):
        fault = _parse_entry(entry)
        faults[fault.key] = fault
    return faults


def draw(seed: str, workflow_id: str, step: str, mode: str, attempt: int) -> float:
    """A number in [0, 1) fixed by its inputs: which orders a rated fault strikes (the
    same for every worker process and every rerun with the seed)."""
    return hashed_fraction(seed, workflow_id, step, mode, str(attempt))


class FaultPlan:
    """The faults in force: the environment's, then the file's, re-read when it changes."""

    def __init__(
        self,
        file: Path | None,
        env_value: str | None = None,
        *,
        seed: str | None = None,
        late_margin: float = LATE_MARGIN_SECONDS,
    ) -> None:
        self.file = file
        self.env_value = os.environ.get("PIZZERIA_FAULTS", "") if env_value is None else env_value
        self.seed = os.environ.get(SEED_VARIABLE, "0") if seed is None else seed
        self.late_margin = late_margin
        self._env_faults: dict[str, Fault] | None = None
        # The file's version (private.file_version) when last parsed, and what it held.
        self._file_cache: tuple[tuple[int, ...], dict[str, Fault] | str] | None = None
        #: Why the file is not obeyed (another user could have written it), if so.
        self.refusal: str | None = None
        self._said: str | None = None  # the refusal the worker's log said last

    def current(self) -> dict[str, Fault]:
        return {**self.environment_faults(), **self._file_faults()}

    def environment_faults(self) -> dict[str, Fault]:
        """``PIZZERIA_FAULTS``'s faults; `EnvironmentFaultError` when it does not parse
        (a worker checks it before it starts: a typo there would fail every order)."""
        if self._env_faults is None:
            try:
                self._env_faults = parse_faults(self.env_value)
            except FaultSyntaxError as error:
                raise EnvironmentFaultError(
                    f"PIZZERIA_FAULTS: {error}; fix it or unset PIZZERIA_FAULTS"
                ) from None
        return self._env_faults

    def _file_faults(self) -> dict[str, Fault]:
        """The file's faults, parsed only when it changed: a stat per attempt, not a read.

        ``write_faults`` replaces the file, so a new inode tells a rewrite even within the
        file system's timestamp resolution. A file that does not parse keeps failing the
        attempts, with the same message, until it is fixed.
        """
        if self.file is None:
            return {}
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            self.refusal = None
            return {}
        version = file_version(stat)
        if self._file_cache is None or self._file_cache[0] != version:
            try:
                # A file another user could have written is not obeyed: it could decline
                # every card or hang every step (refused as a planted secret is). Nor does
                # it stop the steps: they run without it, and the worker says so once.
                text = read_private_file(self.file, "faults")
                parsed: dict[str, Fault] | str = parse_faults(text)
            except UnsafeSecret as unsafe:
                parsed, self.refusal = {}, str(unsafe)
            except FaultSyntaxError as error:
                parsed = f"{self.file}: {error}"
            except FileNotFoundError:  # cleared between the stat and the read
                return {}
            else:
                self.refusal = None
            self._file_cache = (version, parsed)
        faults = self._file_cache[1]
        if isinstance(faults, str):
            raise FaultSyntaxError(faults)
        return faults

    def strikes(self, fault: Fault, workflow_id: str, attempt: int) -> bool:
        """Whether ``fault`` hits this attempt of this order."""
        if fault.attempts is not None and attempt > fault.attempts:
            return False
        if fault.rate is None:
            return True
        # A verdict is about the order, not the attempt: the same answer every time.
        which = 0 if fault.mode in VERDICTS else attempt
        return draw(self.seed, workflow_id, fault.step, fault.mode, which) < fault.rate

    async def inject(self, step: str) -> None:
        """Before the step: fail, refuse, hang or delay this attempt.

        Returns when the activity should go on and take effect (at once, or late).
        """
        faults = [fault for fault in self.current().values() if fault.step == step]
        if self.refusal is not None and self.refusal != self._said:
            log.warning("faults file not obeyed: %s", self.refusal)  # once per change
        self._said = self.refusal
        if not faults:
            return
        info = activity.info()
        striking = {
            fault.mode: fault
            for fault in faults
            if self.strikes(fault, info.workflow_id or "", info.attempt)
        }
        timeout = info.start_to_close_timeout or timedelta(seconds=5)
        if TIMEOUT in striking:
            activity.logger.warning("Injected fault: %s hangs past its timeout", step)
            await asyncio.sleep(timeout.total_seconds() + 1)
            raise ApplicationError(f"Injected fault: {step} timed out", type=INJECTED_FAULT_ERROR)
        if FAIL in striking:
            activity.logger.warning("Injected fault: %s fails (attempt %d)", step, info.attempt)
            raise ApplicationError(
                f"Injected fault: {step} failed (attempt {info.attempt})",
                type=INJECTED_FAULT_ERROR,
            )
        if REFUSE in striking:
            activity.logger.warning("Injected fault: %s refuses for good", step)
            raise ApplicationError(
                f"Injected fault: {step} refused", type=INJECTED_FAULT_ERROR, non_retryable=True
            )
        if DECLINE in striking:
            raise _verdict("Card declined", CREDIT_CARD_PROCESSING_ERROR)
        if OUT_OF_STOCK in striking:
            raise _verdict("Out of stock (injected fault)", OUT_OF_STOCK_ERROR)
        if LATE in striking:
            delay = timeout.total_seconds() + self.late_margin
            activity.logger.warning(
                "Injected fault: %s takes effect late, in %.1f s (attempt %d)",
                step,
                delay,
                info.attempt,
            )
            await _sleep_through_cancellation(delay)

    async def answer(self, step: str) -> None:
        """After the step took effect: lose its answer when a fault says so."""
        fault = self.current().get(f"{step}={LOST}")
        if fault is None:
            return
        info = activity.info()
        if not self.strikes(fault, info.workflow_id or "", info.attempt):
            return
        timeout = info.start_to_close_timeout or timedelta(seconds=5)
        activity.logger.warning(
            "Injected fault: %s took effect, its answer is lost (attempt %d)", step, info.attempt
        )
        await _sleep_through_cancellation(timeout.total_seconds() + self.late_margin)
        raise ApplicationError(f"Injected fault: {step} answer lost", type=INJECTED_FAULT_ERROR)


class FaultInterceptor(Interceptor):
    """Injects a plan's faults around every activity, the step named by its activity type.

    Faults run inside the metrics interceptor (see ``pizzeria.worker.build_worker``), so an
    injected failure counts as the activity's failure.
    """

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _FaultyActivity(next, self.plan)


class _FaultyActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, plan: FaultPlan) -> None:
        super().__init__(next)
        self.plan = plan

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        step = activity.info().activity_type
        try:
            await self.plan.inject(step)
        except FaultSyntaxError as error:
            raise _unreadable_faults(error) from None
        result = await super().execute_activity(input)
        # The step took effect: a file gone bad meanwhile loses no answer (the next
        # attempt of any step says it).
        with contextlib.suppress(FaultSyntaxError):
            await self.plan.answer(step)
        return result


def _unreadable_faults(error: FaultSyntaxError) -> ApplicationError:
    """A faults file that does not parse fails the attempt before anything is done (it is
    retried, and goes through once the file is fixed or cleared): one log line, not the
    SDK's traceback of every attempt."""
    activity.logger.warning("Step not run: %s; %s", error, FILE_WAY_OUT)
    return ApplicationError(
        f"{error}; {FILE_WAY_OUT}",
        type=type(error).__name__,
        category=ApplicationErrorCategory.BENIGN,
    )


def _verdict(message: str, kind: str) -> ApplicationError:
    return ApplicationError(
        message, type=kind, non_retryable=True, category=ApplicationErrorCategory.BENIGN
    )


async def _sleep_through_cancellation(seconds: float) -> None:
    """Wait, ignoring cancellation: the request already reached the (simulated) provider.

    Temporal cancels an attempt that outlived its timeout; a real gateway that received
    the request does not care and processes it anyway. That is the late write.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()


def write_faults(file: Path, faults: dict[str, Fault]) -> None:
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_text(file, json.dumps([str(f) for f in faults.values()]))
