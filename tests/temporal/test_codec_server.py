"""The codec endpoint under attack: who may decrypt, and what a hostile client cannot do.

A caller without an Origin (any local program, any local user) decrypts only with the
endpoint's secret; a page of another origin never, secret or not; a negative or oversized
Content-Length is refused at once; a client that stalls is cut off, and a crowd of them
cannot take every thread.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pizzeria.temporal import codec_server as endpoint_module
from pizzeria.temporal.codec import EncryptionCodec, key_id_of
from pizzeria.temporal.codec_server import CodecServer, load_auth_secret
from tests.helpers import PIZZERIA, run_pizzeria, wait_until
from tests.helpers.orders import CODEC_SECRET
from tests.helpers.stack import stack_env

pytestmark = pytest.mark.timeout(120)

#: The endpoint's secret in the tests (32 random bytes, base64url, as `secrets` makes one).
KEY = bytes(range(32))
WEB_UI = "http://localhost:8233"


def plain_body(text: str = "Lisa Anderson") -> dict[str, Any]:
    data = base64.b64encode(json.dumps(text).encode()).decode()
    encoding = base64.b64encode(b"json/plain").decode()
    return {"payloads": [{"metadata": {"encoding": encoding}, "data": data}]}


def post(
    url: str, body: dict[str, Any], *, origin: str | None = None, auth: str | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if origin:
        request.add_header("Origin", origin)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        error.close()
        return error.code, None


def raw(port: int, head: bytes, *, wait: float = 10) -> bytes:
    """What the endpoint answers to bytes sent as they are (then the sender goes quiet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


@pytest.fixture
def endpoint() -> Iterator[CodecServer]:
    server = CodecServer(EncryptionCodec([(key_id_of(KEY), KEY)]), secret=CODEC_SECRET, port=0)
    server.start()
    yield server
    server.stop()


# -- who may decrypt -------------------------------------------------------------------------


def test_a_caller_without_origin_needs_the_secret(endpoint):
    url = endpoint.url + "/encode"
    assert post(url, plain_body()) == (401, None)
    assert post(url, plain_body(), auth="Bearer not-the-secret")[0] == 401
    assert post(url, plain_body(), auth=CODEC_SECRET)[0] == 401  # the scheme is part of it
    status, sealed = post(url, plain_body(), auth=f"Bearer {CODEC_SECRET}")
    assert status == 200 and sealed["payloads"][0] != plain_body()["payloads"][0]
    status, opened = post(endpoint.url + "/decode", sealed, auth=f"Bearer {CODEC_SECRET}")
    assert status == 200 and opened == plain_body()


def test_another_origin_is_refused_even_with_the_secret(endpoint):
    status, _ = post(
        endpoint.url + "/decode",
        plain_body(),
        origin="http://evil.example",
        auth=f"Bearer {CODEC_SECRET}",
    )
    assert status == 403


def test_the_web_ui_origin_is_served_and_with_require_auth_needs_the_secret_too():
    codec = EncryptionCodec([(key_id_of(KEY), KEY)])
    strict = CodecServer(codec, secret=CODEC_SECRET, port=0, require_auth=True)
    strict.start()
    try:
        assert post(strict.url + "/encode", plain_body(), origin=WEB_UI)[0] == 401
        auth = f"Bearer {CODEC_SECRET}"
        assert post(strict.url + "/encode", plain_body(), origin=WEB_UI, auth=auth)[0] == 200
    finally:
        strict.stop()


def test_a_weak_secret_is_refused_when_the_endpoint_is_made():
    with pytest.raises(RuntimeError, match="at least 32 random bytes"):
        CodecServer(EncryptionCodec([(key_id_of(KEY), KEY)]), secret="short-secret", port=0)


def test_the_secret_is_made_once_owner_only_in_an_owner_only_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PIZZERIA_CODEC_AUTH", raising=False)
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(tmp_path / "new" / ".pizzeria"))
    secret = load_auth_secret()
    made = tmp_path / "new" / ".pizzeria" / "codec.auth"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    assert load_auth_secret() == secret and len(secret) >= 43


# -- what a hostile client cannot do ------------------------------------------------------


def test_a_negative_content_length_is_refused_at_once(endpoint):
    auth = f"Authorization: Bearer {CODEC_SECRET}\r\n".encode()
    head = b"POST /decode HTTP/1.1\r\n" + auth + b"Content-Length: -1\r\n\r\n"
    started = time.monotonic()
    answer = raw(endpoint.port, head)  # no body bytes: none left unread to reset the answer
    assert status_of(answer) == 400, answer[:200]
    assert time.monotonic() - started < 5  # answered, not read until the client closes


def test_an_oversized_content_length_is_refused_before_reading(endpoint):
    huge = str(endpoint_module.MAX_BODY + 1).encode()
    auth = f"Authorization: Bearer {CODEC_SECRET}\r\n".encode()
    answer = raw(
        endpoint.port,
        b"POST /decode HTTP/1.1\r\n" + auth + b"Content-Length: " + huge + b"\r\n\r\n",
    )
    assert status_of(answer) == 413, answer[:200]


