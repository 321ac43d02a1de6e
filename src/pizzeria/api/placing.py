"""Placing an order over HTTP: the body checked as an order (422 naming every field the
workflow's checks refuse), who chooses its number, who sets its settings, and retries.

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
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from pizzeria import menu, order_fields
from pizzeria.api.auth import Keys, keys_of
from pizzeria.api.idempotency import KeyTable, KeyTableUnavailable, KeyUse, key_hash
from pizzeria.api.problems import ApiProblem, invalid, refuse_invalid_body
from pizzeria.api.schemas import OrderBody
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


@dataclass(frozen=True)
class Claim:
    """A request's claim on its order: the order (its number the key's, when the key was
    used before), the key's row, and what the answer needs."""

    order: PizzaOrder
    use: KeyUse
    client: Client
    table: KeyTable
    keys: Keys
    latest_expiry: int  # of a token issued now

    @property
    def known_run(self) -> str | None:
        """The run the key's row names, when the key was used before (else None)."""
        return self.use.run_id

    async def record(self, key: str | None, run_id: str) -> None:
        """The run this key started, written in its row."""
        if key is not None:
            await table_call(self.table, self.table.record_run, key, run_id)

    def placed(self, run_id: str) -> Placed:
        expires = token_expiry(self.use, self.latest_expiry)
        number = self.order.order_number
        return Placed(number, self.keys.order_token(number, run_id, expires), expires)


async def claim(request: Request, order: PizzaOrder, key: str | None, fingerprint: str) -> Claim:
    """The key's row claimed for this body (a 422 when it was another body's); without a
    key, a claim of its own."""
    now = time.time()
    keys = keys_of(request)
    latest = keys.expiry(now)
    use = KeyUse(fingerprint, order.order_number, latest)
    table = key_table(request)
    if key is not None:
        use = await table_call(table, table.claim, key, use, now)
        if use.body_sha256 != fingerprint:
            raise key_of_another_body()
        order = dataclasses.replace(order, order_number=use.order_number)
    return Claim(order, use, request.app.state.client, table, keys, latest)


async def place(request: Request, order: PizzaOrder, key: str | None, fingerprint: str) -> Placed:
    """Start ``order`` (its number chosen already) unless ``key`` says it was: the
    order's number and a token for its run."""
    claimed = await claim(request, order, key, fingerprint)
    if (known := claimed.known_run) is not None and key is not None:
        run_id = await run_of_key(claimed, known, key, fingerprint)
    else:
        run_id = await start_once(claimed.client, claimed.order, key, fingerprint)
        await claimed.record(key, run_id)
    return claimed.placed(run_id)


def key_of_another_body() -> ApiProblem:
    """The 422 of an ``Idempotency-Key`` sent before with another body (its row, or the
    memo of the order it started, says so)."""
    return invalid(
        "Idempotency-Key",
        "already used for another request (another body, or the same body from another kind "
        "of caller: staff or not): nothing was changed",
    )


def token_expiry(use: KeyUse, latest: int) -> int:
    """The expiry of the token a key answers with: the first answer's, never later than
    one issued now (the table cannot lengthen a token)."""
    return min(use.expires, latest)


async def run_of_key(claimed: Claim, run_id: str, key: str, fingerprint: str) -> str:
    """``run_id``, the run a retried key's row names, once that run's memo says this key
    and this body started it. The table alone is not trusted: whoever could write it (a
    PostgreSQL ledger's database is shared with every worker) would get a token for any
    order by naming it in a row of their own."""
    handle = claimed.client.get_workflow_handle(
        workflow_id_for(claimed.order.order_number), run_id=run_id
    )
    try:
        same_key, same_body = await started_by(await handle.describe(), key, fingerprint)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        same_key = same_body = False
    if not (same_key and same_body):
        log.warning(
            "the key table names order %s for a key that did not start it: refused",
            claimed.order.order_number,
        )
        raise ApiProblem(
            409,
            "this Idempotency-Key's record does not match the order it names: send the "
            "order again with a new key",
            slug="idempotency-key-mismatch",
        )
    return run_id


def request_memo(key: str | None, fingerprint: str) -> dict[str, Any]:
    """The memo an order started over HTTP carries: which key (a hash) and which body
    started it."""
    return {
        API_MEMO: {
            "idempotency_key_sha256": key_hash(key) if key is not None else None,
            "body_sha256": fingerprint,
        }
    }


async def started_by(
    description: WorkflowExecutionDescription, key: str | None, fingerprint: str
) -> tuple[bool, bool]:
    """Whether this run's memo names this key, and this body (see `request_memo`)."""
    first = (await description.memo()).get(API_MEMO) or {}
    same_key = key is not None and first.get("idempotency_key_sha256") == key_hash(key)
    return same_key, first.get("body_sha256") == fingerprint


async def table_call(table: KeyTable, method: Any, *args: Any) -> Any:
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
    try:
        handle = await start_order(
            client,
            order,
            memo=request_memo(key, fingerprint),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        if handle.result_run_id is not None:
            return handle.result_run_id
    except (OrderAlreadyRunning, OrderAlreadyCompleted):
        pass  # a concurrent twin of this request, or (staff) another order's number
    description = await client.get_workflow_handle(workflow_id_for(order.order_number)).describe()
    same_key, same_body = await started_by(description, key, fingerprint)
    if not same_key:
        raise ApiProblem(
            409,
            f"order number {order.order_number} is already taken: choose another",
            slug="order-number-taken",
        )
    if not same_body:
        raise key_of_another_body()
    return description.run_id


def key_table(request: Request) -> KeyTable:
    table: KeyTable = request.app.state.key_table
    return table


def checked_order(body: Any) -> PizzaOrder:
    """The body as an order, refused (422) by the same checks as the workflow's, its
    number one given now."""
    try:
        order = OrderBody.model_validate(body).to_order()
    except ValidationError as error:
        raise refuse_invalid_body(error) from None
    problems = menu.order_problems(order, new_number=True)
    if problems:
        raise invalid_order(problems)
    return order


def invalid_order(problems: list[order_fields.OrderRejected]) -> ApiProblem:
    """The 422 of an order the checks refuse: every field they refuse, the first one's
    reason and error type said (as the workflow would fail it), the others counted."""
    errors = [(rejected.field or "body", str(rejected)) for rejected in problems]
    field, reason = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = reason if reason.startswith(field) else f"{field}: {reason}"
    return ApiProblem(
        422, detail + more, slug="invalid-order", errors=errors, error_type=problems[0].kind
    )
