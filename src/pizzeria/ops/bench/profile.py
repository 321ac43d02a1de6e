"""``pizzeria bench --profile``: where the worker's time goes, piece by piece.

Timing runs on a shared machine swing by more than what one optional piece costs, so the
ablation cannot always tell the pieces apart. A sampling profile can: within one batch, it
sees each piece's share of the worker's time, whatever the machine's load. py-spy samples
the worker process from outside (no change to the code that runs), and with ``--gil`` it
records only the thread that holds the GIL: the Python time the worker spends, without the
threads that wait. The SDK's Rust core runs outside the GIL and is not counted.

Each sample goes to one piece (`piece_of`): a ledger transaction run on a thread counts as
the ledger, not as the thread hop; an activity run inside the metrics interceptor counts as
the activity.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pizzeria.ops.bench.batches import run_batch
from pizzeria.ops.bench.cases import (
    BASELINE_GOOD,
    BASELINE_LOCAL_GOOD,
    FAST_GOOD,
    FAST_PATH_GROUPS,
    GOOD,
    BenchError,
    Case,
    Settings,
)
from pizzeria.ops.bench.figures import machine_json
from pizzeria.ops.bench.measure import StepReporter, warm_up
from pizzeria.ops.bench.stack import stack_for

RATE_HZ = 100
PROFILE_CONCURRENCY = 50


def in_flight(settings: Settings) -> int:
    """How many workflows the profile keeps in flight: 50, or all of a smaller batch."""
    return min(PROFILE_CONCURRENCY, settings.workflows or PROFILE_WORKFLOWS)


PROFILE_WORKFLOWS = 300
PROFILE_CASES = (BASELINE_GOOD, GOOD)
#: With --compare-fast-path: the fast-path order against its bare shape of local activities.
FAST_PROFILE_CASES = (BASELINE_LOCAL_GOOD, FAST_GOOD)
ATTACH_SECONDS = 1.0  # py-spy's time to attach before the batch starts


@dataclass(frozen=True)
class Piece:
    name: str
    what: str
    markers: tuple[str, ...]  # a frame containing one of these belongs to the piece
    # A whole piece takes every sample with one of its frames, whatever runs inside it (the
    # sqlite3 calls of a ledger transaction, the imports of a module run again). The others
    # compete: the innermost frame that belongs to one decides (an activity run inside the
    # metrics interceptor is the activity's).
    whole: bool = False


PIECES = (
    Piece("ledger", "the ledger's transactions", ("pizzeria/ledger/",), whole=True),
    Piece(
        "payment provider calls",
        "the provider's HTTP client (hold and capture), on its thread",
        ("pizzeria/payments/",),
        whole=True,
    ),
    Piece("encryption", "the payload codec (AES-GCM)", ("pizzeria/temporal/codec.py",), whole=True),
    Piece(
        "serialization context",
        "the SDK enters the sandbox to find each payload's serialization context",
        ("get_serialization_context",),
        whole=True,
    ),
    Piece(
        "new workflow instance",
        "the sandbox sets up each new workflow (and runs a bare shape's module again)",
        ("_create_workflow_instance",),
        whole=True,
    ),
    Piece("metrics", "the metrics interceptor", ("pizzeria/temporal/metrics.py",)),
    Piece("fault hooks", "the fault interceptor", ("pizzeria/temporal/faults.py",)),
    Piece(
        "payload conversion",
        "values to and from JSON payloads (dataclasses, the strict converter)",
        (
            "StrictPayloadConverter.",
            "DataclassFieldsEncoder.",
            "pizzeria/temporal/type_hints.py",
            "temporalio/converter/",
        ),
    ),
    Piece(
        "payload visitor",
        "the SDK walks every payload of every activation and completion",
        ("temporalio/bridge/_visitor", "_command_aware_visitor", "visit_payload"),
    ),
    Piece(
        "workflow code",
        "the workflow's own code (for the order: the saga, menu and models; for the bare "
        "shape, also its no-op activities)",
        (
            "pizzeria/workflows.py",
            "pizzeria/saga.py",
            "pizzeria/saga_state.py",
            "pizzeria/menu.py",
            "pizzeria/order_fields.py",
            "pizzeria/models.py",
            "pizzeria/ops/baseline.py",
        ),
    ),
    Piece(
        "activity code",
        "the activities' own code",
        ("pizzeria/activities.py",),
    ),
    Piece(
        "workflow activations",
        "the rest of the SDK's workflow task handling",
        ("_handle_activation", "_RunningWorkflow.activate", "_workflow_instance.py"),
    ),
    Piece("activity tasks", "the rest of the SDK's activity task handling", ("_activity.py",)),
    Piece(
        "thread hops",
        "handing work to threads and back",
        ("concurrent/futures", "asyncio/threads.py", "run_in_executor"),
    ),
    Piece("other", "the event loop, polling, the bridge to the SDK's core", ()),
)


def piece_of(stack: str) -> str:
    """The piece a sampled stack (py-spy's raw format: frames from the root, joined by
    ``;``) belongs to: the first whole piece with a frame in it, else the piece of the
    innermost frame that belongs to one."""
    for piece in PIECES:
        if piece.whole and any(marker in stack for marker in piece.markers):
            return piece.name
    for frame in reversed(stack.split(";")):
        for piece in PIECES:
            if any(marker in frame for marker in piece.markers):
                return piece.name
    return PIECES[-1].name


def samples_by_piece(raw: str) -> collections.Counter[str]:
    """py-spy's raw output (one ``frames count`` line per distinct stack), by piece."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            counts[piece_of(stack)] += int(count)
    return counts


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError("py-spy is missing: pip install py-spy (it is in the dev extra)")
    return found


