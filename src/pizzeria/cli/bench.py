"""The ``pizzeria bench`` command: a run of `pizzeria.ops.bench`, its progress and report.

Its options are checked before anything starts, by `pizzeria.cli.bench_options`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pizzeria.cli.bench_options import (
    check_batch_size,
    check_instead_options,
    check_passthrough,
    check_worker_options,
    concurrency_of,
    one_mode,
    server_options_of,
    setups_of,
)
from pizzeria.cli.common import err, fail, out
from pizzeria.cli.options import flag_option, int_option, json_option, ledger_option_of
from pizzeria.ops.bench.ablation import VARIANTS, run_ablation
from pizzeria.ops.bench.cases import (
    FAST_PATH_GROUPS,
    PAIRS,
    BenchError,
    Settings,
)
from pizzeria.ops.bench.costs import SHAPES, ShapeCost, costs_report, measure_costs
from pizzeria.ops.bench.measure import run_benchmark, run_side_by_side
from pizzeria.ops.bench.peer import PEERS, PeerError, check_peer
from pizzeria.ops.bench.profile import (
    PROFILE_CASES,
    PROFILE_WORKFLOWS,
    RATE_HZ,
    in_flight,
    py_spy,
    run_profile,
)
from pizzeria.ops.bench.report import (
    PlotUnavailable,
    ablation_table,
    costs_table,
    draw_plot,
    print_bench_report,
    print_side_by_side,
    print_versus,
    profile_table,
    pyplot,
)
from pizzeria.ops.bench.stack import compile_package, stack_for
from pizzeria.ops.bench.versus import batch_order, run_versus
from pizzeria.ops.processes import WorkerProcessError
from pizzeria.temporal import otel_env, tracing
from pizzeria.temporal.devserver import DevServerError


@click.command()
@json_option
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw throughput and p99 against concurrency to this PNG (needs matplotlib)",
)
@flag_option("--full", help="Also 200 workflows in flight")
@flag_option(
    "--ablation",
    help="Instead: the good order with each optional piece switched off in turn (default: 50 "
    "in flight)",
)
@flag_option(
    "--costs",
    help="Instead: history events, payload bytes and billable actions of one workflow per shape",
)
@flag_option(
    "--profile",
    help="Instead: sample the worker with py-spy while it runs the good order and its bare "
    "shape (50 in flight), and show the worker's time per workflow, piece by piece",
)
@int_option("--repeat", 1, 9, default=3, help="Runs; every figure is the median over them")
@int_option(
    "--concurrency",
    1,
    500,
    multiple=True,
    help="Workflows in flight; repeat for several [default: 1, 10, 50 (and 200 with --full)]",
)
@int_option(
    "--workflows",
    1,
    2000,
    help="Workflows per batch (two batches per case) [default: 12, 100, 150, 400 by concurrency]",
)
@int_option(
    "--workers",
    1,
    4,
    multiple=True,
    help="Worker processes; repeat to compare several counts side by side [default: 1]",
)
@ledger_option_of(
    "The workers' ledger: sqlite (a new file per stack) or a postgresql:// URL (a new "
    "schema in that database per stack, dropped after); repeat to compare [default: sqlite]",
    "ledgers",
    "sqlite|URL",
    multiple=True,
)
@click.option(
    "--worker-option",
    "worker_options",
    multiple=True,
    metavar="NAME=VALUE",
    help="A Worker option passed to build_worker, e.g. max_cached_workflows=100; repeatable",
)
@click.option(
    "--server-option",
    "server_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A dynamic config value for the bench's dev servers, after pizzeria's own (the last "
    "value of a key wins), e.g. system.forceSearchAttributesCacheRefreshOnRead=true; "
    "repeatable",
)
@click.option(
    "--sandbox-passthrough",
    multiple=True,
    metavar="MODULE",
    help="Pass this module (and its children) through the workflow sandbox; repeatable",
)
@flag_option(
    "--compare-fast-path",
    help="Measure the good order's fast path (local activities) against its regular path "
    "and both bare shapes, instead of the usual pairs [default concurrency: 1, 50]",
)
@click.option(
    "--peer",
    type=click.Choice(PEERS),
    help="Instead: the card hold through the API (staff's fast-path pickup: POST /orders "
    "with settings.fast_path) and the fast-path pickup order beside this peer's whole "
    "five-step workflow, in one run, with the ratios and their targets (about 4 minutes) "
    "[default concurrency: 1, 50] (DBOS comes with the bench extra)",
)
def bench(
    as_json: bool,
    plot: Path | None,
    full: bool,
    ablation: bool,
    costs: bool,
    profile: bool,
    repeat: int,
    concurrency: tuple[int, ...],
    workflows: int | None,
    workers: tuple[int, ...],
    ledgers: tuple[str, ...],
    worker_options: tuple[str, ...],
    server_options: tuple[str, ...],
    sandbox_passthrough: tuple[str, ...],
    compare_fast_path: bool,
    peer: str | None,
) -> None:
    """Measure what the order saga costs on top of the bare engine, in one run.

    Starts its own in-memory dev server and worker on 127.0.0.1 (free ports), with the
    order's timer and the driver search at zero, and compares the good and the bad-card
    order with bare workflows of as many no-op activities. Several --ledger or --workers
    values run each setup in turn, within each run, and compare their throughput.
    """
    check_worker_options(worker_options)
    server_settings = server_options_of(server_options)
    check_passthrough(sandbox_passthrough)
    mode = one_mode(peer=peer, costs=costs, ablation=ablation, profile=profile)
    if mode is not None:
        check_instead_options(mode, compare_fast_path, ledgers, workers, plot, concurrency)
    untraced()
    settings = Settings(
        repeat=repeat,
        concurrency=concurrency_of(concurrency, full, ablation, compare_fast_path, peer),
        workflows=workflows,
        worker_options=worker_options,
        server_options=server_settings,
        sandbox_passthrough=sandbox_passthrough,
        groups=FAST_PATH_GROUPS if compare_fast_path else PAIRS,
    )
    check_batch_size(workflows, settings.concurrency, mode)
    setups = setups_of(settings, ledgers, workers)
    if plot is not None:
        if len(setups) > 1:
            raise click.UsageError("--plot draws one setup: give one --ledger and one --workers")
        plot_or_fail(None, plot)  # before a long run, not after it
    compile_package()
    if ran_instead(setups[0], as_json, peer=peer, costs=costs, ablation=ablation, profile=profile):
        return
    report = run_with_progress(setups)
    show = print_side_by_side if len(setups) > 1 else print_bench_report
    print_either(as_json, report, lambda: show(report, out))  # the figures first, whatever
    if plot is not None:
        plot_or_fail(report, plot)
        err.print(f"Plot written to {plot}")


def ran_instead(
    setup: Settings, as_json: bool, *, peer: str | None, costs: bool, ablation: bool, profile: bool
) -> bool:
    """--peer, --costs, --ablation or --profile: that run instead of the benchmark, printed;
    False when none of them is asked for."""
    if peer is not None:
        versus = run_peer_with_progress(setup, peer)
        print_either(as_json, versus, lambda: print_versus(versus, out))
    elif costs:
        measured = run_costs(setup)
        print_either(as_json, costs_report(measured), lambda: out.print(costs_table(measured)))
    elif ablation or profile:
        report = run_instead_with_progress(setup, ablation)
        table = ablation_table if ablation else profile_table
        print_either(as_json, report, lambda: out.print(table(report)))
    else:
        return False
    return True


def untraced() -> None:
    """The bench measures stacks without tracing: the ``OTEL_*`` variables, which would
    trace its client, its API and its workers, are dropped for this run, and said to be."""
    if otel_env.asked_for():
        err.print("note: the bench measures untraced stacks; the OTEL_* variables are ignored")
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        del os.environ[name]
    tracing.use_tracer_provider(None)


def print_either(as_json: bool, report: Any, text: Callable[[], None]) -> None:
    """The report as one JSON object, else as ``text`` prints it."""
    if as_json:
        out.print_json(json.dumps(report))
    else:
        text()


def run_with_progress(setups: list[Settings]) -> dict[str, Any]:
    """The benchmark, with a progress bar on stderr; one line and exit 1 if it fails."""
    settings = setups[0]
    total = settings.repeat * settings.batches_per_run * len(setups)
    err.print(
        "Timer and driver search at zero: order settings prep_seconds=0, "
        "PIZZERIA_DRIVER_SECONDS=0, PIZZERIA_DRIVER_PROBABILITY=1. "
        f"{settings.repeat} run(s), {len(settings.concurrency)} concurrency level(s), "
        f"{total} batches, a fresh in-memory dev server per group of cases"
        + (f", {len(setups)} setups side by side." if len(setups) > 1 else ".")
    )
    if len(setups) > 1:
        return with_progress(total, lambda step: run_side_by_side(setups, step))
    return with_progress(total, lambda step: run_benchmark(settings, step))


def run_peer_with_progress(settings: Settings, peer: str) -> dict[str, Any]:
    """``--peer``: ours beside the peer, with a progress bar; one line if it cannot run."""
    try:
        check_peer(peer)  # before anything starts
    except PeerError as error:
        fail(str(error))
    total = settings.repeat * len(settings.concurrency) * len(batch_order(peer))
    err.print(
        f"Beside {peer}: the hold through pizzeria api, the fast-path pickup, a workflow "
        f"with no step and {peer}'s five-step workflow, {settings.repeat} run(s), {total} "
        "batches, a fresh stack and API per run."
    )
    return with_progress(total, lambda step: run_versus(settings, peer, step))


def run_instead_with_progress(settings: Settings, ablation: bool) -> dict[str, Any]:
    """The ablation, or else the profile, with a progress bar."""
    if ablation:
        total = settings.repeat * len(VARIANTS) * len(settings.concurrency) * 4
        err.print(
            f"Ablation: {len(VARIANTS)} variants (everything on, then each optional piece "
            f"off), {settings.repeat} run(s), {total} batches, a fresh dev server per variant "
            "and run."
        )
        return with_progress(total, lambda step: run_ablation(settings, step))
    try:
        py_spy()  # before anything starts
    except BenchError as error:
        fail(str(error))
    total = settings.repeat * len(PROFILE_CASES)
    err.print(
        f"Profile: py-spy samples the worker at {RATE_HZ} Hz (the thread holding the GIL) "
        f"through {total} batches of {settings.workflows or PROFILE_WORKFLOWS} workflows, "
        f"{in_flight(settings)} in flight, on one stack."
    )
    return with_progress(total, lambda step: run_profile(settings, step))


def with_progress(
    total: int, work: Callable[[Callable[[str], None]], Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    """Run the work with a progress bar on stderr; one line and exit 1 if it fails."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=total)
        started = 0

        def step(description: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started += 1
            progress.update(task, description=description)
            if not err.is_terminal:  # no bar is drawn: one line per batch instead
                err.print(f"[{started}/{total}] {description}", markup=False)

        try:
            report = asyncio.run(work(step))
        except (BenchError, DevServerError, WorkerProcessError, PeerError) as error:
            progress.stop()
            fail(str(error))
        progress.advance(task)
    return report


def run_costs(settings: Settings) -> list[ShapeCost]:
    """One workflow per shape on a fresh stack; one line and exit 1 if it fails."""
    err.print(f"Costs: one workflow of each shape ({', '.join(SHAPES)}) on a fresh stack.")

    async def measuring() -> list[ShapeCost]:
        async with stack_for(settings) as (stack, client):
            return await measure_costs(client, stack.task_queue)

    try:
        return asyncio.run(measuring())
    except (BenchError, DevServerError, WorkerProcessError) as error:
        fail(str(error))


def plot_or_fail(report: dict[str, Any] | None, path: Path) -> None:
    """Draw the report's plot to ``path``; without a report, only check that it can be."""
    try:
        if report is None:
            folder = path.parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                fail(f"cannot write the plot to {path}: {folder} is not a folder it can write", 2)
            pyplot()
        else:
            draw_plot(report, path)
    except PlotUnavailable as error:
        fail(str(error), 2)
