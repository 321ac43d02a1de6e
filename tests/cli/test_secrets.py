"""Secrets under attack: whoever can write a secret or a key forges tokens or plants a key.

The data folder is made owner-only; the API secret and the codec key are read only when
nobody else could have written them (owner, mode, folder, planted link), and a secret
given in the environment must hold at least 32 random bytes. Each refusal is one line.
The tests run as root, so "another user" is uid 65534 (nobody).
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from pizzeria.api.auth import SecretError, load_secret
from pizzeria.ops.processes import free_port
from pizzeria.private import SECRET_BYTES, decoded_secret
from pizzeria.temporal.codec import CodecKeyError, load_keys
from tests.helpers import run_pizzeria
from tests.helpers.orders import GOOD_SECRET
from tests.helpers.stack import stack_env

NOBODY = 65534


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder not made yet, with no secret or key from the environment."""
    for name in ("PIZZERIA_API_SECRET", "PIZZERIA_CODEC_KEY", "PIZZERIA_CODEC_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "home" / ".pizzeria"
    monkeypatch.setenv("PIZZERIA_DATA_DIR", str(folder))
    return folder


def api_secret() -> bytes:
    return load_secret()


def codec_keys() -> object:
    return load_keys()


#: What reads each file, the file's name, and the error it refuses with.
READERS: dict[str, tuple[Callable[[], object], str, type[Exception]]] = {
    "API secret": (api_secret, "api.secret", SecretError),
    "codec key": (codec_keys, "codec.key", CodecKeyError),
}


def made(data: Path, reader: str) -> Path:
    """The file as its reader makes it on first use."""
    read, name, _ = READERS[reader]
    read()
    return data / name


@pytest.mark.parametrize("reader", list(READERS))
def test_the_data_folder_and_the_file_are_made_owner_only(data, reader):
    path = made(data, reader)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = READERS[reader][0]()
    assert READERS[reader][0]() == first  # made once, then read


@pytest.mark.parametrize("reader", list(READERS))
def test_a_file_others_can_write_is_refused(data, reader):
    path = made(data, reader)
    read, _, error = READERS[reader]
    for mode in (0o666, 0o620, 0o602):
        path.chmod(mode)
        with pytest.raises(error) as refused:
            read()
        message = str(refused.value)
        assert "can be written by others" in message and f"chmod 600 {path}" in message
        assert "\n" not in message
    path.chmod(0o600)
    read()
    path.chmod(0o644)  # readable by others is not writable: a mount of read-only secrets
    read()


@pytest.mark.parametrize("reader", list(READERS))
def test_a_file_another_user_owns_is_refused(data, reader):
    path = made(data, reader)
    read, _, error = READERS[reader]
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(error, match=f"belongs to another user \\(uid {NOBODY}\\)"):
        read()
    os.chown(path, 0, 0)  # root's own (a mounted secret): trusted
    read()


@pytest.mark.parametrize("reader", list(READERS))
def test_a_folder_others_can_write_is_refused_unless_sticky(data, reader):
    made(data, reader)
    read, _, error = READERS[reader]
    data.chmod(0o777)
    with pytest.raises(error, match=r"folder .* can be written by others"):
        read()
    data.chmod(0o1777)  # like /tmp: nobody may replace another user's file
    read()
    data.chmod(0o700)
    os.chown(data, NOBODY, NOBODY)
    with pytest.raises(error, match=r"folder .* belongs to another user"):
        read()


@pytest.mark.parametrize("reader", list(READERS))
def test_a_link_another_user_planted_is_refused(data, reader, tmp_path):
    read, name, error = READERS[reader]
    data.mkdir(parents=True, mode=0o700)
    # Planted before first use: a link to a file of ours whose content the attacker knows.
    known = tmp_path / "known.txt"
    known.write_text(GOOD_SECRET + "\n" if name == "api.secret" else "")
    os.symlink(known, data / name)
    os.lchown(data / name, NOBODY, NOBODY)
    with pytest.raises(error, match="link made by another user"):
        read()


@pytest.mark.parametrize("reader", list(READERS))
def test_every_link_on_the_way_to_the_file_is_checked(data, reader, tmp_path):
    """A link of ours to a link another user made (or one in a folder others can write):
    its owner chooses the file read, though the file and its folder are private."""
    path = made(data, reader)
    read, name, error = READERS[reader]
    kept = tmp_path / "kept"
    kept.mkdir(mode=0o700)
    path.rename(kept / name)
    middle = tmp_path / "middle"
    middle.mkdir(mode=0o700)
    os.symlink(kept / name, middle / "link")
    os.symlink(middle / "link", path)
    first = read()  # links of ours, in folders of ours: fine
    assert read() == first
    os.lchown(middle / "link", NOBODY, NOBODY)
    with pytest.raises(error, match=f"{middle / 'link'} is a link made by another user"):
        read()
    os.lchown(middle / "link", 0, 0)
    middle.chmod(0o777)  # anyone may replace our link there
    with pytest.raises(error, match=f"folder {middle} can be written by others"):
        read()
    middle.chmod(0o1777)  # sticky, like /tmp: nobody may replace another user's link
    assert read() == first


@pytest.mark.parametrize("reader", list(READERS))
def test_a_link_of_ours_to_a_file_in_a_folder_others_can_write_is_refused(data, reader, tmp_path):
    path = made(data, reader)
    read, name, error = READERS[reader]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    kept = elsewhere / name
    path.rename(kept)
    os.symlink(kept, path)
    first = read()  # a folder of ours: the key may be kept there
    assert read() == first
    os.chown(elsewhere, NOBODY, NOBODY)  # another user's folder: they can replace the file
    with pytest.raises(error, match=f"folder {elsewhere} belongs to another user"):
        read()
    os.chown(elsewhere, 0, 0)
    elsewhere.chmod(0o777)
    with pytest.raises(error, match=f"folder {elsewhere} can be written by others"):
        read()


SHORT = "must hold at least 32 random bytes"


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", None),  # 32 bytes
        (GOOD_SECRET, None),  # 43 base64url characters: 32 bytes
        (base64.urlsafe_b64encode(bytes(range(48))).decode(), None),
        ("0123456789abcdef" * 3, SHORT),  # 48 hex digits: 24 bytes
        (GOOD_SECRET[:42], SHORT),  # 31 bytes
        ("correct horse battery staple, really long!", SHORT),  # not hex, not base64url
        ("x" * 16, SHORT),  # what was enough before: 16 characters
        # 32 bytes, long enough, but too few different: said so, not "too short"
        ("0" * 64, "is not random: its 32 bytes hold only 1 different value "),
        ("a" * 43, "is not random: its 32 bytes hold only 3 different values "),
        ("0123456789abcdef" * 4, "is not random: its 32 bytes hold only 8 different values "),
    ],
)
def test_an_api_secret_from_the_environment_needs_32_random_bytes(
    data, monkeypatch, value, refusal
):
    monkeypatch.setenv("PIZZERIA_API_SECRET", value)
    if refusal is None:
        assert load_secret() == value.encode()
        assert len(decoded_secret(value)) >= SECRET_BYTES
        return
    with pytest.raises(SecretError, match=f"^PIZZERIA_API_SECRET {refusal}") as refused:
        load_secret()
    assert "\n" not in str(refused.value)
    if refusal != SHORT:  # it is long enough: the refusal does not say it is too short
        assert "at least 32" not in str(refused.value) and "43 base64url" not in str(refused.value)