async def profiled_batch(
    client: Any, stack: Any, case: Case, settings: Settings, run: int
) -> tuple[collections.Counter[str], int]:
    """One batch of ``case`` with py-spy on the worker: samples by piece, and workflows."""
    output = stack.data_dir / f"profile-{case.name}-{run}.txt"
    command = [py_spy(), "record", "--pid", str(stack.workers[0].pid), "--rate", str(RATE_HZ)]
    command += ["--gil", "--nonblocking", "--format", "raw", "--output", str(output)]
    spy = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    await asyncio.sleep(ATTACH_SECONDS)
    if spy.returncode is not None:
        assert spy.stderr is not None
        reason = " ".join((await spy.stderr.read()).decode(errors="replace").split())[-300:]
        raise BenchError(f"py-spy could not attach to the worker: {reason}")
    count = settings.workflows or PROFILE_WORKFLOWS
    try:
        await run_batch(client, stack, case, in_flight(settings), count, f"p{run}-{case.name}", run)
    finally:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.communicate(), timeout=30)
    if not output.exists():
        raise BenchError("py-spy wrote no profile: see its message above")
    return samples_by_piece(output.read_text()), count


def profile_cases(settings: Settings) -> tuple[Case, Case]:
    """The bare shape and the order profiled: the fast path's with --compare-fast-path."""
    return FAST_PROFILE_CASES if settings.groups == FAST_PATH_GROUPS else PROFILE_CASES


async def run_profile(settings: Settings, step: StepReporter) -> dict[str, Any]:
    """Both shapes, batch after batch on one stack; ms per workflow of each piece."""
    cases = profile_cases(settings)
    samples = {case.name: collections.Counter[str]() for case in cases}
    workflows = dict.fromkeys(samples, 0)
    async with stack_for(settings) as (stack, client):
        await warm_up(client, stack, cases, "profile-warm")
        for run in range(settings.repeat):
            for case in cases:
                step(f"run {run + 1}/{settings.repeat}: {case.name}, profiled")
                counts, count = await profiled_batch(client, stack, case, settings, run)
                samples[case.name] += counts
                workflows[case.name] += count
    return profile_report(samples, workflows, settings)


def profile_report(
    samples: dict[str, collections.Counter[str]], workflows: dict[str, int], settings: Settings
) -> dict[str, Any]:
    def ms_per_workflow(case: str, piece: str) -> float:
        return round(1000 * samples[case][piece] / RATE_HZ / workflows[case], 2)

    bare, order = samples  # the bare shape's, then the order's
    rows: list[dict[str, Any]] = [
        {
            "piece": piece.name,
            "what": piece.what,
            "baseline_ms": ms_per_workflow(bare, piece.name),
            "order_ms": ms_per_workflow(order, piece.name),
        }
        for piece in PIECES
    ]
    for row in rows:
        row["difference_ms"] = round(row["order_ms"] - row["baseline_ms"], 2)
    rows.sort(key=lambda row: -row["difference_ms"])
    return {
        "settings": {
            "repeat": settings.repeat,
            "concurrency": in_flight(settings),
            "workflows_per_batch": settings.workflows or PROFILE_WORKFLOWS,
            "rate_hz": RATE_HZ,
        },
        "machine": machine_json(),
        "totals_ms": {
            case: round(sum(ms_per_workflow(case, p.name) for p in PIECES), 2) for case in samples
        },
        "pieces": rows,
    }
