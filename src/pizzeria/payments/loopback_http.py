"""The stripe library's HTTP transport to a provider on this machine (the local provider).

The stripe library sends its requests through an `stripe.HTTPClient`; ours against real
Stripe is the library's own over requests (TLS, proxies). Against a provider on a loopback
address none of that is needed, and requests and urllib3 cost about half a millisecond of
CPU per call on top of the call itself (two calls per order, on the worker's one Python
thread). This transport sends the same requests over the standard library's
`http.client`, one keep-alive connection per thread.

What a failure means for money is decided from how far the request got
(`pizzeria.payments.stripe_errors.translate`): a connection that could not be opened
(`NotConnected`) carried nothing, so nothing was done; a failure after it was opened
(reset, closed without an answer, timed out) may have reached the provider.
"""

from __future__ import annotations

import http.client
import select
import textwrap
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import stripe
from requests.structures import CaseInsensitiveDict


class NotConnected(OSError):
    """The connection to the provider could not be opened: the request was never sent."""


class NotTheProvider(NotConnected):
    """What answers on the connection is not the provider meant (it did not prove that it
    is): nothing was sent to it but the question."""


#: Asks the provider on a connection just opened (nothing sent on it yet) to prove that it
#: is the one meant, with the connection's ``http://host:port``; raises ConnectionError
#: when it does not (`pizzeria.payments.proof`).
Prove = Callable[[http.client.HTTPConnection, str], None]


class LoopbackHTTPClient(stripe.HTTPClient):
    """`stripe.HTTPClient` over `http.client`, for a plain-HTTP provider on a loopback
    address. ``timeout``: seconds for opening a connection and for each read."""

    name = "pizzeria-loopback"

    def __init__(self, timeout: float, prove: Prove | None = None) -> None:
        super().__init__(verify_ssl_certs=False)
        self._timeout = timeout
        self._prove = prove
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def request(  # type: ignore[override]  # bytes, as the library's own clients answer
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = self._connection(parts)
        try:
            connection.request(method.upper(), target, body=post_data, headers=dict(headers or {}))
            response = connection.getresponse()
            body = response.read()
        except Exception as error:
            self._drop(connection)
            # A network failure may pass on a retry; a request that cannot be sent as given
            # (a header past Latin-1) never will, as the requests client says too.
            _unanswered(error, retry=isinstance(error, OSError | http.client.HTTPException))
        if response.will_close:
            self._drop(connection)
        return body, response.status, CaseInsensitiveDict(response.getheaders())

    def request_stream(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("the payment port reads no stream")

    def close(self) -> None:
        with self._lock:
            opened, self._open = self._open, set()
        for connection in opened:
            connection.close()

    def _connection(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        """This thread's connection, opened if it is not (or if the provider closed it)."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and _closed_by_peer(connection):
            self._drop(connection)
            connection = None
        if connection is None:
            connection = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=self._timeout
            )
            try:
                connection.connect()
            except OSError as error:
                connection.close()
                never_sent = NotConnected(str(error) or type(error).__name__)
                never_sent.__cause__ = error
                _unanswered(never_sent)
            if self._prove is not None:
                try:
                    self._prove(connection, f"http://{connection.host}:{connection.port}")
                except Exception as refused:  # a stranger's: nothing but the question sent
                    connection.close()
                    _unanswered(NotTheProvider(str(refused) or type(refused).__name__))
            self._local.connection = connection
            with self._lock:
                self._open.add(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._open.discard(connection)


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection's other end has gone (readable with nothing asked means
    end of file): a restarted provider, say."""
    sock = connection.sock
    if sock is None:
        return True
    if hasattr(select, "poll"):  # select.select cannot watch a descriptor past 1023
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _unanswered(error: BaseException, *, retry: bool = True) -> NoReturn:
    """A request without an answer, as the stripe library reports one (its retries, when
    asked for, resend it under the same idempotency key)."""
    message = textwrap.fill("Unexpected error communicating with the payment provider.")
    raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
        f"{message}\n\n(Network error: {type(error).__name__}: {error})", should_retry=retry
    ) from error
