"""Who may see what: each order's token, and the staff key for everything.

An order token is an HMAC of the order's workflow id under a server secret. Nobody can
derive another customer's token from an order number, the API keeps no table of tokens
(a restart loses nothing, and several API processes sharing the secret agree), and a
retried order gets the same token back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from pizzeria import config
from pizzeria.api.problems import ApiProblem
from pizzeria.models import workflow_id_for

SECRET_ENV = "PIZZERIA_API_SECRET"
STAFF_KEY_ENV = "PIZZERIA_API_KEY"
MIN_SECRET_LENGTH = 16


class SecretError(RuntimeError):
    """The configured secret or staff key cannot be used (one line for the user)."""


def secret_file() -> Path:
    return config.data_dir() / "api.secret"


def load_secret() -> bytes:
    """``$PIZZERIA_API_SECRET``, else the data folder's secret, made on first use (0600)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        if len(from_env.strip()) < MIN_SECRET_LENGTH:
            raise SecretError(f"{SECRET_ENV} must hold at least {MIN_SECRET_LENGTH} characters")
        return from_env.strip().encode()
    path = secret_file()
    if not path.exists():
        _create_secret(path)
    text = path.read_text().strip()
    if len(text) < MIN_SECRET_LENGTH:
        raise SecretError(f"{path} holds no usable secret: delete it and a new one is made")
    return text.encode()


def _create_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    # A link never replaces a file: when two processes start at once, the first secret
    # stays and both read it, so no token is ever signed with a secret that is then lost.
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()


def load_staff_key() -> str | None:
    key = os.environ.get(STAFF_KEY_ENV, "").strip()
    if key and len(key) < MIN_SECRET_LENGTH:
        raise SecretError(f"{STAFF_KEY_ENV} must hold at least {MIN_SECRET_LENGTH} characters")
    return key or None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


@dataclass(frozen=True)
class Keys:
    secret: bytes
    staff_key: str | None

    def order_token(self, order_number: str) -> str:
        message = workflow_id_for(order_number).encode()
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def is_staff(self, credential: str) -> bool:
        return self.staff_key is not None and _same(credential, self.staff_key)

    def may_see(self, credential: str, order_number: str) -> bool:
        return self.is_staff(credential) or _same(credential, self.order_token(order_number))


bearer = HTTPBearer(
    auto_error=False,
    description="The order token from POST /orders, or the staff key (PIZZERIA_API_KEY)",
)
query_token = APIKeyQuery(
    name="token",
    auto_error=False,
    description="The same, for clients that cannot set headers (EventSource)",
)


def credential(
    header: HTTPAuthorizationCredentials | None = Depends(bearer),
    token: str | None = Depends(query_token),
) -> str | None:
    if header is not None and header.credentials:
        return header.credentials
    return token or None


def keys_of(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


def unauthorized(what: str) -> ApiProblem:
    return ApiProblem(
        401,
        f"send {what} as 'Authorization: Bearer <token>' or '?token=<token>'",
        slug="unauthorized",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_order_access(request: Request, order_number: str, given: str | None) -> None:
    """The order's own token or the staff key; anything else learns nothing of the order.

    A token that does not open this order number gets the same 401 whether the order
    exists or not; only a credential that does open it can get a 404.
    """
    if given is None or not keys_of(request).may_see(given, order_number):
        raise unauthorized("this order's token")


def require_staff(request: Request, given: str | None) -> None:
    if given is None or not keys_of(request).is_staff(given):
        raise unauthorized("the staff key (PIZZERIA_API_KEY)")