def test_pizzeria_api_refuses_an_unsafe_secret_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "api.secret").write_text(GOOD_SECRET + "\n")
    (data / "api.secret").chmod(0o666)
    done = run_pizzeria("api", "--port", str(free_port()), env=stack_env(data), timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "can be written by others" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_pizzeria_api_refuses_a_short_secret_in_one_line(tmp_path):
    env = stack_env(tmp_path / "data", PIZZERIA_API_SECRET="sixteen-chars-ok")
    done = run_pizzeria("api", "--port", str(free_port()), env=env, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least 32 random bytes" in lines[0], done.stderr


def test_pizzeria_api_says_why_a_long_enough_secret_is_refused(tmp_path):
    """43 base64url characters are 32 bytes: a secret of 43 a's is refused for what it is
    (too few different bytes, not random), not for a length it has."""
    env = stack_env(tmp_path / "data", PIZZERIA_API_SECRET="a" * 43)
    done = run_pizzeria("api", "--port", str(free_port()), env=env, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PIZZERIA_API_SECRET is not random" in lines[0], done.stderr
    assert "3 different values" in lines[0] and "at least 32" not in lines[0], done.stderr


def test_a_worker_refuses_a_planted_codec_key_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    key = base64.b64encode(bytes(32)).decode()
    (data / "codec.key").write_text(f"planted:{key}\n")
    os.chown(data / "codec.key", NOBODY, NOBODY)
    done = run_pizzeria("worker", env=stack_env(data, TEMPORAL_ADDRESS="127.0.0.1:1"), timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "belongs to another user" in lines[0], done.stderr


def test_a_ledger_or_payments_file_another_user_planted_is_refused_in_one_line(tmp_path):
    """In a folder others may create files in (sticky and world-writable, as /tmp), another
    user can make the ledger first, with the stock of their choosing, or the provider's
    payments: a file of theirs is refused, never used."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for name, command in (
        ("ledger.db", ("worker", "--address", "127.0.0.1:1")),
        ("ledger.db", ("stock",)),
        # A write-ahead log beside our own ledger rewrites it when SQLite opens it.
        ("ledger.db-wal", ("stock",)),
        ("payments.db", ("payments", "--port", "0")),
    ):
        planted = shared / name
        planted.write_bytes(b"")
        os.chown(planted, NOBODY, NOBODY)
        done = run_pizzeria(*command, env=stack_env(shared), timeout=60)
        assert done.returncode in (1, 2), (command, done.returncode, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (command, done.stderr)
        assert f"{planted} belongs to another user (uid {NOBODY})" in lines[0], lines[0]
        planted.unlink()
