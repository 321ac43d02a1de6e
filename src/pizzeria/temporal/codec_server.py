"""The codec endpoint: lets the Web UI (and the ``temporal`` CLI) decrypt payloads.

Implements Temporal's remote codec protocol: ``POST /decode`` and ``POST /encode`` with a
JSON body ``{"payloads": [...]}``. Whoever it answers can read every order (names, cards'
last digits, addresses) and encrypt payloads a worker trusts, so it answers only:

- a browser page of an allowed origin (the Web UI's, http://localhost:8233 by default; any
  other origin gets 403), without a secret unless ``require_auth`` (then as below);
- any other caller (it sends no ``Origin``: a program, the ``temporal`` CLI) only with
  ``Authorization: Bearer <secret>``, the codec endpoint's secret: ``$PIZZERIA_CODEC_AUTH``,
  else the data folder's ``codec.auth`` (made on first use, 0600, owner-only like the
  codec key); otherwise 401. ``temporal ... --codec-auth "Bearer $(cat .pizzeria/codec.auth)"``.

An ``Origin`` header proves nothing against a program (any local process can send one); it
keeps other web pages out. On a machine shared with other users, or in production, run it
with ``require_auth`` behind a proxy that authenticates the Web UI's users and adds the
header (docs/security.md). It listens on 127.0.0.1 only; a body must declare its length
(at most 8 MiB, never negative); a client that stalls is cut off after ``IDLE_SECONDS``
(``BODY_SECONDS`` for a whole body), and at most ``MAX_CLIENTS`` are served at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from pizzeria import config
from pizzeria.private import UnsafeSecret, check_secret_strength, private_secret
from pizzeria.temporal.codec import CodecKeyError, EncryptionCodec, load_keys

DEFAULT_PORT = 8081
DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
MAX_BODY = 8 * 1024 * 1024
IDLE_SECONDS = 10.0  # the longest a read or a write may wait on the client
BODY_SECONDS = 30.0  # the longest a whole body may take to arrive
#: The longest a request's line and headers may take to arrive in all: IDLE_SECONDS alone
#: bounds each read, so a client sending a byte every few seconds held its thread forever.
HEAD_SECONDS = 10.0
MAX_CLIENTS = 32  # connections served at once; more are answered 503 and closed
AUTH_ENV = "PIZZERIA_CODEC_AUTH"
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def auth_file() -> Path:
    return config.data_dir() / "codec.auth"


def auth_source() -> str:
    """Where the secret is read from, as a user would type it."""
    return f"${AUTH_ENV}" if os.environ.get(AUTH_ENV) is not None else str(auth_file())


def load_auth_secret() -> str:
    """The secret callers without an Origin must send: ``$PIZZERIA_CODEC_AUTH``, else the
    data folder's ``codec.auth``, made on first use. Raises `CodecKeyError` (one line)
    when it is too short or its file could have been written by someone else."""
    try:
        from_env = os.environ.get(AUTH_ENV)
        if from_env is not None:
            return check_secret_strength(from_env, AUTH_ENV)
        return private_secret(auth_file(), "codec endpoint secret")
    except UnsafeSecret as unsafe:
        raise CodecKeyError(str(unsafe)) from None


class _Refused(Exception):
    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class _CodecHandler(BaseHTTPRequestHandler):
    """One request to the codec endpoint; the codec, secret and origins are its server's."""

    server: _CodecHTTPServer
    timeout = IDLE_SECONDS  # StreamRequestHandler makes it the socket's timeout

    def log_message(self, format: str, *args: object) -> None:
        pass  # payloads are secrets; keep them (and their sizes) out of logs

    def setup(self) -> None:
        super().setup()
        # The head's deadline: past it the socket is shut, which ends the handler's read.
        self._head_timer = threading.Timer(HEAD_SECONDS, self._head_too_slow)
        self._head_timer.daemon = True
        self._head_timer.start()

    def _head_too_slow(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers: the head is complete
        self._head_timer.cancel()
        return parsed

    def finish(self) -> None:
        self._head_timer.cancel()
        super().finish()

    def _cors(self) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header(
                "Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization"
            )
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self._cors()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self) -> None:
        origin = self.headers.get("Origin")
        self._reply(403 if origin is not None and origin not in self.server.origins else 200)

    def do_POST(self) -> None:
        try:
            self._check_caller()
            path = urlsplit(self.path).path.rstrip("/")
            if path not in ("/encode", "/decode"):
                raise _Refused(404, "use /encode or /decode")
            body = self._read_body(self._body_length())
        except _Refused as refused:
            self.close_connection = True
            message = json.dumps({"error": str(refused)}).encode()
            self._reply(refused.status, message, refused.headers)
            return
        self._reply(*self._convert(path, body))

    def _check_caller(self) -> None:
        """A browser of an allowed origin, or a caller with the secret; nobody else."""
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            raise _Refused(403, "origin not allowed")
        if origin is not None and not self.server.require_auth:
            return
        given = self.headers.get("Authorization", "").encode("utf-8", "replace")
        expected = f"Bearer {self.server.secret}".encode()
        if not hmac.compare_digest(given, expected):
            raise _Refused(
                401,
                "send 'Authorization: Bearer <the codec endpoint's secret>'",
                **{"WWW-Authenticate": "Bearer"},
            )

    def _body_length(self) -> int:
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Refused(411, "send the body with a Content-Length, not chunked")
        declared = self.headers.get_all("Content-Length") or []
        if len(set(declared)) != 1:
            raise _Refused(411, "send exactly one Content-Length")
        text = declared[0].strip()
        if not (text.isascii() and text.isdigit()):
            raise _Refused(400, "Content-Length must be a whole number of bytes, at least 0")
        if int(text) > MAX_BODY:
            raise _Refused(413, f"the body is larger than {MAX_BODY} bytes")
        return int(text)

    def _read_body(self, length: int) -> bytes:
        """The whole body, within BODY_SECONDS (and IDLE_SECONDS between two reads)."""
        deadline = time.monotonic() + BODY_SECONDS
        chunks: list[bytes] = []
        remaining = length
        try:
            while remaining > 0:
                if time.monotonic() > deadline:
                    raise _Refused(408, "the body took too long to arrive")
                chunk = self.rfile.read1(min(remaining, 64 * 1024))
                if not chunk:
                    raise _Refused(400, "the body ended before its Content-Length")
                chunks.append(chunk)
                remaining -= len(chunk)
        except TimeoutError:
            raise _Refused(408, "the body stopped arriving") from None
        return b"".join(chunks)

    def _convert(self, path: str, body: bytes) -> tuple[int, bytes]:
        codec = self.server.codec
        try:
            payloads = json_format.Parse(body, Payloads())
            convert = codec.encode if path == "/encode" else codec.decode
            result = asyncio.run(convert(list(payloads.payloads)))
        except CodecKeyError as missing:  # which key is missing: key ids, no secret
            said = {"error": "CodecKeyError", "message": str(missing)}
            return 400, json.dumps(said).encode()
        except Exception as error:  # its type only: never the caller's bytes back
            return 400, json.dumps({"error": type(error).__name__}).encode()
        return 200, json_format.MessageToJson(Payloads(payloads=result)).encode()


