"""That the provider answering at a URL is the data folder's own, before anything is sent.

The local provider listens on a port of 127.0.0.1, where any program of any user of the
machine could listen first (or next, once ours stopped). Whoever answers there would
receive the holds, with the card numbers in them. So a client that follows the data
folder's provider (``payments.url``) asks it first to prove that it holds the folder's
provider secret (``payments.secret``, beside ``payments.db``, readable by the folder's
owner alone): it sends a fresh random challenge, and the provider answers with an HMAC,
under that secret, of the challenge and of the address the connection reached it at
(which a program relaying the question from another port cannot change). Nothing about
an order or a card is in the question; the answer tells a stranger nothing it could use.
A provider named by ``PIZZERIA_PAYMENTS_URL`` is the operator's choice (Stripe's HTTPS
proves itself) and is not asked.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pizzeria.private import UnsafeSecret, check_secret_strength, read_private_file

#: The provider's one route outside Stripe's API. No key is needed to ask it.
PROOF_PATH = "/v1/pizzeria/proof"
_LABEL = b"pizzeria local payment provider proof\x00"
#: A challenge: 32 to 128 hex digits (the clients send 32 random bytes).
NONCE_DIGITS = (32, 128)


class NotOurProvider(ConnectionError):
    """The provider at the URL could not prove that it is the data folder's own."""


def proof_of(secret: bytes, challenge: str, reached: str) -> str:
    """The answer to ``challenge`` of a provider holding ``secret``, asked on a connection
    that reached it at ``reached`` (``ip:port``, the provider's end of the connection as
    the caller dialled it). With the address in it, a program on another port cannot pass
    the challenge on to the real provider and its answer back: the provider signs the
    address it was reached at, not the one the caller dialled."""
    message = _LABEL + challenge.encode() + b"\x00" + reached.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def address_of(end: tuple[object, ...]) -> str:
    """``ip:port`` of a socket address (an IPv6 one has four parts)."""
    return f"{end[0]}:{end[1]}"


def valid_challenge(challenge: str) -> bool:
    low, high = NONCE_DIGITS
    return low <= len(challenge) <= high and all(c in "0123456789abcdef" for c in challenge)


def secret_file_beside(url_file: Path) -> Path:
    """The data folder's provider secret, in the folder of its ``payments.url``."""
    return url_file.with_name("payments.secret")


def folder_secret(secret_file: Path) -> bytes:
    """The provider secret, as the provider reads it (`private.private_secret`), never made
    here: with no secret, no provider of this folder ever ran, and none can prove itself.

    Raises:
        NotOurProvider: there is no secret, or it is not a private, strong one.
    """
    try:
        text = read_private_file(secret_file, "payment provider's secret")
        return check_secret_strength(text, str(secret_file)).encode()
    except FileNotFoundError:
        raise NotOurProvider(
            f"there is no {secret_file}: no payment provider of this data folder ever ran"
        ) from None
    except (OSError, ValueError, UnsafeSecret) as error:
        raise NotOurProvider(f"cannot read {secret_file}: {error}") from None


def ask(connection: http.client.HTTPConnection, secret: bytes, url: str) -> None:
    """Ask the provider on ``connection`` (opened, nothing sent on it yet) for its proof.

    Raises:
        NotOurProvider: it answered otherwise, or not at all.
    """
    challenge = secrets.token_hex(32)
    try:
        if connection.sock is None:
            connection.connect()
        dialled = address_of(connection.sock.getpeername())
        connection.request("GET", f"{PROOF_PATH}?challenge={challenge}")
        response = connection.getresponse()
        body = response.read(4096)
    except (OSError, http.client.HTTPException) as error:
        raise NotOurProvider(
            f"the payment provider at {url} did not answer the question that proves it is "
            f"this data folder's ({error or type(error).__name__}); nothing was sent to it"
        ) from None
    try:  # whatever a stranger sends is read as no proof (deep nesting, not text...)
        answer = json.loads(body).get("proof") if response.status == 200 else None
    except Exception:
        answer = None
    if not isinstance(answer, str) or not answer.isascii():
        raise NotOurProvider(_stranger(url))
    if not hmac.compare_digest(answer.encode(), proof_of(secret, challenge, dialled).encode()):
        raise NotOurProvider(_stranger(url))


def proves(url: str, secret_file: Path, timeout: float = 2.0) -> bool:
    """Whether the provider at ``url`` (``http://host:port``) proves that it holds the
    secret in ``secret_file``."""
    parts = urlsplit(url)
    try:
        secret = folder_secret(secret_file)
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout
        )
    except (NotOurProvider, ValueError):
        return False
    try:
        ask(connection, secret, url)
    except NotOurProvider:
        return False
    finally:
        connection.close()
    return True


def listening(url: str, timeout: float = 0.5) -> bool:
    """Whether anything accepts a connection at ``url`` (nothing is sent to it)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port), timeout):
            return True
    except (OSError, ValueError):
        return False


def _stranger(url: str) -> str:
    return (
        f"the payment provider answering at {url} is not this data folder's: it cannot "
        "prove that it holds the folder's payments.secret (another program may have taken "
        "its port); nothing was sent to it"
    )
