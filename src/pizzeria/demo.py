"""The exercise from end to end: a good order, then the bad card, and what was undone.

Starts the Temporal dev server when none answers on 127.0.0.1:7233 (or the ports given:
`DemoPorts`; with a history file, so the orders stay visible in the Web UI after a
restart), the local payment provider of
the data folder when none answers there (`local_payments`), and a worker in this process,
places the two orders, and reports their outcomes, where their money is and the ledger
change. The demo's driver always answers, so its good order is delivered every time.
Whatever it started, it stops at the end (or, when asked to keep running, on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from pizzeria import config
from pizzeria.api import DEFAULT_PORT as DEFAULT_PAGE_PORT
from pizzeria.client import OrderOutcome, place_order
from pizzeria.config import DriverSimulation
from pizzeria.ledger import Ledger, RunRows, open_ledger, runs_of
from pizzeria.models import TASK_QUEUE, order_ref
from pizzeria.payments import process as payments
from pizzeria.payments.proof import listening, proves, secret_file_beside
from pizzeria.payments.stripe_gateway import KEY_VARIABLE, URL_VARIABLE
from pizzeria.private import UnsafeSecret
from pizzeria.samples import BAD_CARD, GOOD_CARD, sample_order
from pizzeria.temporal.codec import CodecKeyError, load_keys
from pizzeria.temporal.codec_server import DEFAULT_PORT as DEFAULT_CODEC_PORT
from pizzeria.temporal.codec_server import cli_advice, serve_for_web_ui
from pizzeria.temporal.connection import connect, connection_failure
from pizzeria.temporal.devserver import GRPC_PORT, UI_PORT, DevServer, port_open
from pizzeria.temporal.metrics import worker_runtime
from pizzeria.temporal.server_facts import foreign_orders, foreign_said, recent_pollers
from pizzeria.worker import build_worker, payment_gateway, served_activities, stop_requested

#: How many of a server's latest orders the demo reads before it uses that server.
LATEST_ORDERS = 5
GOOD_ORDER_NUMBER = "XD001"
BAD_ORDER_NUMBER = "XD002"


@dataclass(frozen=True)
class DemoPorts:
    """The ports of 127.0.0.1 the demo serves on (``pizzeria demo --port``...)."""

    grpc: int = GRPC_PORT
    ui: int = UI_PORT
    codec: int = DEFAULT_CODEC_PORT
    payments: int = payments.DEFAULT_PORT
    page: int = DEFAULT_PAGE_PORT

    @property
    def web_ui(self) -> str:
        return f"http://localhost:{self.ui}"


#: The demo's driver search: as the exercise's (10 rounds of 1 s), but a driver always
#: answers, so the showcase order is delivered every time.
DEMO_DRIVER = DriverSimulation(rounds=10, seconds_per_round=1.0, found_probability=1.0)


@contextlib.contextmanager
def local_payments(
    say: Callable[[str], None], folder: Path | None = None, port: int = payments.DEFAULT_PORT
) -> Iterator[str]:
    """The data folder's local payment provider, for the block: the one already answering
    at its URL (``payments.url``, else on ``port``) when it proves it is the folder's own
    (`pizzeria.payments.proof`), or one started now on ``port`` (a free one when taken),
    its URL written in ``payments.url`` for this folder's workers and removed when it
    stops, and started again on its port if it exits by itself (`payments.KeptProvider`).
    Its payments live in the folder's ``payments.db``."""
    folder = folder or config.data_dir()
    url_file = folder / config.payments_url_file().name
    on_port = f"http://127.0.0.1:{port}"
    try:
        known = config.local_payments_url(usual=on_port) if folder == config.data_dir() else ""
    except UnsafeSecret as unsafe:  # a URL file planted in a shared folder: said, not used
        raise payments.ProviderProcessError(str(unsafe)) from None
    # Asked to prove itself before anything else is sent to it (the proof is all it gets).
    ours = bool(known) and proves(known, secret_file_beside(url_file))
    if known and not ours and listening(known):
        say(
            f"Something listening at {known} is not this data folder's payment provider (it "
            "cannot prove that it holds the folder's payments.secret): starting the folder's own"
        )
    elif ours:
        say(f"Using the payment provider already answering at {known}")
        # Found on the port (no URL file): written, so the folder's workers use it too.
        written = known == on_port and folder == config.data_dir() and not url_file.exists()
        if written:
            url_file.write_text(known + "\n")
        try:
            yield known
        finally:
            if written:
                _remove_if_still(url_file, known)
        return
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    provider = payments.KeptProvider(folder / "payments.db", say, port=port, own_session=True)
    try:
        url_file.write_text(provider.url + "\n")
        say(f"Local payment provider up: {provider.url} (payments in {folder / 'payments.db'})")
        yield provider.url
    finally:
        provider.stop()
        _remove_if_still(url_file, provider.url)
        say("Stopped the local payment provider")


