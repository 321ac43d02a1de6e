"""``pizzeria api`` in front of a bench stack, and ``POST /orders`` timed to its 201.

The API is the one a user runs (``pizzeria api``), in a process of its own, on a free
port of 127.0.0.1, against the stack's server and ledger, with a staff key and a token
secret made for the run (nothing is written to the data folder). The orders are posted as
staff (a fast-path pickup, under an ``Idempotency-Key`` as the order page sends one) over
plain HTTP/1.1 connections kept alive, one per order in flight: no client library between
the timer and the socket.

The kitchen waits as long as it does for a customer (`HOLD_PREP_SECONDS`, the order's
default): the card is held before it, and the wait's timer is what ends the workflow
task that held it. Without a wait, the fast path runs the bill in that same task too, and
the 201 would come with the whole order.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field

from pizzeria.models import OrderSettings
from pizzeria.ops.bench.cases import BenchError
from pizzeria.ops.bench.sampling import cpu_seconds
from pizzeria.ops.bench.stack import Stack
from pizzeria.ops.processes import WorkerProcess, free_port, pizzeria_command
from pizzeria.samples import sample_order

READY_SECONDS = 60.0
#: How long one answer may take before the batch fails (the API itself answers 202 at 10 s).
ANSWER_TIMEOUT = 60.0
HOLD_PREP_SECONDS = OrderSettings().prep_seconds


@dataclass
class ApiProcess:
    process: WorkerProcess
    port: int
    staff_key: str

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def api_in_front(stack: Stack) -> Iterator[ApiProcess]:
    """``pizzeria api`` on a free port against the stack, answering, for the block."""
    port = free_port()
    staff_key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "PIZZERIA_API_KEY": staff_key,
        "PIZZERIA_API_SECRET": secrets.token_hex(32),  # no secret file in the data folder
    }
    command = [
        *pizzeria_command(),
        "api",
        "--port",
        str(port),
        "--address",
        stack.server.address,
        "--ledger",
        stack.ledger,
        "--no-access-log",
        # Every lane is a client of 127.0.0.1: no cap per client address (up to 500 lanes).
        "--connections-per-client",
        "0",
    ]
    process = WorkerProcess(command, stack.data_dir / "api.log", env)
    process.start()
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not _ready(f"http://127.0.0.1:{port}"):
            process.raise_if_exited()
            if time.monotonic() > deadline:
                raise BenchError(f"pizzeria api did not answer:\n{process.output()[-2000:]}")
            time.sleep(0.1)
        yield ApiProcess(process, port, staff_key)
    finally:
        process.stop(timeout=15, signum=signal.SIGINT)


def hold_body(order_number: str) -> bytes:
    """The exercise's order as staff send it: a pickup on the fast path."""
    order = sample_order(
        order_number, is_delivery=False, prep_seconds=HOLD_PREP_SECONDS, fast_path=True
    )
    return json.dumps(asdict(order)).encode()


@dataclass
class Lane:
    """One keep-alive HTTP/1.1 connection to the API."""

    api: ApiProcess
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    opened: list[asyncio.StreamWriter] = field(default_factory=list)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The status and body of a POST (a new connection when the API closed the last)."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.api.port)
            self.opened.append(self.writer)
        assert self.reader is not None
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.api.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        answer = await self.reader.readexactly(length)
        if close:
            self.writer.close()
        return status, answer

    async def close(self) -> None:
        for writer in self.opened:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


async def place_for_hold(lane: Lane, order_number: str) -> tuple[float, bool]:
    """POST one order: the seconds until its 201 with the card hold, and whether it was
    late instead: a 202 (the API's wait for the hold ran out on a loaded machine; the
    order goes on), whose seconds are then a lower bound. Anything else is a BenchError."""
    headers = {
        "Authorization": f"Bearer {lane.api.staff_key}",
        "Idempotency-Key": f"bench-{order_number}",
    }
    started = time.perf_counter()
    async with asyncio.timeout(ANSWER_TIMEOUT):
        status, answer = await lane.post("/orders", hold_body(order_number), headers)
    elapsed = time.perf_counter() - started
    said = json.loads(answer) if status in (201, 202) else {}
    if status == 202 and said.get("order_number") == order_number:
        return elapsed, True
    hold = said.get("hold") if status == 201 else None
    if not hold or hold.get("state") != "held":
        raise BenchError(f"POST /orders for {order_number} answered {status}: {answer[:300]!r}")
    return elapsed, False
