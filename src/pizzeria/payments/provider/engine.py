"""One request through the provider, apart from HTTP: route, key, faults, idempotency, the
operation, and the answer to send (or not to send).

Idempotency follows Stripe's documented rules: a POST with an ``Idempotency-Key`` stores
its answer (a success or an error the API produced, a 402 decline included) in the same
transaction as its effect; the same key with the same parameters gets that answer again
(``Idempotent-Replayed: true``); the same key with other parameters, or on another
endpoint, gets 400 ``idempotency_error``. Keys are forgotten after 24 hours, as Stripe
does. An injected 5xx never reaches the API, so it stores nothing.

A request whose key another request is still being processed under (a retry sent while
the first is slow) is answered at once with 409 ``idempotency_key_in_use`` and stores
nothing, as Stripe answers it ("the request conflicts with another request"): the caller
retries later and then gets the first request's answer. A request is being processed from
the moment it passed authentication until its answer is ready, a ``slow`` fault's wait
included.
"""

from __future__ import annotations

import base64
import enum
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pizzeria.payments import cards, proof
from pizzeria.payments.provider import intents, routes
from pizzeria.payments.provider.faults import FaultFileError, ProviderFaults
from pizzeria.payments.provider.objects import Context
from pizzeria.payments.provider.store import Store, StoredAnswer
from pizzeria.payments.provider.wire import ApiError, fingerprint, parse_form
from pizzeria.private import private_secret

log = logging.getLogger("pizzeria.payments.provider")
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
_SECRET_KEY = re.compile(r"^sk_test_[A-Za-z0-9_]{1,200}$")
_PUBLISHABLE_KEY = re.compile(r"^pk_test_[A-Za-z0-9_]{1,200}$")


class Action(enum.Enum):
    ANSWER = "answer"
    REFUSE = "refuse"  # reset the connection, nothing done
    LOSE = "lose"  # the work is done; close the connection without answering


@dataclass
class Request:
    method: str
    path: str
    query: str = ""
    body: str = ""
    authorization: str | None = None
    idempotency_key: str | None = None
    #: ``ip:port`` at which the request reached the provider (its end of the connection).
    reached: str = ""


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    action: Action = Action.ANSWER
    note: str = ""  # for the log: what happened, never a card number


def presented_key(authorization: str | None) -> tuple[str, str]:
    """The API key a request presents, as Stripe reads one: ``("key", key)`` from
    ``Bearer <key>`` or from Basic auth's user name (``curl -u sk_test_...:``); else
    ``("", what was sent)``, to be refused."""
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return "key", value
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value, validate=True).decode("ascii").partition(":")[0]
        except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            return "", value
        return "key", user
    return "", value


def _error(error: ApiError, note: str = "") -> Answer:
    return Answer(error.status, error.body(), note=note or error.code or error.kind)


def _api_error(status: int, message: str) -> Answer:
    return _error(ApiError(status, "api_error", message), "injected" if status >= 500 else "")


KEY_IN_USE = "idempotency_key_in_use"


def _key_in_use(key: str) -> Answer:
    message = (
        f"Another request with the idempotency key '{key}' is still being processed. Try "
        "again once it has finished: the same request then gets its answer."
    )
    answer = _error(ApiError(409, "invalid_request_error", message, code=KEY_IN_USE), "in use")
    answer.headers["Idempotency-Key"] = key
    return answer


class KeysInUse:
    """The idempotency keys of the requests being processed right now."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        """Mark ``key`` in use; False when a request already holds it."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def give_back(self, key: str) -> None:
        with self._lock:
            self._keys.discard(key)


def secret_file_of(data_file: Path) -> Path:
    """The provider's fingerprint secret, beside its data file (``payments.secret`` for
    ``payments.db``), made on first use, owner-only."""
    return data_file.with_suffix(".secret")


