"""Placing an order over HTTP: who chooses its number, who sets its settings, and retries.

- Anonymous callers never choose an order number: the API gives each order an
  unguessable one (``WEB-`` and 16 base32 characters, 80 random bits), so nobody can learn
  which numbers exist or claim a predictable one (``XD001``) before its customer. A body
  that names one is refused with 422 naming ``order_number``. Staff (the API key) may
  choose theirs, as the exercise's own clients do (they talk to Temporal directly).
- Only staff may send ``settings`` (preparation time, attempts, the fast path): 403.
- An ``Idempotency-Key`` is bound to its first body and number in the key table
  (idempotency.py); a retry with it gets the same number and token back, the same key
  with another body is a 422. The order's memo also says which request started it (a
  hash of the key, and of the body), so two requests racing with one key start one order.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from pizzeria.api.auth import keys_of
from pizzeria.api.idempotency import KeyTable, KeyTableUnavailable, KeyUse, key_hash
from pizzeria.api.problems import ApiProblem, invalid
from pizzeria.client import OrderAlreadyCompleted, OrderAlreadyRunning, start_order
from pizzeria.models import PizzaOrder, workflow_id_for

log = logging.getLogger(__name__)

#: The memo entry that says which request started an order.
API_MEMO = "api_request"
NUMBER_PREFIX = "WEB-"


@dataclass(frozen=True)
class Placed:
    order_number: str
    token: str
    expires: int


def new_order_number() -> str:
    """An order number nobody can guess: 80 random bits."""
    return NUMBER_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode()


def body_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def refuse_staff_fields(body: Any) -> None:
    """What only staff may send: an order number (422) and settings (403)."""
    if not isinstance(body, dict):
        return  # the order's own checks refuse it
    if "order_number" in body:
        raise invalid(
            "order_number",
            "the API chooses the order number: leave it out (only staff choose one)",
            slug="order-number-not-yours",
        )
    if body.get("settings") is not None:
        raise ApiProblem(
            403,
            "settings: only staff (with the API key) may set an order's settings",
            slug="staff-only",
            errors=[("settings", "only staff may set it")],
        )


def numbered(body: Any, staff: bool) -> Any:
    """The body with its order number: staff's own, else a new one."""
    if not isinstance(body, dict):
        return body  # the order's own checks refuse it
    if staff and "order_number" in body:
        return body
    return {**body, "order_number": new_order_number()}


async def place(request: Request, order: PizzaOrder, key: str | None, fingerprint: str) -> Placed:
    """Start ``order`` (its number chosen already) unless ``key`` says it was: the
    order's number and a token for its run."""
    keys = keys_of(request)
    client: Client = request.app.state.client
    now = time.time()
    use = KeyUse(fingerprint, order.order_number, keys.expiry(now))
    table = key_table(request)
    if key is not None:
        use = await _table_call(table, table.claim, key, use, now)
        if use.body_sha256 != fingerprint:
            raise invalid("Idempotency-Key", "already used for another body: nothing was changed")
        order = dataclasses.replace(order, order_number=use.order_number)
    if use.run_id is not None and key is not None:
        run_id = await run_of_key(client, use, key, fingerprint)
    else:
        run_id = await start_once(client, order, key, fingerprint)
        if key is not None:
            await _table_call(table, table.record_run, key, run_id)
    expires = token_expiry(use, keys.expiry(now))
    return Placed(
        order.order_number, keys.order_token(order.order_number, run_id, expires), expires
    )


def token_expiry(use: KeyUse, latest: int) -> int:
    """The expiry of the token a key answers with: the first answer's, never later than
    one issued now (the table cannot lengthen a token)."""
    return min(use.expires, latest)


async def run_of_key(client: Client, use: KeyUse, key: str, fingerprint: str) -> str:
    """The run a retried key's row names, once that run's memo says this key and this body
    started it. The table alone is not trusted: whoever could write it (a PostgreSQL
    ledger's database is shared with every worker) would get a token for any order by
    naming it in a row of their own."""
    handle = client.get_workflow_handle(workflow_id_for(use.order_number), run_id=use.run_id)
    try:
        first = (await (await handle.describe()).memo()).get(API_MEMO) or {}
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        first = {}
    if (
        first.get("idempotency_key_sha256") != key_hash(key)
        or first.get("body_sha256") != fingerprint
    ):
        log.warning(
            "the key table names order %s for a key that did not start it: refused",
            use.order_number,
        )
        raise ApiProblem(
            409,
            "this Idempotency-Key's record does not match the order it names: send the "
            "order again with a new key",
            slug="idempotency-key-mismatch",
        )
    return handle.run_id or ""


async def _table_call(table: KeyTable, method: Any, *args: Any) -> Any:
    """``method`` of ``table`` called: at once on a SQLite file, on a thread on a server."""
    try:
        if table.in_a_file:
            return method(*args)
        return await asyncio.to_thread(method, *args)
    except KeyTableUnavailable:
        raise ApiProblem(
            503,
            "the API cannot read its idempotency keys now: try again shortly",
            slug="keys-unavailable",
            headers={"Retry-After": "2"},
        ) from None


async def start_once(client: Client, order: PizzaOrder, key: str | None, fingerprint: str) -> str:
    """Start the order, unless this very request (same key, same body) already did: the
    run id."""
    memo = {
        API_MEMO: {
            "idempotency_key_sha256": key_hash(key) if key is not None else None,
            "body_sha256": fingerprint,
        }
    }
    try:
        handle = await start_order(
            client, order, memo=memo, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
        )
        if handle.result_run_id is not None:
            return handle.result_run_id
    except (OrderAlreadyRunning, OrderAlreadyCompleted):
        pass  # a concurrent twin of this request, or (staff) another order's number
    description = await client.get_workflow_handle(workflow_id_for(order.order_number)).describe()
    first = (await description.memo()).get(API_MEMO) or {}
    if key is None or first.get("idempotency_key_sha256") != key_hash(key):
        raise ApiProblem(
            409,
            f"order number {order.order_number} is already taken: choose another",
            slug="order-number-taken",
        )
    if first.get("body_sha256") != fingerprint:
        raise invalid("Idempotency-Key", "already used for another body: nothing was changed")
    return description.run_id


def key_table(request: Request) -> KeyTable:
    table: KeyTable = request.app.state.key_table
    return table
