"""What ``pizzeria bench`` checks of its options before anything starts: one kind of run and
what it takes, the Worker and server options, the sandbox's modules and the ledgers; and
the concurrency levels and setups the options come to."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import click

from pizzeria.cli.common import fail
from pizzeria.ledger import is_postgres_location
from pizzeria.ops.bench.cases import (
    BASE_CONCURRENCY,
    FAST_PATH_CONCURRENCY,
    FULL_CONCURRENCY,
    SQLITE,
    BenchError,
    ServerOptionError,
    Settings,
    WorkerOptionError,
    parse_server_option,
    parse_worker_option,
)
from pizzeria.ops.bench.ledgers import run_sql
from pizzeria.ops.bench.versus import PEER_CONCURRENCY

ABLATION_CONCURRENCY = 50


def one_mode(**asked: bool | str | None) -> str | None:
    """The one kind of run asked for besides the benchmark (``--peer``...), or None; two
    of them are a usage error, not a silent choice."""
    named = [f"--{name}" for name, value in asked.items() if value]
    if len(named) > 1:
        raise click.UsageError(f"{' and '.join(named)} are different runs: choose one")
    return named[0] if named else None


def check_instead_options(
    mode: str,
    compare_fast_path: bool,
    ledgers: tuple[str, ...],
    workers: tuple[int, ...],
    plot: Path | None,
    concurrency: tuple[int, ...],
) -> None:
    """What a run instead of the benchmark (``mode``: ``--peer``...) does not take is a
    usage error, before anything starts."""
    if compare_fast_path and mode != "--profile":
        raise click.UsageError(
            f"--compare-fast-path changes the benchmark's run and --profile's, not {mode}'s"
        )
    if len(ledgers) > 1 or len(workers) > 1:
        raise click.UsageError(f"{mode} runs one setup: give one --ledger and one --workers")
    if plot is not None:
        raise click.UsageError(f"--plot draws the benchmark's own run, not {mode}'s")
    if concurrency and mode in ("--profile", "--costs"):
        pace = "50 in flight" if mode == "--profile" else "one workflow of each shape"
        raise click.UsageError(
            f"{mode} always runs {pace}: leave out --concurrency, which it does not take"
        )


def check_batch_size(workflows: int | None, concurrency: tuple[int, ...], mode: str | None) -> None:
    """A batch of ``--workflows`` must hold at least the most in flight asked for, in the
    runs that follow ``--concurrency``."""
    paced = mode not in ("--profile", "--costs")  # those two keep their own pace
    if workflows is not None and paced and workflows < max(concurrency):
        raise click.UsageError(
            f"--workflows {workflows} cannot keep {max(concurrency)} in flight: a "
            "batch needs at least as many workflows as it keeps in flight"
        )


def check_passthrough(modules: tuple[str, ...]) -> None:
    """Each ``--sandbox-passthrough`` module must be importable here (the worker runs
    with the same packages)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise click.BadParameter(
                f"no module named {module!r} here", param_hint="--sandbox-passthrough"
            )


def check_worker_options(worker_options: tuple[str, ...]) -> None:
    for option in worker_options:
        try:
            parse_worker_option(option)
        except WorkerOptionError as error:
            raise click.BadParameter(str(error), param_hint="--worker-option") from None


def server_options_of(server_options: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(parse_server_option(option) for option in server_options)
    except ServerOptionError as error:
        raise click.BadParameter(str(error), param_hint="--server-option") from None


def concurrency_of(
    given: tuple[int, ...],
    full: bool,
    ablation: bool,
    compare_fast_path: bool,
    peer: str | None = None,
) -> tuple[int, ...]:
    """The levels asked for, else the default of the kind of run."""
    if given:
        return tuple(sorted(set(given)))
    if peer:
        return PEER_CONCURRENCY
    if ablation:
        return (ABLATION_CONCURRENCY,)
    if compare_fast_path:
        return FAST_PATH_CONCURRENCY
    return FULL_CONCURRENCY if full else BASE_CONCURRENCY


def setups_of(
    settings: Settings, ledgers: tuple[str, ...], workers: tuple[int, ...]
) -> list[Settings]:
    """Each ledger with each worker count (checked before anything starts)."""
    for ledger in ledgers:
        check_ledger_option(ledger)
    return [
        dataclasses.replace(settings, ledger=ledger, workers=count)
        for ledger in dict.fromkeys(ledgers or (SQLITE,))
        for count in sorted(set(workers or (1,)))
    ]


def check_ledger_option(ledger: str) -> None:
    """``sqlite`` or a PostgreSQL URL we can reach, before anything starts."""
    if ledger == SQLITE:
        return
    if not is_postgres_location(ledger):
        raise click.BadParameter(
            f"{ledger!r}: give sqlite or a postgresql:// URL", param_hint="--ledger"
        )
    try:
        run_sql(ledger, "SELECT 1")
    except BenchError as error:
        fail(str(error))
