"""The order routes: place, read, follow, cancel; and, for staff, list and repair.

Placing goes through the CLI's own client code (``client.start_order``), acting on an
order through its Updates (``client.cancel_order``...). The API keeps nothing: what an
``Idempotency-Key`` was used for is written in the order's memo when it starts, and the
order number decides the workflow id, so a retry finds the first run with ``describe``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from pizzeria import menu
from pizzeria.api.auth import credential, require_order_access, require_staff
from pizzeria.api.events import event_schema, order_events, with_keep_alive
from pizzeria.api.problems import (
    ApiProblem,
    invalid,
    problem_responses,
    read_json_body,
    refuse_invalid_body,
)
from pizzeria.api.schemas import (
    ORDER_NUMBER_PATTERN,
    CancelAccepted,
    CancelBody,
    OrderAccepted,
    OrderBody,
    OrderList,
    OrderRow,
    OrderView,
    RepairBody,
    RepairDone,
)
from pizzeria.api.views import RUNNING, read_order
from pizzeria.client import (
    OrderAlreadyCompleted,
    OrderAlreadyRunning,
    OrderRefused,
    cancel_order,
    order_handle,
    recent_orders,
    resolve_by_hand,
    retry_compensations,
    start_order,
    status_name,
)
from pizzeria.models import ORDER_STATUSES, PizzaOrder, workflow_id_for

router = APIRouter(tags=["orders"])
JSON = "application/json"
Body = TypeVar("Body", bound=BaseModel)
# What a POST on an order can answer besides success: its body, its credential, the order.
ACTING_ON_AN_ORDER = problem_responses(400, 401, 404, 409, 413, 415, 422, 502, 503)

#: The memo entry that says which request started an order.
API_MEMO = "api_request"
ORDER_NUMBER = Path(
    pattern=ORDER_NUMBER_PATTERN, description="The order number of the order's body"
)
STATUS_FILTER = "^(" + "|".join(ORDER_STATUSES) + ")$"
Credential = Annotated[str | None, Depends(credential)]
# OpenAPI links: what a client can do next with the order number POST /orders answers.
FOLLOW_UPS = {
    name: {
        "operationId": name,
        "parameters": {"order_number": "$response.body#/order_number"},
    }
    for name in ("get_order", "cancel_order")
}
OrderNumber = Annotated[str, ORDER_NUMBER]


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def json_body(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The OpenAPI entry of a body a route reads itself (to refuse it before anything)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}}}


@contextlib.contextmanager
def order_errors() -> Iterator[None]:
    """An order that does not exist is a 404; one that refuses what was asked, a 409."""
    try:
        yield
    except LookupError:
        raise ApiProblem(404, "no such order", slug="order-not-found") from None
    except OrderRefused as refused:
        raise ApiProblem(409, str(refused), slug="refused") from None


async def read_model(request: Request, model: type[Body], *, required: bool) -> Body:
    """A small JSON body read into its model; a missing optional one is all defaults."""
    body = await read_json_body(request, required=required)
    try:
        return model.model_validate(body if body is not None else {})
    except ValidationError as error:
        raise refuse_invalid_body(error) from None


def body_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def rejected_field(order: PizzaOrder, message: str) -> str:
    """Which field menu.py's verdict is about (its messages name all but the item)."""
    head = message.split(" ", 1)[0]
    if head in ("order_number", "is_delivery") or "." in head:
        return head
    if not order.items or "at most" in message:
        return "items"
    for index, item in enumerate(order.items):
        try:
            menu.validate_order(dataclasses.replace(order, items=[item]))
        except menu.OrderRejected as alone:
            about_price = str(alone).startswith(("item price", "Invalid charge amount"))
            part = "price" if about_price else "description"
            return f"items[{index}].{part}"
    return "body"


def checked_order(body: Any) -> PizzaOrder:
    """The body as an order, refused (422) by the same checks as the workflow's."""
    try:
        order = OrderBody.model_validate(body).to_order()
    except ValidationError as error:
        raise refuse_invalid_body(error) from None
    try:
        menu.validate_order(order)
    except menu.OrderRejected as rejected:
        field = rejected_field(order, str(rejected))
        raise invalid(
            field, str(rejected), slug="invalid-order", error_type=rejected.kind
        ) from None
    return order


async def start_once(client: Client, order: PizzaOrder, key: str | None, fingerprint: str) -> None:
    """Start the order, unless this very request (same key, same body) already did."""
    memo = {API_MEMO: {"idempotency_key": key, "body_sha256": fingerprint}}
    try:
        await start_order(
            client, order, memo=memo, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
        )
        return
    except (OrderAlreadyRunning, OrderAlreadyCompleted):
        pass  # a retry, a concurrent twin of this request, or another order's number
    description = await client.get_workflow_handle(workflow_id_for(order.order_number)).describe()
    first = (await description.memo()).get(API_MEMO) or {}
    if key is None or first.get("idempotency_key") != key:
        raise ApiProblem(
            409,
            f"order number {order.order_number} is already taken: choose another",
            slug="order-number-taken",
        )
    if first.get("body_sha256") != fingerprint:
        raise invalid("Idempotency-Key", "already used for another body: nothing was changed")