class Provider:
    """The provider's logic: its store, its faults, its hold time."""

    def __init__(
        self,
        data_file: Path,
        *,
        hold_seconds: float,
        faults_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = Store(data_file)
        self.secret = private_secret(
            secret_file_of(data_file), "payment provider's fingerprint secret"
        ).encode()
        self.faults = ProviderFaults(faults_file)
        self.hold_seconds = hold_seconds
        self.clock = clock
        self.sleep = sleep
        self.keys_in_use = KeysInUse()

    def close(self) -> None:
        self.store.close()

    def handle(self, request: Request) -> Answer:
        if request.path == proof.PROOF_PATH and request.method == "GET":
            return self._prove(request.query, request.reached)
        found = routes.match(request.method, request.path)
        if found is None:
            message = f"Unrecognized request URL ({request.method}: {request.path[:200]})."
            return _error(ApiError(404, "invalid_request_error", message), "unknown url")
        route, object_id = found
        refused = self._auth(request, route)
        if refused is not None:
            return refused
        key = request.idempotency_key if route.mutating else None
        if key is None:
            return self._handle(route, object_id, request)
        if not self.keys_in_use.take(key):
            return _key_in_use(key)
        try:
            return self._handle(route, object_id, request)
        finally:
            self.keys_in_use.give_back(key)

    def _prove(self, query: str, reached: str) -> Answer:
        """That this provider holds its data folder's secret (`pizzeria.payments.proof`):
        asked by the folder's clients before they send it anything."""
        challenge = parse_qs(query).get("challenge", [""])[0]
        if not proof.valid_challenge(challenge):
            message = "Send ?challenge= with 32 to 128 lowercase hex digits."
            return _error(ApiError(400, "invalid_request_error", message), "bad challenge")
        answer = proof.proof_of(self.secret, challenge, reached)
        body = {"object": "pizzeria.proof", "proof": answer}
        return Answer(200, body, note="proved")

    def _handle(self, route: routes.Route, object_id: str, request: Request) -> Answer:
        """The request with its faults: refused, failed, slowed, its answer lost."""
        try:
            decision = self.faults.decide(route.operation, request.idempotency_key or request.path)
        except FaultFileError as error:
            return _api_error(500, f"the provider's faults file is invalid: {error}")
        if decision.refuse:
            return Answer(0, None, action=Action.REFUSE, note="injected refuse")
        if decision.error_status is not None:
            return _api_error(decision.error_status, "An error occurred with our connection.")
        if decision.delay:
            # Said on arrival, before the wait: a test (or an operator) can tell that a
            # slowed request reached the provider, and is being worked on.
            log.info(
                "%s %s -> slowed %g s (injected slow)", request.method, request.path, decision.delay
            )
            self.sleep(decision.delay)
        try:
            answer = self._execute(route, object_id, request)
        except Exception:  # a bug of ours: rolled back, answered as Stripe answers its own
            log.exception("%s %s failed inside the provider", request.method, request.path)
            return _error(ApiError(500, "api_error", "The provider failed; nothing was done."))
        if decision.lose_answer:
            answer.action = Action.LOSE
            answer.note = f"{answer.note} (answer lost)".strip()
        return answer

    def _auth(self, request: Request, route: routes.Route) -> Answer | None:
        scheme, key = presented_key(request.authorization)
        if scheme == "key" and _SECRET_KEY.match(key):
            return None
        if scheme == "key" and _PUBLISHABLE_KEY.match(key):
            if route.publishable:
                return None
            message = "This API call cannot be made with a publishable API key."
        elif not key:
            message = "You did not provide an API key: send 'Authorization: Bearer sk_test_...'."
        else:
            # As Stripe shows one, but never the whole of a short one.
            shown = f"{key[:8]}****{key[-4:]}" if len(key) >= 20 else "****"
            message = f"Invalid API Key provided: {shown}"
        return _error(ApiError(401, "invalid_request_error", message), "unauthorized")

    def _execute(self, route: routes.Route, object_id: str, request: Request) -> Answer:
        key = request.idempotency_key if route.mutating else None
        try:
            if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
                raise ApiError(400, "invalid_request_error", "Idempotency-Key: 1 to 255 characters")
            params = parse_form(request.body if route.mutating else request.query)
        except ApiError as error:
            return _error(error)
        endpoint = f"{request.method} {request.path}"
        with self.store.transaction():
            now = self.clock()
            ctx = Context(self.store, now, self.hold_seconds, self.secret)
            for expired in intents.expire_due(ctx):
                log.info("hold %s expired (not captured within %gs)", expired, self.hold_seconds)
            if key is None:
                answer = self._run(route, ctx, params, object_id)
            else:
                answer = self._run_once(route, ctx, params, object_id, key, endpoint)
        hint = card_hint(params)
        if hint:
            answer.note = f"{answer.note} {hint}"
        return answer

    def _run(
        self, route: routes.Route, ctx: Context, params: dict[str, Any], object_id: str
    ) -> Answer:
        try:
            body = route.handler(ctx, params, object_id)
        except ApiError as error:
            return _error(error)
        return Answer(200, body, note="ok")

    def _run_once(
        self,
        route: routes.Route,
        ctx: Context,
        params: dict[str, Any],
        object_id: str,
        key: str,
        endpoint: str,
    ) -> Answer:
        """The operation under an idempotency key: done once, its answer kept."""
        digest = fingerprint(endpoint, params, ctx.secret)
        stored = self.store.stored_answer(key, not_before=ctx.now - IDEMPOTENCY_TTL_SECONDS)
        headers = {"Idempotency-Key": key}
        if stored is not None:
            if (stored.endpoint, stored.fingerprint) != (endpoint, digest):
                message = (
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request."
                )
                answer = _error(ApiError(400, "idempotency_error", message), "idempotency_error")
            else:
                answer = Answer(stored.status, stored.body, note="replayed")
                headers["Idempotent-Replayed"] = "true"
            answer.headers.update(headers)
            return answer
        answer = self._run(route, ctx, params, object_id)
        assert answer.body is not None
        self.store.remember(
            key,
            StoredAnswer(endpoint, digest, answer.status, answer.body),
            created=ctx.now,
            forget_before=ctx.now - IDEMPOTENCY_TTL_SECONDS,
        )
        answer.headers.update(headers)
        return answer


def card_hint(params: dict[str, Any]) -> str | None:
    """The card a request sent, as the log may show it: ``card **** 4242``."""
    data = params.get("payment_method_data")
    holder = data if isinstance(data, dict) else params
    card = holder.get("card")
    number = card.get("number") if isinstance(card, dict) else None
    return f"card {cards.masked(number)}" if isinstance(number, str) else None


def request_id() -> str:
    return "req_" + secrets.token_hex(7)


def summary(answer: Answer) -> str:
    """What the log says of an answer: the object, its status, the error's code."""
    body = answer.body or {}
    error = body.get("error")
    shown = error.get("payment_intent") if isinstance(error, dict) else body
    parts = []
    if isinstance(shown, dict):
        for name in ("id", "status"):
            if isinstance(shown.get(name), str):
                parts.append(shown[name])
    if isinstance(error, dict):
        parts.append(str(error.get("decline_code") or error.get("code") or error.get("type")))
    return " ".join(parts)
