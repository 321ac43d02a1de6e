"""The provider's HTTP side (the standard library's threaded server): reads a request,
hands it to `engine.Provider`, and answers, resets the connection (a refused request) or
closes it without a word (a lost answer). CORS is open on one route only, so the order page
can trade a card number for a token with a publishable key (`BROWSER_ROUTE`): no other
page a browser shows can read, capture, void or refund anything here.

Each request is logged in one line: method, path (never its query or body), status, what
was done, and at most the card's last four digits.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pizzeria.payments.proof import address_of
from pizzeria.payments.provider.engine import Action, Answer, Provider, Request, request_id, summary

log = logging.getLogger("pizzeria.payments.provider")
HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
#: The one route a browser calls: the order page's card number for a ``pm_...`` token.
BROWSER_ROUTE = "/v1/payment_methods"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, Stripe-Version",
    "Access-Control-Expose-Headers": "Request-Id, Idempotent-Replayed, Idempotency-Key",
    "Access-Control-Max-Age": "600",
}


class PortInUse(OSError):
    pass


class ProviderServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], provider: Provider) -> None:
        self.provider = provider
        super().__init__(address, ProviderHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that hung up before its answer (it gave up on a slow one) is one log
        line, not a traceback; anything else is the standard library's report."""
        error = sys.exc_info()[1]
        if isinstance(error, BrokenPipeError | ConnectionResetError):
            log.info("the caller at %s:%s hung up before its answer", *client_address[:2])
            return
        super().handle_error(request, client_address)


class ProviderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    server_version = "pizzeria-payments"
    sys_version = ""
    server: ProviderServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        """A browser's CORS preflight: allowed for `BROWSER_ROUTE` alone."""
        self.send_response(204)
        for name, value in self._cors().items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self) -> None:
        request = self._read()
        if request is None:
            return
        answer = self.server.provider.handle(request)
        line = f"{request.method} {request.path} ->"
        if answer.action is Action.REFUSE:
            log.info("%s connection reset (%s)", line, answer.note)
            self._reset()
            return
        if answer.action is Action.LOSE:
            log.info(
                "%s %d %s, then the connection closed unanswered",
                line,
                answer.status,
                summary(answer),
            )
            self.close_connection = True
            return
        log.info("%s %d %s %s", line, answer.status, answer.note, summary(answer))
        self._answer(answer)

    def _read(self) -> Request | None:
        path, _, query = self.path.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY or self.headers.get("Transfer-Encoding"):
            self._json(
                413,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Send a Content-Length body of at most 64 KiB",
                    }
                },
            )
            self.close_connection = True
            return None
        raw = self.rfile.read(length) if length else b""
        try:
            body = raw.decode()
        except UnicodeDecodeError:
            self._json(
                400,
                {"error": {"type": "invalid_request_error", "message": "The body is not UTF-8"}},
            )
            return None
        return Request(
            self.command,
            path,
            query,
            body,
            self.headers.get("Authorization"),
            self.headers.get("Idempotency-Key"),
            reached=address_of(self.connection.getsockname()),
        )

    def _answer(self, answer: Answer) -> None:
        assert answer.body is not None
        self._json(answer.status, answer.body, answer.headers)

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", request_id())
        for name, value in {**self._cors(), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _cors(self) -> dict[str, str]:
        return CORS_HEADERS if self.path.partition("?")[0] == BROWSER_ROUTE else {}

    def _reset(self) -> None:
        """Drop the connection with a reset: the caller sees a connection error."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Each request is logged by `_serve`, without its query string."""

    def log_error(self, format: str, *args: Any) -> None:
        # The standard message would quote the request line (with its query): not logged.
        log.warning("malformed request from %s", self.client_address[0])


def bind(provider: Provider, port: int, host: str = HOST) -> ProviderServer:
    """A server on ``host:port`` (0: a free port). Raises `PortInUse` when it is taken."""
    try:
        return ProviderServer((host, port), provider)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} is already in use on {host}") from None
        raise