def _remove_if_still(url_file: Path, url: str) -> None:
    """Remove the URL file when it still says ``url`` (no other provider wrote it since)."""
    with contextlib.suppress(OSError):
        if url_file.read_text().strip() == url:
            url_file.unlink()


def ledger_change(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, int]:
    return {
        name: after[name]["quantity"] - before.get(name, {"quantity": 0})["quantity"]
        for name in after
        if after[name]["quantity"] != before.get(name, {"quantity": 0})["quantity"]
    }


def ledger_of(ledger: Ledger, outcome: OrderOutcome) -> dict[str, Any]:
    """What one run did to the ledger: money, and portions of stock taken and put back."""
    ref = order_ref(outcome.workflow_id, outcome.run_id)
    run = runs_of(ledger.effects(ref)).get(ref, RunRows(ref))
    return {
        "charged": run.charged,
        "refunded": run.refunded,
        "billed": run.billed,
        "refunded_after_bill": run.refunded_after_bill,
        "money": run.money,
        "payment_ids": run.payment_ids,
        "stock_taken": sum(run.taken.values()),
        "stock_put_back": sum(run.put_back.values()),
        "net": run.net - run.refunded_after_bill,
    }


@contextlib.asynccontextmanager
async def order_page(
    client: Client, ledger_location: str, say: Callable[[str], None], port: int
) -> AsyncIterator[str | None]:
    # Imported here: FastAPI loads only when the demo runs, never with the CLI or a worker.
    from pizzeria.api.serve import order_page as serve_order_page

    async with serve_order_page(client, ledger_location, say, port=port) as url:
        yield url


@contextlib.asynccontextmanager
async def running_server(
    say: Callable[[str], None], ports: DemoPorts
) -> AsyncIterator[DevServer | None]:
    if port_open(ports.grpc):
        say(f"Using the Temporal server already answering on 127.0.0.1:{ports.grpc}")
        yield None
        return
    data = config.data_dir()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only: it holds the secrets
    codec_server = None
    try:
        codec_server = serve_for_web_ui(ports.ui, ports.codec)
    except OSError:
        say(f"Port {ports.codec} is taken: the Web UI will show encrypted payloads")
    server = DevServer(
        config.history_file(),
        port=ports.grpc,
        ui_port=ports.ui,
        log_file=data / "temporal-server.log",
        codec_endpoint=codec_server.url if codec_server else None,
        own_session=True,  # Ctrl-C: the worker in this process stops first, then the server
    )
    say(f"Starting the Temporal dev server (history in {config.history_file()})...")
    try:
        await asyncio.to_thread(server.start)
        with config.web_ui_said(ports.grpc, ports.ui):
            say(f"Temporal dev server up: 127.0.0.1:{ports.grpc}, Web UI {ports.web_ui}")
            if codec_server:
                say(f"Codec endpoint {codec_server.url}: the Web UI decrypts the orders;")
                say(cli_advice(codec_server))
            yield server
    finally:
        server.stop()
        if codec_server:
            codec_server.stop()
        say("Stopped the Temporal dev server this demo started")


async def place_both_orders(client: Client, say: Callable[[str], None]) -> list[OrderOutcome]:
    outcomes = []
    for number, card, label in (
        (GOOD_ORDER_NUMBER, GOOD_CARD, "good card"),
        (BAD_ORDER_NUMBER, BAD_CARD, "bad card, 15 digits"),
    ):
        # The kitchen waits once the card is held: the bad card never gets that far.
        then = (
            "the card held, 3 s in the kitchen, then a driver search of up to 10 s..."
            if card == GOOD_CARD
            else "its card is refused, and what was done is undone..."
        )
        say(f"Placing order {number} ({label}): {then}")
        # The exercise places the same orders on every run: a new run each time, on purpose.
        outcome = await place_order(client, sample_order(number, card=card), again=True)
        say(f"Order {number}: {outcome.status}")
        outcomes.append(outcome)
    return outcomes


