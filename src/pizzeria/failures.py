"""Reading a failure: the one walker of an error's cause chain.

Temporal wraps a failure in layers (a workflow failure around an activity error around
the application error that says what went wrong). Clients, the workflow and the checker
all want the same thing from that chain: the first typed error and its message.
"""

from __future__ import annotations

from collections.abc import Iterator

from temporalio.exceptions import ApplicationError, CancelledError, FailureError


def cause_chain(error: BaseException | None, *, implicit: bool = False) -> Iterator[BaseException]:
    """The error, then its cause, its cause's cause, and so on; ``implicit``: also the
    error being handled when one was raised without ``from`` (``__context__``)."""
    while error is not None:
        yield error
        error = error.__cause__ or (error.__context__ if implicit else None)


def error_type_of(error: BaseException | None) -> str | None:
    """The first typed application error in the chain (what a client reports)."""
    for link in cause_chain(error):
        if isinstance(link, ApplicationError) and link.type:
            return link.type
        if isinstance(link, CancelledError):
            return "CancelledError"
    return None


def error_message_of(error: BaseException | None) -> str | None:
    """The message of the first application error, else of the innermost failure."""
    for link in cause_chain(error):
        if isinstance(link, ApplicationError):
            return link.message
        if link.__cause__ is None and isinstance(link, FailureError):
            return link.message
    return None


def innermost(error: BaseException) -> BaseException:
    """The last link of the chain: the root cause (say, an activity timeout)."""
    *_, last = cause_chain(error)
    return last
