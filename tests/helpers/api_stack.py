"""`pizzeria api` beside a test stack (dev server and worker), as a user runs it."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from pizzeria.ledger import Ledger, open_ledger
from pizzeria.ops.processes import WorkerProcess, free_port, pizzeria_command
from pizzeria.samples import GOOD_CARD, sample_order
from tests.helpers.stack import Stack

STAFF_KEY = "staff-key-of-the-api-tests-0123456789"
#: What POST /orders answers when it placed the order: 201 with the card held, or 202
#: (asked for with Prefer: respond-async, or no answer in time).
PLACED = (201, 202)


@dataclass(frozen=True)
class Api:
    url: str
    env: dict[str, str]
    data: Path
    process: WorkerProcess

    @property
    def ledger_location(self) -> str:
        return self.env.get("PIZZERIA_LEDGER", str(self.data / "ledger.db"))

    def ledger(self) -> Ledger:
        return open_ledger(self.ledger_location)

    @property
    def staff(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {STAFF_KEY}"}


def order_body(number: str, card: str = GOOD_CARD, **settings: Any) -> dict[str, Any]:
    """The exercise's order JSON (the wire contract) as staff send it: with its order
    number, and no waits unless given (only staff may choose either)."""
    settings.setdefault("prep_seconds", 0)
    return asdict(sample_order(number, card=card, **settings))


def customer_body(card: str = GOOD_CARD) -> dict[str, Any]:
    """The order as anyone sends it: no order number (the API chooses), no settings."""
    body = asdict(sample_order(card=card))
    del body["order_number"], body["settings"]
    return body


@contextmanager
def api_process(
    stack: Stack, *args: str, timeout: float = 60, log: str = "api.log"
) -> Iterator[Api]:
    """``pizzeria api`` on a free port, answering /healthz, for the block; then Ctrl-C.
    Its output goes to ``log`` in the stack's data folder."""
    port = free_port()
    env = {**stack["env"], "PIZZERIA_API_KEY": STAFF_KEY}
    command = [*pizzeria_command(), "api", "--port", str(port), *args]
    process = WorkerProcess(command, stack["data"] / log, env)
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            process.raise_if_exited()
            if time.monotonic() > deadline:
                raise AssertionError(f"pizzeria api did not answer:\n{process.output()[-2000:]}")
            time.sleep(0.1)
        yield Api(url=url, env=env, data=stack["data"], process=process)
    finally:
        process.stop(timeout=15, signum=signal.SIGINT)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
