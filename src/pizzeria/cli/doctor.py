"""The ``pizzeria doctor`` command: every check of `pizzeria.ops.doctor`, one line each."""

from __future__ import annotations

import json

import click
from rich.text import Text

from pizzeria import config
from pizzeria.cli.common import out, run, shown
from pizzeria.cli.options import address_option, json_option, ledger_option
from pizzeria.models import TASK_QUEUE
from pizzeria.ops.doctor import FAIL, OK, SKIP, Verdict, diagnose

STYLES = {OK: "green", FAIL: "bold red"}


def print_verdicts(verdicts: list[Verdict]) -> None:
    width = max(len(verdict.check) for verdict in verdicts)
    for verdict in verdicts:
        out.print(
            Text.assemble(
                (verdict.verdict.ljust(5), STYLES.get(verdict.verdict, "yellow")),
                f"{verdict.check.ljust(width)}  {shown(verdict.detail)}",
            )
        )
    failed = [verdict.check for verdict in verdicts if verdict.verdict == FAIL]
    unchecked = [verdict.check for verdict in verdicts if verdict.verdict == SKIP]
    if failed:
        out.print(
            f"{len(failed)} of {len(verdicts)} checks failed: {', '.join(failed)}"
            + (f"; not checked: {', '.join(unchecked)}" if unchecked else "")
        )
    else:
        out.print(f"All {len(verdicts)} checks passed.")


@click.command()
@address_option
@ledger_option
@click.option("--task-queue", default=TASK_QUEUE, show_default=True, help="Task queue to look at")
@json_option
def doctor(
    address: str | None, ledger_location: str | None, task_queue: str, as_json: bool
) -> None:
    """Check this machine's setup: Temporal, search attribute, workers, ledger, codec key,
    the latest orders' payloads, payment provider.

    Changes nothing: the ledger is opened read-only and the codec key is only read.
    Exits 1 when a check fails.
    """
    location = ledger_location or config.ledger_location()
    verdicts = run(diagnose(address, location, task_queue))
    ok = not any(verdict.failed for verdict in verdicts)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [v.to_json() for v in verdicts]}))
    else:
        print_verdicts(verdicts)
    if not ok:
        raise SystemExit(1)
