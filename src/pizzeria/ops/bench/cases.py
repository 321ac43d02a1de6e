"""What the benchmark measures: four cases, in pairs of a baseline and its saga; and, with
``--compare-fast-path``, the order's regular and fast paths next to their bare shapes."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from temporalio.worker import Worker

from pizzeria.models import CREDIT_CARD_PROCESSING_ERROR
from pizzeria.ops.baseline import BASELINE_FAILURE_ERROR

BASE_CONCURRENCY = (1, 10, 50)
FULL_CONCURRENCY = (*BASE_CONCURRENCY, 200)
# Workflows per batch; each case runs two batches per concurrency and run. Sized so that a
# default run (three runs, concurrency 1, 10 and 50) takes about six and a half minutes
# here and no server holds more than about 2,700 workflows even with --full.
WORKFLOWS_PER_BATCH = {1: 12, 10: 100, 50: 150, 200: 400}
WARMUP_WORKFLOWS = 6  # per case, on a fresh stack, before anything is measured
HISTORY_SAMPLES = 4  # histories read per batch for event counts and compensation time
# Zero waits, a driver always found: what is measured is the engine and our code, not sleep.
WORKER_ENVIRONMENT = {
    "PIZZERIA_DRIVER_SECONDS": "0",
    "PIZZERIA_DRIVER_PROBABILITY": "1",
    "PIZZERIA_DRIVER_ROUNDS": "1",  # found in the first round: no heartbeat, same history
    "PIZZERIA_FAULTS": "",
}
PREP_SECONDS = 0.0
#: ``--ledger sqlite``: a fresh SQLite file per stack (the default).
SQLITE = "sqlite"


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a process died, a wrong outcome)."""


class WorkerOptionError(ValueError):
    """A ``--worker-option`` that is not ``NAME=VALUE`` with a value we can read."""


class ServerOptionError(ValueError):
    """A ``--server-option`` that is not ``KEY=VALUE`` with a dotted key and a value."""


#: The Worker options the bench's worker sets itself (`build_worker`, the bench's shapes).
SET_BY_THE_BENCH = frozenset(
    {
        "client",
        "task_queue",
        "workflows",
        "activities",
        "activity_executor",
        "interceptors",
        "workflow_runner",
    }
)


def worker_option_names() -> frozenset[str]:
    """What ``--worker-option`` may set: the SDK Worker's options, but what the bench sets."""
    parameters = inspect.signature(Worker.__init__).parameters
    return frozenset(parameters) - {"self"} - SET_BY_THE_BENCH


def parse_worker_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``: NAME one of `worker_option_names`, VALUE an int, a float,
    true/false or none."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise WorkerOptionError(f"{text!r}: expected NAME=VALUE")
    if name not in worker_option_names():
        raise WorkerOptionError(
            f"{name!r} is not a Worker option the bench lets you set (temporalio.worker.Worker's,"
            " e.g. max_cached_workflows, max_concurrent_workflow_tasks)"
        )
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    if lowered == "none":
        return name, None
    for number in (int, float):
        try:
            return name, number(raw)
        except ValueError:
            continue
    raise WorkerOptionError(f"{text!r}: VALUE must be a number, true, false or none")


#: A dynamic config key of the Temporal server: dotted words, as history.timerProcessorMaxPollRPS.
SERVER_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")


def parse_server_option(text: str) -> str:
    """``KEY=VALUE``, a dynamic config value for the dev server (``--dynamic-config-value``
    of ``temporal server start-dev``, which reads VALUE as YAML), checked for its shape."""
    key, sep, value = text.partition("=")
    if not sep or not SERVER_KEY.fullmatch(key) or not value.strip() or not value.isprintable():
        raise ServerOptionError(
            f"{text[:80]!r}: expected KEY=VALUE, a dynamic config value of the dev server "
            "(e.g. system.forceSearchAttributesCacheRefreshOnRead=true)"
        )
    return f"{key}={value.strip()}"


@dataclass(frozen=True)
class Case:
    name: str
    saga: bool  # False: the bare-engine baseline
    bad_card: bool
    baseline: str | None = None  # the case this one is compared with
    # The order's fast path (local ledger steps); for a baseline, its local-activity shape.
    fast_path: bool = False
    pickup: bool = False  # an order picked up: no driver search
    no_steps: bool = False  # a baseline with no activity at all: the engine alone

    @property
    def expected_error(self) -> str | None:
        if not self.bad_card:
            return None
        return CREDIT_CARD_PROCESSING_ERROR if self.saga else BASELINE_FAILURE_ERROR


BASELINE_GOOD = Case("baseline-good", saga=False, bad_card=False)
GOOD = Case("good", saga=True, bad_card=False, baseline="baseline-good")
BASELINE_BAD = Case("baseline-bad", saga=False, bad_card=True)
BAD = Case("bad", saga=True, bad_card=True, baseline="baseline-bad")
BASELINE_LOCAL_GOOD = Case("baseline-local-good", saga=False, bad_card=False, fast_path=True)
FAST_GOOD = Case(
    "fast-good", saga=True, bad_card=False, baseline=BASELINE_LOCAL_GOOD.name, fast_path=True
)
# The whole order of `--peer`: a pickup on the fast path, every step local, no driver.
FAST_PICKUP = Case("fast-pickup", saga=True, bad_card=False, fast_path=True, pickup=True)
# The engine's floor beside it: a bare workflow that starts and completes, with no step.
EMPTY = Case("empty", saga=False, bad_card=False, no_steps=True)
CASES = (BASELINE_GOOD, GOOD, BASELINE_BAD, BAD)  # a default run's
ALL_CASES = (*CASES, BASELINE_LOCAL_GOOD, FAST_GOOD)
PAIRS: tuple[tuple[Case, ...], ...] = ((BASELINE_GOOD, GOOD), (BASELINE_BAD, BAD))
# The fast path against the regular path and both bare shapes, on one stack, in one run.
FAST_PATH_GROUPS: tuple[tuple[Case, ...], ...] = (
    (BASELINE_GOOD, GOOD, FAST_GOOD, BASELINE_LOCAL_GOOD),
)
FAST_PATH_CONCURRENCY = (1, 50)


@dataclass
class Settings:
    repeat: int = 3
    concurrency: tuple[int, ...] = BASE_CONCURRENCY
    workflows: int | None = None  # per batch; None: WORKFLOWS_PER_BATCH
    workers: int = 1
    worker_options: tuple[str, ...] = ()
    #: KEY=VALUE dynamic config values for the bench's dev servers (`parse_server_option`)
    server_options: tuple[str, ...] = ()
    sandbox_passthrough: tuple[str, ...] = ()
    # Cases measured together on one stack, in batches ordered forth and back.
    groups: tuple[tuple[Case, ...], ...] = PAIRS
    without: tuple[str, ...] = ()  # optional pieces switched off (pizzeria.tuning)
    # SQLITE, or a postgresql:// URL whose database gets a fresh schema per stack
    ledger: str = SQLITE

    @property
    def batches_per_run(self) -> int:
        return sum(2 * len(group) for group in self.groups) * len(self.concurrency)

    @property
    def ledger_kind(self) -> str:
        return SQLITE if self.ledger == SQLITE else "postgresql"

    @property
    def setup(self) -> str:
        """The ledger and the worker count, as the comparison of setups names them."""
        return f"{self.ledger_kind}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    def batch_size(self, concurrency: int) -> int:
        if self.workflows is not None:
            return self.workflows
        return WORKFLOWS_PER_BATCH.get(concurrency, max(12, 2 * concurrency))