def test_a_body_without_a_length_is_refused(endpoint):
    auth = f"Authorization: Bearer {CODEC_SECRET}\r\n".encode()
    chunked = b"Transfer-Encoding: chunked\r\n\r\n"  # its chunks would follow
    answer = raw(endpoint.port, b"POST /decode HTTP/1.1\r\n" + auth + chunked)
    assert status_of(answer) == 411, answer[:200]


@pytest.fixture
def patient_for(monkeypatch) -> Iterator[Callable[[float], CodecServer]]:
    """``patient_for(seconds)``: an endpoint that waits that long on a quiet client, and
    serves 2 clients at once."""
    started: list[CodecServer] = []

    def make(seconds: float) -> CodecServer:
        monkeypatch.setattr(endpoint_module._CodecHandler, "timeout", seconds)
        monkeypatch.setattr(endpoint_module, "MAX_CLIENTS", 2)
        codec = EncryptionCodec([(key_id_of(KEY), KEY)])
        server = CodecServer(codec, secret=CODEC_SECRET, port=0)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_a_client_that_stalls_mid_body_is_cut_off(patient_for):
    impatient = patient_for(0.5)
    auth = f"Authorization: Bearer {CODEC_SECRET}\r\n".encode()
    head = b"POST /decode HTTP/1.1\r\n" + auth + b"Content-Length: 100\r\n\r\n{"
    answer = raw(impatient.port, head, wait=60)  # the endpoint closes; we never do
    assert status_of(answer) == 408, answer[:200]


def test_silent_clients_cannot_take_every_thread(patient_for):
    endpoint = patient_for(10)  # long enough to hold both slots on a busy machine
    silent = [socket.create_connection(("127.0.0.1", endpoint.port)) for _ in range(2)]
    try:
        # A third is turned away at once while the two hold their slots...
        busy = raw(endpoint.port, b"")  # sent nothing: nothing unread to reset the answer
        assert status_of(busy) == 503, busy[:200]
    finally:
        for sock in silent:
            sock.close()

    # ...and once they are gone (their threads see them go), the endpoint serves again;
    # until then a caller may still be turned away, its connection closed unread.
    def serves() -> bool:
        auth = f"Bearer {CODEC_SECRET}"
        try:
            return post(endpoint.url + "/encode", plain_body(), auth=auth)[0] == 200
        except OSError:
            return False

    wait_until(serves, "the endpoint to serve again", seconds=30)


def test_a_client_that_trickles_its_headers_is_cut_off(patient_for, monkeypatch):
    # Each byte comes well within the idle timeout; the head as a whole never does.
    monkeypatch.setattr(endpoint_module, "HEAD_SECONDS", 1.0, raising=False)
    endpoint = patient_for(2)
    with socket.create_connection(("127.0.0.1", endpoint.port)) as sock:
        sock.settimeout(0.5)
        sock.sendall(b"POST /decode HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 8:
            try:
                sock.sendall(b"X")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < 5


# -- the commands ---------------------------------------------------------------------------


def test_codec_server_refuses_an_unsafe_secret_file_in_one_line(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    secret = data / "codec.auth"
    secret.write_text(CODEC_SECRET + "\n")
    secret.chmod(0o666)
    env = stack_env(data, PIZZERIA_CODEC_KEY=base64.b64encode(KEY).decode())
    done = run_pizzeria("codec-server", "--port", "0", env=env, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "can be written by others" in lines[0], done.stderr


def test_the_temporal_cli_is_told_how_to_send_the_secret(tmp_path: Path):
    """`pizzeria codec-server` says where the secret is and how `temporal` sends it."""
    data = tmp_path / "data"
    env = stack_env(data, PIZZERIA_CODEC_KEY=base64.b64encode(KEY).decode())
    with subprocess.Popen(
        [PIZZERIA, "codec-server", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]
        finally:
            process.terminate()
            process.wait(timeout=30)
    said = "".join(lines)
    assert f'--codec-auth "Bearer $(cat {data / "codec.auth"})"' in said, said
    assert (data / "codec.auth").read_text().strip() not in said  # the path, never the secret


def test_a_payload_under_a_key_the_endpoint_lacks_is_said_with_the_key_it_needs(endpoint):
    """After a rotation, the Web UI is told which key is missing, not only "CodecKeyError"."""
    auth = f"Bearer {CODEC_SECRET}"
    status, sealed = post(endpoint.url + "/encode", plain_body(), auth=auth)
    assert status == 200
    other_key = bytes(reversed(range(32)))
    other = CodecServer(
        EncryptionCodec([(key_id_of(other_key), other_key)]), secret=CODEC_SECRET, port=0
    )
    other.start()
    try:
        request = urllib.request.Request(
            other.url + "/decode", data=json.dumps(sealed).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", auth)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        said = json.loads(refused.value.read())
        refused.value.close()
    finally:
        other.stop()
    assert refused.value.code == 400 and said["error"] == "CodecKeyError"
    assert f"key '{key_id_of(KEY)}', which this process does not have" in said["message"]
    assert base64.b64encode(KEY).decode() not in json.dumps(said)  # ids, never keys
