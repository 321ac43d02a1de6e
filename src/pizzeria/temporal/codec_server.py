"""The codec endpoint: lets the local Web UI (and the ``temporal`` CLI) decrypt payloads.

Implements Temporal's remote codec protocol: ``POST /decode`` and ``POST /encode`` with a
JSON body ``{"payloads": [...]}``. Bound to 127.0.0.1 only. Browsers may call it only from
the allowed origins (the Web UI's, http://localhost:8233 by default); a request from any
other origin is refused with 403. Tools that send no Origin header (the CLI) are served.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from pizzeria.temporal.codec import EncryptionCodec, load_keys

DEFAULT_PORT = 8081
DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
MAX_BODY = 8 * 1024 * 1024


class _CodecHandler(BaseHTTPRequestHandler):
    """One request to the codec endpoint; the codec and allowed origins are its server's."""

    server: _CodecHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # payloads are secrets; keep them (and their sizes) out of logs

    def _origin_allowed(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is None or origin in self.server.origins

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

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self) -> None:
        self._reply(200 if self._origin_allowed() else 403)

    def do_POST(self) -> None:
        if not self._origin_allowed():
            self._reply(403, b'{"error": "origin not allowed"}')
            return
        path = urlsplit(self.path).path.rstrip("/")
        if path not in ("/encode", "/decode"):
            self._reply(404, b'{"error": "use /encode or /decode"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, b'{"error": "body too large"}')
            return
        codec = self.server.codec
        try:
            payloads = json_format.Parse(self.rfile.read(length), Payloads())
            convert = codec.encode if path == "/encode" else codec.decode
            result = asyncio.run(convert(list(payloads.payloads)))
        except Exception as error:
            message = json.dumps({"error": type(error).__name__})
            self._reply(400, message.encode())
            return
        body = json_format.MessageToJson(Payloads(payloads=result))
        self._reply(200, body.encode())


class _CodecHTTPServer(ThreadingHTTPServer):
    def __init__(self, port: int, codec: EncryptionCodec, origins: set[str]) -> None:
        super().__init__(("127.0.0.1", port), _CodecHandler)
        self.codec = codec
        self.origins = origins


class CodecServer:
    def __init__(
        self,
        codec: EncryptionCodec,
        port: int = DEFAULT_PORT,
        origins: Iterable[str] = DEFAULT_ORIGINS,
    ) -> None:
        self.codec = codec
        self.origins = set(origins)
        self.httpd = _CodecHTTPServer(port, codec, self.origins)
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
    """A started codec endpoint, with our keys, for the Web UI on ``ui_port``.

    Raises:
        OSError: the port is taken.
    """
    origins = (f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}")
    codec_server = CodecServer(EncryptionCodec(load_keys()), port=port, origins=origins)
    codec_server.start()
    return codec_server
