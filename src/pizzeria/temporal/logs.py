"""A worker's log: one line for a failure it expects, a traceback for the others.

The SDK logs every failed activity attempt ("Completing activity as failed") and every
workflow activation it could not handle with the exception's whole traceback. For a
failure that is part of how the order runs, the traceback says nothing the error's own
line does not, and a worker's log fills with twenty lines per retry:

- the payment provider did not answer (`PaymentUnavailable`): the step is retried with
  the same key;
- a fault set on purpose (``pizzeria faults``, ``PIZZERIA_FAULTS``, chaos runs);
- an order's payloads written with a codec key this worker lacks (`CodecKeyError`): the
  order waits for a worker that has it, and ``pizzeria doctor`` says which;
- the ledger cannot be reached or refuses (`LedgerUnavailable`): the step is retried with
  the same key, and the connection pool's own warnings are kept on one line each;
- a step cancelled (its order cancelled, or ended from outside: `CancelledError`).

Those are logged on one line, at the level the SDK chose, with the error's type and
message; anything else keeps its traceback (a bug of ours must be readable).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re

from temporalio.exceptions import ApplicationError, CancelledError

from pizzeria.failures import cause_chain
from pizzeria.ledger.records import LedgerUnavailable
from pizzeria.payments.errors import PaymentUnavailable
from pizzeria.temporal.codec import CodecKeyError
from pizzeria.temporal.faults import INJECTED_FAULT_ERROR

#: Where a worker's own lines and the SDK's go: "2026-12-05 20:25:00,803 INFO ...".
WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: What a worker expects (each said above), by type; an injected fault is told by its name.
EXPECTED = (
    PaymentUnavailable,
    CodecKeyError,
    LedgerUnavailable,
    asyncio.CancelledError,
    CancelledError,
)
#: Causes followed at the most to find an expected failure inside another.
MAX_CAUSES = 8


def expected_failure(error: BaseException | None) -> BaseException | None:
    """The failure a worker expects that ``error`` is or wraps (its causes, a few deep);
    None for any other."""
    for link in itertools.islice(cause_chain(error, implicit=True), MAX_CAUSES):
        if isinstance(link, EXPECTED):
            return link
        if isinstance(link, ApplicationError) and link.type == INJECTED_FAULT_ERROR:
            return link
    return None


#: The SDK core's line for a workflow task it fails quotes the failure's Python traceback.
CORE_STACK_TRACE = re.compile(r'stack_trace: ".*?", encoded_attributes', re.DOTALL)


class OneLineExpected(logging.Filter):
    """Turns a record of an expected failure into one line: "<message>: <Type>: <error>";
    the SDK core's own warning for a workflow task failed by one (a codec key this worker
    lacks) keeps its line without the traceback it quotes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("temporalio") and record.levelno >= logging.WARNING:
            said = record.getMessage()
            if "Failing workflow task" in said and 'r#type: "CodecKeyError"' in said:
                record.msg = CORE_STACK_TRACE.sub('stack_trace: "", encoded_attributes', said)
                record.args = ()
        if record.name.startswith("psycopg"):  # libpq's errors run over several lines
            record.msg = " ".join(record.getMessage().split())
            record.args = ()
        raised = record.exc_info[1] if record.exc_info else None
        failure = expected_failure(raised)
        if failure is not None:
            if isinstance(failure, ApplicationError):
                name, message = failure.type or type(failure).__name__, failure.message
            else:
                name, message = type(failure).__name__, str(failure)
            said = " ".join(message.split())
            record.msg = f"{record.getMessage()}: {name}: {said}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def configure_worker_logging() -> None:
    """INFO and above on standard error, in the worker's format, expected failures on one
    line each (`OneLineExpected`)."""
    logging.basicConfig(level=logging.INFO, format=WORKER_LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(each, OneLineExpected) for each in handler.filters):
            handler.addFilter(OneLineExpected())