@router.post(
    "/orders",
    status_code=202,
    operation_id="place_order",
    summary="Place an order (the exercise's order JSON)",
    responses={
        202: {"headers": {"Location": {"schema": {"type": "string"}}}, "links": FOLLOW_UPS},
        **problem_responses(400, 409, 413, 415, 422, 502, 503),
    },
    openapi_extra=json_body(OrderBody, required=True),
)
async def place(
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=r"^[\x21-\x7e]{1,255}$",
            description="Makes a retry safe: the same key and body answer as the first time",
        ),
    ] = None,
) -> OrderAccepted:
    body = await read_json_body(request)
    order = checked_order(body)
    await start_once(client_of(request), order, idempotency_key, body_fingerprint(body))
    number = order.order_number
    response.headers["Location"] = f"/orders/{number}"
    return OrderAccepted(
        order_number=number,
        order_token=request.app.state.keys.order_token(number),
        status_url=f"/orders/{number}",
        events_url=f"/orders/{number}/events",
    )


@router.get(
    "/orders",
    operation_id="list_orders",
    summary="Recent orders (staff)",
    responses=problem_responses(401, 422, 502, 503),
)
async def list_orders(
    request: Request,
    given: Credential,
    status: Annotated[
        str | None, Query(pattern=STATUS_FILTER, description="Only orders in this OrderStatus")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> OrderList:
    require_staff(request, given)
    rows = await recent_orders(client_of(request), status, limit)
    return OrderList(orders=[OrderRow.model_validate(row) for row in rows])


@router.get(
    "/orders/{order_number}",
    operation_id="get_order",
    summary="An order: status, amount, steps, compensations, outcome",
    responses=problem_responses(401, 404, 422, 502, 503),
)
async def get_order(request: Request, order_number: OrderNumber, given: Credential) -> OrderView:
    require_order_access(request, order_number, given)
    with order_errors():
        return await read_order(client_of(request), request.app.state.ledger, order_number)


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


@router.get(
    "/orders/{order_number}/events",
    operation_id="follow_order",
    summary="Server-sent events: each step and compensation as it changes, then the outcome",
    response_class=EventStream,
    responses={
        200: {"content": {"text/event-stream": {"schema": event_schema()}}},
        204: {"description": "Nothing after Last-Event-ID, and the order is closed"},
        **problem_responses(401, 404, 422, 502, 503),
    },
)
async def follow_order(
    request: Request,
    order_number: OrderNumber,
    given: Credential,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,18}$", description="Resume after it"),
    ] = None,
) -> Response:
    require_order_access(request, order_number, given)
    client = client_of(request)
    with order_errors():
        description = await (await order_handle(client, order_number)).describe()
    after = int(last_event_id or 0)
    args = (client, description.id, description.run_id, after)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if status_name(description.status) == RUNNING:
        return EventStream(with_keep_alive(order_events(*args, follow=True)), headers=headers)
    remaining = [event async for event in order_events(*args, follow=False)]
    if not remaining:
        return Response(status_code=204, headers=headers)
    return EventStream(with_keep_alive(_replay(remaining)), headers=headers)


async def _replay(events: list[str]) -> Any:
    for event in events:
        yield event


@router.post(
    "/orders/{order_number}/cancel",
    operation_id="cancel_order",
    summary="Cancel before the pivot: what was done is undone and the order ends Cancelled",
    responses=ACTING_ON_AN_ORDER,
    openapi_extra=json_body(CancelBody, required=False),
)
async def cancel(request: Request, order_number: OrderNumber, given: Credential) -> CancelAccepted:
    require_order_access(request, order_number, given)
    reason = (await read_model(request, CancelBody, required=False)).reason
    with order_errors():
        result = await cancel_order(client_of(request), order_number, reason)
    return CancelAccepted(
        order_number=order_number, reason=result.reason, compensations=result.compensations
    )


@router.post(
    "/orders/{order_number}/repair",
    operation_id="repair_order",
    summary="Finish an order whose compensation failed for good (staff)",
    responses=ACTING_ON_AN_ORDER,
    openapi_extra=json_body(RepairBody, required=True),
)
async def repair(request: Request, order_number: OrderNumber, given: Credential) -> RepairDone:
    require_staff(request, given)
    wanted = await read_model(request, RepairBody, required=True)
    client = client_of(request)
    if wanted.action not in ("retry", "resolve") or (
        wanted.action == "resolve" and not wanted.note.strip()
    ):
        raise invalid("action", "'retry', or 'resolve' with a note saying what was done")
    with order_errors():
        if wanted.action == "retry":
            result = await retry_compensations(client, order_number)
        else:
            result = await resolve_by_hand(client, order_number, wanted.note)
    return RepairDone(order_number=order_number, action=result.action, outcome=result.outcome)
