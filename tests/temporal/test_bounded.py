"""A client bounded as the API's is: a Temporal server that hangs (stopped, not gone)
makes each call that should answer at once fail within the bound, not the connection's
30 s; what waits on purpose (a poll for new history events) keeps waiting."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from pizzeria.api.problems import UNAVAILABLE
from pizzeria.ops.processes import dev_server
from pizzeria.temporal.connection import connect
from tests.helpers import wait_until


@pytest.fixture
def hanging_server():
    """A dev server of its own, and a way to stop it answering (SIGSTOP) for a moment."""
    with dev_server(headless=True) as server:
        process = server.process
        assert process is not None

        @contextlib.contextmanager
        def hung():
            process.send_signal(signal.SIGSTOP)
            # Stopped once the kernel says so, every thread: not as soon as kill returns.
            stat = Path(f"/proc/{process.pid}/stat")
            wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", "a stop", 10)
            try:
                yield
            finally:
                process.send_signal(signal.SIGCONT)

        yield server.address, hung


async def test_a_hung_server_fails_each_call_within_the_bound_and_polls_still_wait(
    hanging_server,
) -> None:
    address, hung = hanging_server
    client: Client = await connect(address, call_seconds=1.5)
    unbounded: Client = await connect(address)
    await client.count_workflows()  # connected while the server answers
    await unbounded.count_workflows()
    handle = client.get_workflow_handle("no-such-order")
    with hung():
        for call in (handle.describe, client.count_workflows):
            began = time.monotonic()
            with pytest.raises(RPCError) as failed:
                await call()
            # Our own deadline: "Timeout expired", which the API answers as a 503.
            assert failed.value.status in UNAVAILABLE, failed.value
            assert time.monotonic() - began < 10
        # A poll for new events waits on purpose; an unbounded client's call waits too.
        poll = asyncio.ensure_future(anext(aiter(handle.fetch_history_events(wait_new_event=True))))
        plain = asyncio.ensure_future(unbounded.get_workflow_handle("no-such-order").describe())
        await asyncio.sleep(4)
        assert not poll.done() and not plain.done()
        poll.cancel()
        plain.cancel()
        await asyncio.gather(poll, plain, return_exceptions=True)
