"""Running the service: a worker, and the demo.

The dev server and the codec endpoint are `pizzeria.cli.server`'s.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, NoReturn

import click

from pizzeria.api import DEFAULT_PORT as DEFAULT_PAGE_PORT
from pizzeria.cli.common import (
    UserError,
    client_or_fail,
    err,
    ledger_at,
    out,
    run,
    stop_on_sigterm,
)
from pizzeria.cli.faults import faults_in_force
from pizzeria.cli.options import (
    address_option,
    flag_option,
    float_option,
    int_option,
    json_option,
    ledger_option,
    refuse_shared_ports,
)
from pizzeria.cli.orders import print_outcome
from pizzeria.client import OrderOutcome
from pizzeria.config import DEFAULT_GRACEFUL_SHUTDOWN_SECONDS, READY_LINE, DriverSettingError
from pizzeria.demo import DemoPorts, run_demo
from pizzeria.models import TASK_QUEUE, dollars
from pizzeria.payments.process import DEFAULT_PORT as DEFAULT_PAYMENTS_PORT
from pizzeria.payments.provider_config import shown_url
from pizzeria.statements import money_line
from pizzeria.temporal import otel_env
from pizzeria.temporal.codec import key_file, load_keys
from pizzeria.temporal.codec_server import DEFAULT_PORT as DEFAULT_CODEC_PORT
from pizzeria.temporal.connection import namespace_or_fail
from pizzeria.temporal.devserver import GRPC_PORT, UI_PORT
from pizzeria.temporal.logs import configure_worker_logging
from pizzeria.temporal.metrics import worker_runtime
from pizzeria.worker import (
    WorkerScale,
    build_worker,
    served_activities,
    stop_requested,
)

# -- worker ------------------------------------------------------------------------------


#: How long a worker waits for a server on this machine that refuses it: one started a
#: moment before (`pizzeria server` in the next terminal) answers within a few seconds.
SERVER_START_SECONDS = 10.0


def payments_line(payments: object) -> str:
    """Where the worker moves money: a URL, or the data folder's provider it follows."""
    url = shown_url(payments) if hasattr(payments, "base_url") else type(payments).__name__
    follow = getattr(payments, "follow", None)
    if follow is None:
        return f"Payments through {url}"
    if not follow.exists():
        return (
            f"Payments through the data folder's provider, which does not run yet (no "
            f"{follow}): steps that move money fail until it runs, and are retried"
        )
    return f"Payments through {url} (the data folder's provider, as its {follow.name} says)"


@click.command()
@address_option
@ledger_option
@click.option("--task-queue", default=TASK_QUEUE, show_default=True, help="Task queue to poll")
@int_option(
    "--metrics-port",
    1,
    65535,
    help="Serve Prometheus metrics (the SDK's and ours) on 127.0.0.1:PORT/metrics",
)
@flag_option(
    "--plain-payloads",
    help="Answer in plain JSON, for clients without the codec (the exercise's, `temporal`)",
)
@int_option(
    "--max-concurrent-activities",
    1,
    10_000,
    help="Steps this worker runs at once; more wait on the server [default: 100]",
)
@int_option(
    "--max-concurrent-workflow-tasks",
    2,
    10_000,
    help="Workflow tasks this worker handles at once [default: 100]",
)
@flag_option(
    "--poller-autoscaling",
    help="Let the server's hints scale the pollers, up to --max-pollers [default: fixed 5]",
)
@int_option(
    "--max-pollers",
    1,
    1000,
    help="Pollers of each kind (workflow, activity): fixed, or the autoscaling ceiling "
    "[default: 5, or 100 with --poller-autoscaling]",
)
@float_option(
    "--graceful-shutdown",
    0,
    3600,
    name="graceful_shutdown_seconds",
    default=DEFAULT_GRACEFUL_SHUTDOWN_SECONDS,
    metavar="SECONDS",
    help="On SIGTERM or Ctrl-C, how long steps in flight may finish before they are "
    "cancelled and handed back to Temporal",
)
def worker(
    address: str | None,
    ledger_location: str | None,
    task_queue: str,
    metrics_port: int | None,
    plain_payloads: bool,
    **scale_options: Any,
) -> None:
    """Run the worker: the order workflow and its activities, against the ledger."""
    configure_worker_logging()
    # The stripe library logs every request and answer at INFO, and as "error received"
    # the answer a refund's tombstone expects (its key refused with other parameters): its
    # warnings only. STRIPE_LOG=info still prints its lines to stderr.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    scale = WorkerScale(**scale_options)  # the other options are its fields, by name
    ledger = ledger_at(ledger_location, create=True)
    # A typo in these would fail every step (or every driver search) this worker runs:
    # PIZZERIA_DRIVER_*, PIZZERIA_FAULTS and the faults file are read now, one line, exit 2.
    try:
        activities = served_activities(ledger)
    except DriverSettingError as error:
        raise UserError(str(error)) from None
    injected = faults_in_force(activities.faults)

    key_given = codec_key_given()

    async def serve() -> None:
        runtime = worker_runtime(metrics_port)
        client = await client_or_fail(
            address, runtime, encrypt=not plain_payloads, wait_for_start=SERVER_START_SECONDS
        )
        say_if_key_made(key_given)
        await namespace_or_fail(client)
        stop = stop_requested(again=stop_at_once)
        options = scale.worker_options()
        async with build_worker(client, activities, task_queue=task_queue, **options):
            out.print(f"{READY_LINE} {task_queue!r}, ledger {ledger.location}. Ctrl-C stops.")
            out.print(scale.describe())
            out.print(payments_line(activities.implementation.payments))
            traces = otel_env.where_traces_go()
            if traces:
                out.print(traces, markup=False)
            if injected:  # every step they name fails on purpose: never by surprise
                out.print(
                    "Faults in force (docs/faults.md; `pizzeria faults clear` ends the "
                    "file's): " + ", ".join(str(fault) for fault in injected.values()),
                    markup=False,
                )
            if metrics_port:
                out.print(f"Metrics on http://127.0.0.1:{metrics_port}/metrics")
            await stop.wait()
            grace = scale.graceful_shutdown_seconds
            out.print(
                f"Stopping: no new work; steps in flight get up to {grace:g} s"
                " to finish, then are handed back to Temporal (Ctrl-C again: at once)."
            )
        out.print("Worker stopped.")

    run(serve())


