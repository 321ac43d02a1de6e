"""The ``pizzeria doctor`` command: every check, one line each, exit 1 if any fails."""

from __future__ import annotations

import asyncio
import json

import click
from rich.console import Console
from rich.text import Text

from pizzeria import config
from pizzeria.models import TASK_QUEUE
from pizzeria.ops.doctor.checks import (
    FAIL,
    OK,
    SKIP,
    Verdict,
    check_codec_key,
    check_ledger,
    check_payloads,
    check_pollers,
    check_search_attribute,
    check_temporal,
    skipped,
)

STYLES = {OK: "green", FAIL: "bold red"}


async def diagnose(address: str | None, ledger_location: str, task_queue: str) -> list[Verdict]:
    """Every check in order; one that needs a failed one is skipped, saying which."""
    temporal, client = await check_temporal(address)
    verdicts = [temporal]
    if client is not None:
        verdicts.append(await check_search_attribute(client))
        verdicts.append(await check_pollers(client, task_queue))
    else:
        verdicts += [
            skipped("search attribute", "no connection to Temporal"),
            skipped("pollers", "no connection to Temporal"),
        ]
    verdicts.append(await asyncio.to_thread(check_ledger, ledger_location))
    key, keys = check_codec_key()
    verdicts.append(key)
    if client is None:
        verdicts.append(skipped("payloads", "no connection to Temporal"))
    elif keys is None:
        verdicts.append(skipped("payloads", "no codec key"))
    else:
        verdicts.append(await check_payloads(client, keys))
    return verdicts


def print_verdicts(verdicts: list[Verdict], out: Console) -> None:
    width = max(len(verdict.check) for verdict in verdicts)
    for verdict in verdicts:
        out.print(
            Text.assemble(
                (verdict.verdict.ljust(5), STYLES.get(verdict.verdict, "yellow")),
                f"{verdict.check.ljust(width)}  {verdict.detail}",
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
@click.option("--address", help="Temporal address [default: SDK env config, else localhost:7233]")
@click.option(
    "--ledger",
    "ledger_location",
    metavar="FILE|URL",
    help="The ledger: a SQLite file or a postgresql:// URL "
    "[default: $PIZZERIA_LEDGER, else .pizzeria/ledger.db]",
)
@click.option("--task-queue", default=TASK_QUEUE, show_default=True, help="Task queue to look at")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object")
def doctor(
    address: str | None, ledger_location: str | None, task_queue: str, as_json: bool
) -> None:
    """Check this machine's setup: Temporal, search attribute, workers, ledger, codec key.

    Changes nothing: the ledger is opened read-only and the codec key is only read.
    Exits 1 when a check fails.
    """
    location = ledger_location or config.ledger_location()
    verdicts = asyncio.run(diagnose(address, location, task_queue))
    ok = not any(verdict.failed for verdict in verdicts)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [v.to_json() for v in verdicts]}))
    else:
        print_verdicts(verdicts, Console(highlight=False, soft_wrap=True))
    if not ok:
        raise SystemExit(1)
