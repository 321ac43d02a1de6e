"""Who may see what: each order's token, and the staff key for everything.

An order token opens one run of one order until it expires: it is
``<expiry>.<run id>.<HMAC>``, the HMAC under the server's secret of the order's workflow
id, that run id and that expiry. Nobody can derive another customer's token from an order
number; a later run of the same order number (the CLI's ``--again``, or a number used
again once Temporal forgot the first) has another run id, which an earlier token does
not open; and after its expiry a token opens nothing. The API keeps no table of tokens
(a restart loses nothing, and API processes sharing the secret accept each other's).

Credentials travel in the ``Authorization`` header. Only the event stream also reads
``?token=`` (an ``EventSource`` cannot set headers), and only for an order token: the
staff key is never taken from an address, which ends up in logs and browser histories.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import config
from pizzeria.api.limits import ApiLimits
from pizzeria.api.problems import ApiProblem
from pizzeria.client import status_name
from pizzeria.models import workflow_id_for
from pizzeria.private import UnsafeSecret, check_secret_strength, private_secret

SECRET_ENV = "PIZZERIA_API_SECRET"
STAFF_KEY_ENV = "PIZZERIA_API_KEY"
MIN_SECRET_LENGTH = 16


class SecretError(RuntimeError):
    """The configured secret or staff key cannot be used (one line for the user)."""


def secret_file() -> Path:
    return config.api_secret_file()


def load_secret() -> bytes:
    """``$PIZZERIA_API_SECRET``, else the data folder's secret, made on first use (0600).

    Either must hold at least 32 random bytes, and the file must be private (see
    pizzeria.private): whoever can write the secret can forge every order token.
    """
    from_env = os.environ.get(SECRET_ENV)
    try:
        if from_env is not None:
            return check_secret_strength(from_env, SECRET_ENV).encode()
        return private_secret(secret_file(), "API secret").encode()
    except UnsafeSecret as unsafe:
        raise SecretError(str(unsafe)) from None


def load_staff_key() -> str | None:
    key = os.environ.get(STAFF_KEY_ENV, "").strip()
    if key and len(key) < MIN_SECRET_LENGTH:
        raise SecretError(f"{STAFF_KEY_ENV} must hold at least {MIN_SECRET_LENGTH} characters")
    return key or None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


TOKEN_SHAPE = re.compile(r"([0-9a-f]{1,12})\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})")
TOKEN_CONTEXT = b"pizzeria order token v2"
BODY_CONTEXT = b"pizzeria order request body"


@dataclass(frozen=True)
class Keys:
    secret: bytes
    staff_key: str | None
    token_seconds: float = ApiLimits().token_seconds

    def expiry(self, now: float | None = None) -> int:
        """When a token issued now stops opening its order (Unix seconds)."""
        return int((time.time() if now is None else now) + self.token_seconds)

    def order_token(self, order_number: str, run_id: str, expires: int) -> str:
        return f"{expires:x}.{run_id}.{self._mac(order_number, run_id, expires)}"

    def _mac(self, order_number: str, run_id: str, expires: int) -> str:
        message = b"\0".join(
            [
                TOKEN_CONTEXT,
                workflow_id_for(order_number).encode(),
                run_id.encode(),
                b"%d" % expires,
            ]
        )
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def body_fingerprint(self, body: Any, staff: bool) -> str:
        """What tells one request's body from another's under an Idempotency-Key, and
        whose it was (staff's or a customer's): keyed by the secret, so that the key table
        (its ``body_sha256``), which anyone who reads the ledger's database reads, gives
        nobody a hash to try card numbers against."""
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        caller = b"staff" if staff else b"customer"
        message = b"\0".join([BODY_CONTEXT, caller, canonical.encode()])
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def opened_run(
        self, credential: str, order_number: str, now: float | None = None
    ) -> str | None:
        """The run of ``order_number`` this order token opens; None when it opens none
        (not a token, not this order's, tampered with, or expired)."""
        opened = self.opened(credential, order_number, now)
        return None if opened is None else opened[0]

    def opened(
        self, credential: str, order_number: str, now: float | None = None
    ) -> tuple[str, int] | None:
        """The run of ``order_number`` this order token opens and until when (Unix
        seconds); None when it opens none."""
        signed = self.signed(credential, order_number)
        if signed is None or signed[1] <= (time.time() if now is None else now):
            return None
        return signed

    def signed(self, credential: str, order_number: str) -> tuple[str, int] | None:
        """The run and the expiry of a token this API gave for ``order_number``, expired
        or not; None for anything else."""
        shape = TOKEN_SHAPE.fullmatch(credential)
        if shape is None:
            return None
        expiry, run_id, mac = shape.groups()
        expires = int(expiry, 16)
        if expiry != f"{expires:x}":
            return None  # one spelling per token: 0<token> would count as another token
        if not _same(mac, self._mac(order_number, run_id, expires)):
            return None
        return run_id, expires

    def is_staff(self, credential: str) -> bool:
        return self.staff_key is not None and _same(credential, self.staff_key)


bearer = HTTPBearer(
    auto_error=False,
    description="The order token from POST /orders, or the staff key (PIZZERIA_API_KEY)",
)
query_token = APIKeyQuery(
    name="token",
    auto_error=False,
    description="The order token, for clients that cannot set headers (EventSource); "
    "only the event stream reads it, and never as the staff key",
)


async def credential(
    header: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> str | None:
    """The credential of the Authorization header (the only place most routes read).

    ``async`` though it awaits nothing: FastAPI runs a plain function dependency on a
    thread of its pool, a hand-off to a thread and back on every request.
    """
    return header.credentials if header is not None and header.credentials else None


@dataclass(frozen=True)
class StreamCredential:
    value: str | None
    from_query: bool


async def stream_credential(  # async: no thread (see credential)
    header: HTTPAuthorizationCredentials | None = Depends(bearer),
    token: str | None = Depends(query_token),
) -> StreamCredential:
    """The event stream's credential: the header's, else ``?token=``."""
    if header is not None and header.credentials:
        return StreamCredential(header.credentials, from_query=False)
    return StreamCredential(token or None, from_query=True)


def keys_of(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


def unauthorized(what: str, *, query: bool = False) -> ApiProblem:
    how = "'Authorization: Bearer <token>'" + (" or '?token=<token>'" if query else "")
    return refused_credential(f"send {what} as {how}")


def refused_credential(detail: str) -> ApiProblem:
    """The 401 of every credential refused (none, or not the one asked for)."""
    return ApiProblem(401, detail, slug="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def expired(keys: Keys, given: str, order_number: str) -> ApiProblem | None:
    """The 401 of this order's own token once expired (it says so: only the token's holder
    can learn it); None for any other credential."""
    signed = keys.signed(given, order_number)
    if signed is None:
        return None
    when = datetime.fromtimestamp(signed[1], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ApiProblem(
        401,
        f"this order's token expired at {when}: a token opens its order for a limited "
        "time; the pizzeria's staff can still look the order up",
        slug="token-expired",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def no_such_order() -> ApiProblem:
    return ApiProblem(404, "no such order", slug="order-not-found")


@dataclass(frozen=True)
class OrderAccess:
    """The run a credential opens: the token's own, or for staff the latest."""

    run_id: str
    status: str
    staff: bool
    #: When the token that opened it expires (Unix seconds); None for the staff key.
    expires: int | None = None


async def open_order(
    request: Request, order_number: str, given: str | None, *, from_query: bool = False
) -> OrderAccess:
    """The order's token (for its run, while it is the order's latest) or the staff key;
    anything else learns nothing of the order.

    A credential that does not open this order number gets the same 401 whether the order
    exists or not; only the staff key can get a 404. Temporal is asked only once the
    token's HMAC holds, so a made-up token costs the server nothing but a hash.
    """
    keys = keys_of(request)
    refused = unauthorized("this order's token", query=from_query)
    if given is None:
        raise refused
    staff = not from_query and keys.is_staff(given)
    opened = None if staff else keys.opened(given, order_number)
    if not staff and opened is None:
        raise expired(keys, given, order_number) or refused
    client: Client = request.app.state.client
    try:
        description = await client.get_workflow_handle(workflow_id_for(order_number)).describe()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        raise no_such_order() if staff else refused from None
    if opened is not None and description.run_id != opened[0]:
        raise refused
    expires = None if opened is None else opened[1]
    return OrderAccess(description.run_id, status_name(description.status), staff, expires)


def placed_by_staff(request: Request, given: str | None) -> bool:
    """Who places an order: staff (the staff key), else a customer. A customer who sends
    an order token of an earlier order (a client that attaches its last token to every
    request) places as anyone does; any other credential is refused, as a wrong staff key
    must not pass for a customer's request unnoticed."""
    keys = keys_of(request)
    if given is None or TOKEN_SHAPE.fullmatch(given):
        return False
    if keys.is_staff(given):
        return True
    if keys.staff_key is None:
        raise refused_credential(
            "this API has no staff key (PIZZERIA_API_KEY is not set): place the order "
            "without an Authorization header"
        )
    raise refused_credential(
        "not the staff key: place the order without an Authorization header, or with the "
        "staff key (PIZZERIA_API_KEY) as 'Authorization: Bearer <key>'"
    )


def require_staff(
    request: Request, given: str | None, order_number: str | None = None, doing: str = ""
) -> None:
    """The staff key, else 401; on a route of the order ``order_number``, that order's own
    token is known but may not do what only staff do (``doing``): 403."""
    keys = keys_of(request)
    if given is not None and keys.is_staff(given):
        return
    if given is not None and order_number is not None and keys.opened_run(given, order_number):
        raise ApiProblem(403, f"only staff may {doing} (the staff key)", slug="staff-only")
    raise unauthorized("the staff key (PIZZERIA_API_KEY)")