def codec_key_given() -> bool:
    return bool(os.environ.get("PIZZERIA_CODEC_KEY")) or os.path.lexists(key_file())


def say_if_key_made(given_before: bool) -> None:
    """A worker that made the codec key itself says so: a second host started before the
    shared key was copied writes orders the other workers cannot read (docs/cluster.md)."""
    if not given_before and codec_key_given():
        out.print(
            f"Made a new codec key {load_keys()[0][0]} in {key_file()}: only machines "
            "holding it can read the orders this worker writes (on a cluster, copy the "
            "shared key file here instead and restart)",
            markup=False,
        )


def stop_at_once(signum: int) -> NoReturn:
    """A second Ctrl-C or SIGTERM while the worker waits for its steps in flight: it exits
    now, as if it had crashed. Nothing is lost: each step's effect is keyed once (a step cut
    short is done again under the same key), and Temporal hands its steps to a worker again
    once their timeouts pass."""
    err.print(
        "Stopped at once: Temporal gives the steps in flight to a worker again once their"
        " timeouts pass, and their keys keep the ledger and the provider from doing any twice.",
        markup=False,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)  # the SDK's threads would otherwise wait for the steps


# -- demo --------------------------------------------------------------------------------


#: What the customer's card shows, by where the order's money ended (ledger money state).
def print_demo(report: dict[str, Any], outcomes: list[OrderOutcome]) -> None:
    out.print()
    for outcome, row in zip(outcomes, report["orders"], strict=True):
        print_outcome(outcome)
        book = row["ledger"]
        out.print(f"  card:          {money_line(book)}")
        out.print(
            f"  ledger:        billed {dollars(book['billed'])}, kept {dollars(book['net'])}; "
            f"stock: {book['stock_taken']} portions taken, {book['stock_put_back']} put back"
        )
        out.print()
    change = ", ".join(f"{name} {delta:+d}" for name, delta in report["stock_change"].items())
    out.print(f"Stock change over both orders: {change or 'none'}")
    out.print(f"Web UI: {report['web_ui']}")
    if report["order_page"]:
        out.print(f"Order page: {report['order_page']}")


@click.command()
@json_option
@click.option(
    "--keep-running/--no-keep-running",
    default=None,
    help="Keep server and worker up afterwards [default: only in a terminal]",
)
@int_option("--port", 1, 65535, default=GRPC_PORT, help="Temporal's gRPC port on 127.0.0.1")
@int_option("--ui-port", 1, 65535, default=UI_PORT, help="Web UI port on 127.0.0.1")
@int_option("--codec-port", 1, 65535, default=DEFAULT_CODEC_PORT, help="Codec endpoint port")
@int_option(
    "--payments-port", 1, 65535, default=DEFAULT_PAYMENTS_PORT, help="Local payment provider port"
)
@int_option("--page-port", 1, 65535, default=DEFAULT_PAGE_PORT, help="Order page port")
def demo(as_json: bool, keep_running: bool | None, **ports: int) -> None:
    """The whole exercise: server, worker, a good order and a bad-card order, compensated."""
    refuse_shared_ports({"--" + name.replace("_", "-"): port for name, port in ports.items()})
    chosen = DemoPorts(
        ports["port"],
        ports["ui_port"],
        ports["codec_port"],
        ports["payments_port"],
        ports["page_port"],
    )
    otel_env.check_env()  # before the server starts, not after
    stop_on_sigterm()
    if keep_running is None:
        keep_running = sys.stdin.isatty() and not as_json

    def say(text: str) -> None:
        err.print(f"[dim]>[/dim] {text}")

    def show(report: dict[str, Any], outcomes: list[OrderOutcome]) -> None:
        if not as_json:
            print_demo(report, outcomes)

    report = run(run_demo(say, show, keep_running, chosen))
    if as_json:
        out.print_json(json.dumps(report))
