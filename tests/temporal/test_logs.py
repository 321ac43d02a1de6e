"""A worker's log: a failure it expects on one line, any other with its traceback."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest
from temporalio.exceptions import ApplicationError, CancelledError

from pizzeria.ledger import LedgerUnavailable
from pizzeria.payments.errors import PaymentUnavailable
from pizzeria.temporal.codec import CodecKeyError
from pizzeria.temporal.faults import INJECTED_FAULT_ERROR
from pizzeria.temporal.logs import WORKER_LOG_FORMAT, OneLineExpected


@pytest.fixture
def written() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through a handler as the worker's, with its filter."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
    handler.addFilter(OneLineExpected())
    logger = logging.getLogger("tests.worker-log")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, text
    finally:
        logger.removeHandler(handler)


def logged_while_handling(logger: logging.Logger, error: BaseException) -> list[str]:
    try:
        raise error
    except BaseException:
        # as the SDK logs a failed attempt, its details appended to the message
        logger.warning(
            "Completing activity as failed (%s)", {"activity_type": "send_bill"}, exc_info=True
        )
    handler = logger.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    return str(handler.stream.getvalue()).splitlines()


def test_the_provider_not_answering_is_one_line_with_the_error(written):
    logger, _ = written
    lines = logged_while_handling(logger, PaymentUnavailable("the provider timed out (2.0 s)"))
    (line,) = lines
    assert line.endswith(
        "WARNING Completing activity as failed ({'activity_type': 'send_bill'}): "
        "PaymentUnavailable: the provider timed out (2.0 s)"
    ), line


def test_the_ledger_not_answering_is_one_line_with_the_error(written):
    """PostgreSQL down: each attempt of each step is one line, not 35 of traceback."""
    logger, _ = written
    unreachable = LedgerUnavailable(
        "no connection to the ledger at postgresql://pizzeria:***@db/pizzeria: couldn't get "
        "a connection after 3.00 sec"
    )
    (line,) = logged_while_handling(logger, unreachable)
    assert line.endswith("): LedgerUnavailable: " + str(unreachable)), line


@pytest.mark.parametrize(
    "cancelled",
    [asyncio.CancelledError(), CancelledError("Workflow execution terminated")],
    ids=["asyncio", "temporal"],
)
def test_a_step_cancelled_with_its_order_is_one_line(written, cancelled):
    """An order terminated during its driver search: the step is cancelled, by design."""
    logger, _ = written
    (line,) = logged_while_handling(logger, cancelled)
    assert f"): {type(cancelled).__name__}" in line, line


def test_the_ledger_pools_warnings_are_one_line_each():
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
    handler.addFilter(OneLineExpected())
    pool = logging.getLogger("psycopg.pool")
    pool.addHandler(handler)
    try:
        pool.warning(
            "error connecting in %r: %s",
            "pizzeria-ledger",
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
            "connections?",
        )
    finally:
        pool.removeHandler(handler)
    (line,) = text.getvalue().splitlines()
    assert line.endswith(
        "WARNING error connecting in 'pizzeria-ledger': connection failed: connection to server "
        'at "127.0.0.1", port 5432 failed: Connection refused Is the server running on that '
        "host and accepting TCP/IP connections?"
    ), line


def test_an_injected_fault_is_one_line_named_by_its_type(written):
    logger, _ = written
    fault = ApplicationError("Injected fault: send_bill failed", type=INJECTED_FAULT_ERROR)
    (line,) = logged_while_handling(logger, fault)
    assert line.endswith("): InjectedFault: Injected fault: send_bill failed"), line


def test_a_codec_key_missing_inside_another_error_is_one_line(written):
    logger, _ = written
    missing = CodecKeyError("payload encrypted with key 'd882e4c313fd', which this\nprocess lacks")
    try:
        raise missing
    except CodecKeyError as cause:
        wrapped = RuntimeError("Failed decoding arguments")
        wrapped.__cause__ = cause
    (line,) = logged_while_handling(logger, wrapped)
    assert line.endswith(
        "CodecKeyError: payload encrypted with key 'd882e4c313fd', which this process lacks"
    ), line


def test_any_other_failure_keeps_its_traceback(written):
    logger, _ = written
    lines = logged_while_handling(logger, ZeroDivisionError("a bug of ours"))
    assert lines[0].endswith("Completing activity as failed ({'activity_type': 'send_bill'})")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ZeroDivisionError: a bug of ours"


def test_the_core_failing_a_workflow_task_for_a_codec_key_keeps_its_line_not_the_traceback():
    # As the SDK core's warning reaches Python: the failure in Rust's debug form, with the
    # Python traceback quoted (escaped) inside it.
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.addFilter(OneLineExpected())
    core = logging.getLogger("temporalio.core.test-logs")
    core.propagate = False
    core.addHandler(handler)
    failure = (
        'Failure { failure: Some(Failure { message: "payload encrypted with key 627ce578e5c6",'
        ' source: "", stack_trace: "  File \\"/x/one_walk.py\\", line 123, in decode\\n'
        '    return await _walked(\\n", encoded_attributes: None, cause: None, failure_info:'
        ' Some(ApplicationFailureInfo(ApplicationFailureInfo { r#type: "CodecKeyError",'
        " non_retryable: false })) }) }"
    )
    try:
        core.warning("[sdk_core::worker] Failing workflow task %s", {"failure": failure})
        core.warning("[sdk_core::worker] Failing workflow task %s", {"failure": "other"})
    finally:
        core.removeHandler(handler)
    first, second = text.getvalue().splitlines()
    assert "one_walk.py" not in first and 'stack_trace: "", encoded_attributes' in first
    assert "payload encrypted with key" in first and 'r#type: "CodecKeyError"' in first
    assert second.endswith("{'failure': 'other'}")  # any other failure as it was