async def run_demo(
    say: Callable[[str], None],
    show: Callable[[dict[str, Any], list[OrderOutcome]], None],
    keep_running: bool,
    ports: DemoPorts | None = None,
) -> dict[str, Any]:
    """Run the demo; ``say`` reports progress, ``show`` prints the outcome. Money moves
    through ``PIZZERIA_PAYMENTS_URL``/``STRIPE_API_KEY`` when set, else the data folder's
    local provider (started if none answers)."""
    ports = ports or DemoPorts()
    async with running_server(say, ports) as started:
        if started is None:  # a server of the user's: its workers would take the orders
            await refuse_beside_other_workers(ports.grpc)
        with contextlib.ExitStack() as provider:
            if not (os.environ.get(URL_VARIABLE) or os.environ.get(KEY_VARIABLE)):
                provider.enter_context(local_payments(say, port=ports.payments))
            return await _serve_and_place(say, show, keep_running, ports)


class OtherWorkersPoll(ConnectionError):
    """The server the demo found has workers of its own on pizza-tasks (one line)."""


class NotTemporal(ConnectionError):
    """Something answers on the demo's Temporal port that is not Temporal (one line)."""


async def refuse_beside_other_workers(port: int) -> None:
    """`OtherWorkersPoll` when a worker polls pizza-tasks on the server the demo found:
    it would take the demo's orders (with its own driver, ledger, and perhaps another
    codec key), so the showcase would not show what it says. Workers of this machine's
    processes that have ended are not counted (the server lists them a while longer)."""
    try:
        client = await connect(f"127.0.0.1:{port}")
    except CodecKeyError:  # a RuntimeError too, but the key's fault, not the server's
        raise
    except RuntimeError as error:
        raise NotTemporal(
            f"port {port} on 127.0.0.1 answers, but not as a Temporal server"
            f" ({connection_failure(str(error))}); the demo needs that port: free it, or"
            " run `pizzeria demo --port N` (docs/commands.md)"
        ) from None
    polling = [
        identity
        for identity in await recent_pollers(client, TASK_QUEUE)
        if not ended_here(identity)
    ]
    if polling:
        raise OtherWorkersPoll(
            f"a worker already polls {TASK_QUEUE} on the Temporal server at 127.0.0.1:"
            f"{port} ({', '.join(sorted(polling))}): it would take the demo's orders; "
            "stop it (and its server) to run the demo, or place orders with `pizzeria order`"
        )
    # Another data folder's server (another clone's `pizzeria server`): its orders are
    # sealed under another codec key, and the demo's would be split between the two
    # folders, each unable to read the other's (its Web UI shows them encrypted).
    try:
        checked, foreign = await foreign_orders(client, load_keys(), LATEST_ORDERS)
    except RPCError as error:
        raise OtherWorkersPoll(
            f"the Temporal server at 127.0.0.1:{port} does not show its latest orders "
            f"({error}): stop it to run the demo here, or start one with `pizzeria server`"
        ) from None
    if foreign:
        raise OtherWorkersPoll(
            f"the Temporal server at 127.0.0.1:{port} is another data folder's: "
            f"{foreign_said(checked, foreign)}; stop it to run the demo here, "
            "or run the demo from the folder that started it"
        )


def ended_here(identity: str) -> bool:
    """Whether a worker's identity (the SDK's ``PID@HOST``) names a process of this
    machine that has ended."""
    pid, _, host = identity.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's, alive
        return False
    return False


async def _serve_and_place(
    say: Callable[[str], None],
    show: Callable[[dict[str, Any], list[OrderOutcome]], None],
    keep_running: bool,
    ports: DemoPorts,
) -> dict[str, Any]:
    # The server the demo started or found on this machine, whatever TEMPORAL_ADDRESS (or
    # a profile) says for the other commands.
    # The worker's runtime: the SDK core's warnings through Python's logging, on standard
    # error (written by the core itself they went to standard output, into --json's).
    client = await connect(f"127.0.0.1:{ports.grpc}", runtime=worker_runtime())
    location = config.ledger_location()
    ledger = open_ledger(location)
    gateway = payment_gateway()
    try:
        activities = served_activities(ledger, driver=DEMO_DRIVER, payments=gateway)
        async with build_worker(client, activities):
            say(f"Worker running in this process (ledger {ledger.location})")
            async with order_page(client, location, say, ports.page) as page:
                stock_before = ledger.stock()
                outcomes = await place_both_orders(client, say)
                report: dict[str, Any] = {
                    "web_ui": ports.web_ui,
                    "order_page": page,
                    "orders": [{**o.to_json(), "ledger": ledger_of(ledger, o)} for o in outcomes],
                    "stock_change": ledger_change(stock_before, ledger.stock()),
                }
                show(report, outcomes)
                if keep_running:
                    stop = stop_requested()
                    running = f"open {ports.web_ui}" + (
                        f" or the order page {page}" if page else ""
                    )
                    say(f"Server and worker keep running: {running} . Press Ctrl-C to stop them.")
                    await stop.wait()
    finally:
        ledger.close()
        await gateway.close()
    return report
