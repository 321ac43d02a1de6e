"""The data folder's private files: the API secret, the codec key, the codec endpoint's secret.

The data folder (config.data_dir) is created owner-only (0700). A secret or key file is
read only when nobody else could have written it: owned by this user (or root), not
writable by group or others, in a folder no other user can write (a sticky folder such as
/tmp aside), and not a link another user planted. Whoever could write it could forge every
order token or plant a key of their own, so anything else is refused with one line saying
what to fix. A secret must hold at least 32 random bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

#: The random bytes a secret must hold at least (HMAC-SHA256 keys, the codec endpoint's).
SECRET_BYTES = 32
#: Fewer different values than this among a secret's bytes: made by hand, not at random.
MIN_DIFFERENT_BYTES = 16
_HEX = re.compile(r"[0-9a-fA-F]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class UnsafeSecret(RuntimeError):
    """A secret or key file others could have written, or a secret too short (one line)."""


def make_private_dir(path: Path) -> Path:
    """``path`` (and any missing parent), the folder itself created owner-only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, the file owner-only (0600) whatever the umask: a file
    the readers refuse when others could write it (`read_private_file`) is made so."""
    draft = _private_draft(path, text)
    try:
        os.replace(draft, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(draft)
        raise


def _private_draft(path: Path, text: str) -> Path:
    """A new owner-only file beside ``path`` holding ``text``, to be put in its place."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return draft


def file_version(info: os.stat_result) -> tuple[int, ...]:
    """What tells a reader of a private file that it changed since it was read: a new file
    in its place (the inode), its contents (the time, the size), and whether it may be read
    at all (its mode and owner: a `chmod` decides what `read_private_file` refuses)."""
    return (info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode, info.st_uid)


def read_private_file(path: Path, what: str) -> str:
    """The text of a secret or key file, refused (`UnsafeSecret`) unless private.

    Raises:
        FileNotFoundError: there is no such file.
    """
    _refuse_planted_link(path, what)
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(descriptor, encoding="utf-8", errors="replace") as handle:
        _refuse_unless_private(os.fstat(descriptor), path, what, "file")
        _refuse_unless_private(os.stat(path.absolute().parent), path.parent, what, "folder")
        # A link of ours to a file in another folder: whoever can write that folder can
        # replace the file (a link to a key kept elsewhere is fine when that folder is ours).
        target = path.resolve().parent
        if target != path.absolute().parent.resolve():
            _refuse_unless_private(os.stat(target), target, what, "folder")
        return handle.read()


def _trusted_owner(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


#: The most links followed to reach a secret (the kernel's own limit on Linux).
MAX_LINKS = 40


def _refuse_planted_link(path: Path, what: str) -> None:
    """Every link on the way from ``path`` to its file: made by us (or root), and past the
    first (whose folder the caller checks), in a folder nobody else can write: whoever can
    replace a link on the way chooses the file that is read."""
    hop = path.absolute()
    for followed in range(MAX_LINKS):
        with_link = os.lstat(hop)
        if not stat.S_ISLNK(with_link.st_mode):
            return
        if not _trusted_owner(with_link.st_uid):
            raise UnsafeSecret(
                f"{hop} is a link made by another user (uid {with_link.st_uid}): refusing it "
                f"as the {what}; remove it"
            )
        if followed:
            _refuse_unless_private(os.stat(hop.parent), hop.parent, what, "folder")
        hop = hop.parent / os.readlink(hop)  # an absolute target replaces the folder


def _refuse_unless_private(info: os.stat_result, path: Path, what: str, kind: str) -> None:
    _refuse_foreign_owner(info, f"the {what} {kind} {path}")
    sticky = kind == "folder" and info.st_mode & stat.S_ISVTX
    if info.st_mode & 0o022 and not sticky:
        mode = stat.S_IMODE(info.st_mode)
        fix = "chmod 600" if kind == "file" else "chmod 700"
        raise UnsafeSecret(
            f"the {what} {kind} {path} can be written by others (mode {mode:o}): refusing "
            f"it; run `{fix} {path}`"
        )


def refuse_foreign_file(path: Path, what: str) -> None:
    """Refuse (`UnsafeSecret`) a file another user owns (root excepted): in a folder others
    may create files in (a sticky, world-writable one), they could have made it first,
    with contents of their choosing (a ledger's stock, a provider's payments). No such
    file is fine: it is made ours."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    _refuse_foreign_owner(info, f"the {what} {path}")


def _refuse_foreign_owner(info: os.stat_result, named: str) -> None:
    if not _trusted_owner(info.st_uid):
        raise UnsafeSecret(
            f"{named} belongs to another user (uid {info.st_uid}), who could have written "
            "it: refusing it; make it yours (chown) or remove it"
        )


#: The files SQLite keeps beside a database: each is read into it when it opens.
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def refuse_foreign_database(path: Path, what: str) -> None:
    """`refuse_foreign_file` for an SQLite database and the files SQLite keeps beside it:
    a write-ahead log planted beside our own file rewrites it when it opens."""
    for suffix in SQLITE_COMPANIONS:
        refuse_foreign_file(path.with_name(path.name + suffix), what)


def readable_by_others(path: Path) -> str | None:
    """Why others on this machine can read the secret file ``path``, or into the folder
    ``path`` (its mode), or None when they cannot (or there is no such file). Read by
    `pizzeria doctor`: a secret that others can read is used, but said."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        if mode & 0o055:
            return f"{path} can be read by others (mode {mode:o}): run `chmod 700 {path}`"
    elif mode & 0o044:
        return f"{path} can be read by others (mode {mode:o}): run `chmod 600 {path}`"
    return None


def decoded_secret(text: str) -> bytes:
    """The bytes of a secret written as hex or as base64url (none: neither)."""
    text = text.strip()
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        return bytes.fromhex(text)
    if _BASE64URL.fullmatch(text):
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return b""
    return b""


def check_secret_strength(text: str, where: str) -> str:
    """``text`` stripped, unless it holds fewer than SECRET_BYTES random bytes: fewer
    bytes, or bytes too few of which differ (64 zeros, 43 a's, a short pattern repeated:
    32 random bytes hold about 30 different values, and fewer than 16 never happens)."""
    decoded = decoded_secret(text)
    make_one = "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    if len(decoded) < SECRET_BYTES:
        raise UnsafeSecret(
            f"{where} must hold at least {SECRET_BYTES} random bytes, written as "
            f"{2 * SECRET_BYTES} hex digits or 43 base64url characters; {make_one}"
        )
    different = len(set(decoded))
    if different < MIN_DIFFERENT_BYTES:
        raise UnsafeSecret(
            f"{where} is not random: its {len(decoded)} bytes hold only {different} "
            f"different value{'' if different == 1 else 's'} (32 random bytes hold about 30, "
            f"never fewer than {MIN_DIFFERENT_BYTES}); {make_one}"
        )
    return text.strip()


def private_secret(path: Path, what: str) -> str:
    """The secret kept in ``path``, made on first use (32 random bytes, base64url, 0600),
    refused (`UnsafeSecret`) when others could have written it or it is too short."""
    if not os.path.lexists(path):
        _create_secret(path)
    return check_secret_strength(read_private_file(path, what), str(path))


def _create_secret(path: Path) -> None:
    make_private_dir(path.parent)
    draft = _private_draft(path, secrets.token_urlsafe(SECRET_BYTES) + "\n")
    # A link never replaces a file: when two processes start at once, the first secret
    # stays and both read it, so nothing is ever signed with a secret that is then lost.
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
