"""The ``pizzeria chaos`` command: a run of `pizzeria.ops.chaos`, its progress and summary."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pizzeria.cli.common import err, out
from pizzeria.cli.options import (
    flag_option,
    float_option,
    int_option,
    json_option,
    ledger_option_of,
)
from pizzeria.ledger import LedgerNotFound, SchemaTooNew, SchemaTooOld, open_ledger
from pizzeria.menu import INITIAL_STOCK
from pizzeria.ops.chaos.plan import DEFAULT_FAULTS, DEFAULT_PROVIDER_FAULTS, ChaosSettings
from pizzeria.ops.chaos.result import ChaosResult, print_chaos_summary
from pizzeria.ops.chaos.run import ChaosRun
from pizzeria.payments.provider.faults import FaultFileError
from pizzeria.payments.provider.faults import parse_faults as parse_provider_faults
from pizzeria.temporal import otel_env
from pizzeria.temporal.devserver import DevServerError
from pizzeria.temporal.faults import FaultSyntaxError, parse_faults


@click.command()
@int_option("--orders", 1, 100_000, default=300, help="Orders to place")
@int_option("--concurrency", 1, 500, default=20, help="Orders open at once")
@int_option("--workers", 1, 16, default=2, help="Worker processes on the one ledger")
@int_option(
    "--worker-kills",
    0,
    1000,
    default=3,
    help="Times a worker chosen at random is killed with SIGKILL and started again",
)
@int_option(
    "--server-restarts",
    0,
    100,
    default=1,
    help="Times the server stops and starts again on the same history",
)
@int_option(
    "--rolling-restarts",
    0,
    100,
    default=1,
    help="Times every worker is stopped with SIGTERM in turn and started again",
)
@ledger_option_of(
    "The workers' shared ledger: a new SQLite file or an empty PostgreSQL database "
    "(postgresql://...) [default: ledger.db in the data folder]"
)
@float_option(
    "--cancel-rate", 0, 1, default=0.1, help="Share of orders cancelled as `pizzeria cancel` does"
)
@float_option("--bad-card-rate", 0, 1, default=0.1, help="Share of orders with the bad card")
@click.option("--seed", type=int, help="Seed of orders, faults and timing [default: random]")
@click.option(
    "--faults",
    default=DEFAULT_FAULTS,
    help="Faults for the workers, STEP=MODE[:N][@RATE],... [default: a mix of every kind]",
)
@click.option(
    "--provider-faults",
    default=DEFAULT_PROVIDER_FAULTS,
    help="Faults for the payment provider, OPERATION=MODE[/ARG][:N][@RATE],... (see "
    "docs/payments.md); 'none' switches them off [default: 5xx, lost answers, refused "
    "connections and slow answers at random]",
)
@int_option(
    "--provider-restarts",
    0,
    100,
    default=1,
    help="Times the payment provider is killed with SIGKILL and started again",
)
@int_option(
    "--stock", 0, 10**9, default=INITIAL_STOCK, help="Portions of each ingredient at the start"
)
@float_option(
    "--timeout",
    10,
    24 * 3600,
    default=900.0,
    help="Seconds before giving up on orders still open",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the history, ledger and logs here (new or empty) [default: a temporary folder]",
)
@flag_option("--keep-data", help="Keep the temporary folder afterwards")
@flag_option("--fast-path", help="Every order runs its ledger steps as local activities")
@json_option
def chaos(ledger_location: str | None, seed: int | None, as_json: bool, **options: Any) -> None:
    """Place orders while killing workers, restarting the server and the payment provider
    and injecting faults into both, then check the ledger (and the provider's books)."""
    otel_env.check_env()  # before anything starts
    # The other options are ChaosSettings' fields, by name.
    options["provider_faults"] = checked_provider_faults(options["provider_faults"])
    check_options(options["faults"], options["data_dir"])
    if ledger_location is not None:
        refuse_a_used_ledger(ledger_location)
    settings = ChaosSettings(
        **options,
        ledger=ledger_location,
        seed=seed if seed is not None else random.SystemRandom().randrange(1_000_000),
    )
    folder = settings.data_dir or Path(tempfile.mkdtemp(prefix="pizzeria-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    result = run_or_explain(settings, folder)
    keep = settings.keep_data or settings.data_dir is not None or not result.ok
    show_result(result, folder, keep, as_json)
    if not result.ok:
        raise SystemExit(1)


def check_options(faults: str, data_dir: Path | None) -> None:
    """What click cannot check by itself, before anything starts."""
    try:
        parse_faults(faults)
    except FaultSyntaxError as error:
        raise click.BadParameter(str(error), param_hint="--faults") from None
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise click.BadParameter(f"{data_dir} is not empty", param_hint="--data-dir")


def checked_provider_faults(text: str) -> str:
    """The provider's faults as its faults file takes them; 'none' (or nothing): ""."""
    if text.strip().lower() in ("", "none", "off"):
        return ""
    try:
        parse_provider_faults(text)
    except FaultFileError as error:
        raise click.BadParameter(str(error), param_hint="--provider-faults") from None
    return text.strip()


def refuse_a_used_ledger(location: str) -> None:
    """The check compares the ledger with the orders of chaos's own new server: any row
    from before would be a run that server never heard of."""
    try:
        existing = open_ledger(location, read_only=True)
    except LedgerNotFound:
        return
    except (SchemaTooNew, SchemaTooOld) as error:
        raise click.BadParameter(
            f"{error}; chaos needs a new ledger (a new file or an empty database)",
            param_hint="--ledger",
        ) from None
    shown = existing.location
    existing.close()
    raise click.BadParameter(
        f"{shown} already holds a ledger: chaos checks it against the orders of its own "
        "new server, so give it a new file or an empty database",
        param_hint="--ledger",
    )


def run_or_explain(settings: ChaosSettings, folder: Path) -> ChaosResult:
    """The run; should it stop early, one line on why and where its evidence is."""
    try:
        return run_with_progress(settings, folder, err)
    except (KeyboardInterrupt, DevServerError):
        raise
    except Exception as error:
        reason = (str(error).splitlines() or [""])[0]
        err.print(f"error: chaos stopped: {type(error).__name__}: {reason}", markup=False)
        err.print(f"History, ledger and logs kept in {folder}", markup=False)
        raise SystemExit(1) from None


def show_result(result: ChaosResult, folder: Path, keep: bool, as_json: bool) -> None:
    """The summary (or one JSON object) on stdout; the folder removed unless kept."""
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        result.data_dir = None
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    print_chaos_summary(result, out)
    if keep:
        out.print(f"History, ledger and logs kept in {folder}")


def run_with_progress(settings: ChaosSettings, folder: Path, console: Console) -> ChaosResult:
    """Run with a progress bar on stderr; stop everything started, whatever happens."""
    progress = Progress(
        TextColumn("[bold]chaos[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not console.is_terminal,  # a file or a pipe gets the plain lines alone
    )
    run = ChaosRun(settings, folder, progress, say=lambda text: progress.console.print(text))

    async def main() -> ChaosResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await run.run()
        except asyncio.CancelledError:
            # Ctrl-C or SIGTERM: stop every process now. asyncio.run then waits for the
            # monkey's threads (a provider or a worker being started again, up to a minute
            # each); each ends as soon as what it waits for has stopped.
            run.fleet.stop_all(grace=10.0)
            raise

    try:
        with progress:
            return asyncio.run(main())
    except asyncio.CancelledError:  # SIGTERM: stopped like a Ctrl-C
        raise KeyboardInterrupt from None
    finally:
        # Also after Ctrl-C: a second Ctrl-C must not leave a worker or the server behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            run.fleet.stop_all(grace=10.0)
        finally:
            signal.signal(signal.SIGINT, previous)