class _CodecHTTPServer(ThreadingHTTPServer):
    def __init__(self, port: int, endpoint: CodecServer) -> None:
        super().__init__(("127.0.0.1", port), _CodecHandler)
        self.codec = endpoint.codec
        self.origins = endpoint.origins
        self.secret = endpoint.secret
        self.require_auth = endpoint.require_auth
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _turn_away(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer; no traceback, no payload in a log


def _turn_away(request: socket.socket) -> None:
    try:
        request.settimeout(1.0)
        request.sendall(BUSY)
    except OSError:
        pass


class CodecServer:
    """The endpoint, not yet serving: `start` serves it in a thread, `stop` ends it."""

    def __init__(
        self,
        codec: EncryptionCodec,
        *,
        secret: str,
        port: int = DEFAULT_PORT,
        origins: Iterable[str] = DEFAULT_ORIGINS,
        require_auth: bool = False,
    ) -> None:
        self.codec = codec
        self.secret = check_secret_strength(secret, "the codec endpoint's secret")
        self.origins = set(origins)
        self.require_auth = require_auth
        self.httpd = _CodecHTTPServer(port, self)
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_for_web_ui(ui_port: int, port: int = DEFAULT_PORT) -> CodecServer:
    """A started codec endpoint, with our keys and secret, for the Web UI on ``ui_port``.

    Raises:
        OSError: the port is taken.
        CodecKeyError: no usable key or secret (one line).
    """
    origins = (f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}")
    codec_server = CodecServer(
        EncryptionCodec(load_keys(), reader=True, serving=True),
        secret=load_auth_secret(),
        port=port,
        origins=origins,
    )
    codec_server.start()
    return codec_server


def cli_advice(endpoint: CodecServer) -> str:
    """How a program (the ``temporal`` CLI) may call the endpoint: with the secret."""
    source = auth_source()
    secret = f"${AUTH_ENV}" if source.startswith("$") else f"$(cat {source})"
    return (
        f"other callers send the secret in {source}: temporal workflow show ... "
        f'--codec-endpoint {endpoint.url} --codec-auth "Bearer {secret}"'
    )
