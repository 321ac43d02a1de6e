"""The order routes: place, read, follow, cancel; and, for staff, list and repair.

Placing goes through the CLI's own client code (``client.start_order``; who chooses the
number, and retries with an ``Idempotency-Key``, are placing.py's), acting on an order
through its Updates (``client.cancel_order``...). An order token opens the one run it was
issued for (auth.py); event streams are capped and share one history reader per run
(streams.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send
from temporalio.client import Client

from pizzeria.api import accepting, placing
from pizzeria.api.auth import (
    StreamCredential,
    credential,
    keys_of,
    no_such_order,
    open_order,
    placed_by_staff,
    require_staff,
    stream_credential,
)
from pizzeria.api.events import event_schema, order_events, with_keep_alive
from pizzeria.api.pace import OrderPace
from pizzeria.api.problems import (
    ApiProblem,
    header_once,
    invalid,
    problem_responses,
    read_json_body,
    refuse_invalid_body,
)
from pizzeria.api.schemas import (
    ORDER_NUMBER_PATTERN,
    CancelAccepted,
    CancelBody,
    OrderBody,
    OrderList,
    OrderRow,
    OrderView,
    RepairBody,
    RepairDone,
)
from pizzeria.api.streams import Streams
from pizzeria.api.views import RUNNING, OrderPlaced, hold_view, read_order
from pizzeria.client import (
    ANSWER_SECONDS,
    OrderDidNotAnswer,
    OrderRefused,
    OrderWaitsForOperator,
    cancel_order,
    recent_orders,
    resolve_by_hand,
    retry_compensations,
)
from pizzeria.models import ORDER_STATUSES, workflow_id_for

router = APIRouter(tags=["orders"])
JSON = "application/json"
Body = TypeVar("Body", bound=BaseModel)
Route = TypeVar("Route", bound=Callable[..., Any])
# What a POST on an order can answer besides success: its body, its credential, the order.
ACTING_ON_AN_ORDER = problem_responses(400, 401, 404, 408, 409, 413, 415, 422, 502, 503)

ORDER_NUMBER = Path(
    pattern=ORDER_NUMBER_PATTERN, description="The order number of the order's body"
)
STATUS_FILTER = "(?i)^(" + "|".join(ORDER_STATUSES) + ")$"  # as the CLI, in any case
Credential = Annotated[str | None, Depends(credential)]
FromStream = Annotated[StreamCredential, Depends(stream_credential)]
# OpenAPI links: what a client can do next with the order number POST /orders answers.
FOLLOW_UPS = {
    name: {
        "operationId": name,
        "parameters": {"order_number": "$response.body#/order_number"},
    }
    for name in ("get_order", "cancel_order")
}
OrderNumber = Annotated[str, ORDER_NUMBER]
LOCATION = {"Location": {"schema": {"type": "string"}}}
#: The POSTs on an order (``/orders/{order_number}/ACTION``), with what each does.
ACTIONS = {
    "cancel": "Cancel before the pivot: what was done is undone and the order ends Cancelled",
    "repair": "Finish an order whose compensation failed for good (staff)",
}


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def json_body(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The OpenAPI entry of a body a route reads itself (to refuse it before anything)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}}}


def acting_route(
    action: str, body: type[BaseModel], *, required: bool, staff_only: bool = False
) -> Callable[[Route], Route]:
    """``POST /orders/{order_number}/{action}`` (operation ``{action}_order``), with a
    small JSON body the route reads itself; ``staff_only``: the order's token gets 403."""
    return router.post(
        f"/orders/{{order_number}}/{action}",
        operation_id=f"{action}_order",
        summary=ACTIONS[action],
        responses={**ACTING_ON_AN_ORDER, **(problem_responses(403) if staff_only else {})},
        openapi_extra=json_body(body, required=required),
    )


@contextlib.contextmanager
def order_errors(customer_of: str | None = None) -> Iterator[None]:
    """An order that does not exist is a 404; one that refuses what was asked, a 409.
    ``customer_of``: the order number, when its customer asks (the order's token): the
    problems then say what it means for them, not which command an operator runs."""
    try:
        yield
    except LookupError:
        raise no_such_order() from None
    except OrderRefused as refused:
        said = str(refused)
        if customer_of is not None and f"order {customer_of} is stuck" in said:
            said = f"order {customer_of} cannot answer now: an operator has to look at it first"
        raise ApiProblem(409, said, slug="refused") from None
    except OrderWaitsForOperator as waiting:
        said = str(waiting)
        if customer_of is not None:
            said = (
                f"order {customer_of}: the cancel is accepted; undoing the order needs an "
                "operator first, who has been asked, and then it ends cancelled"
            )
        raise ApiProblem(409, said, slug="needs-attention") from None
    except OrderDidNotAnswer as silent:
        said = str(silent)
        if customer_of is not None:
            said = (
                f"order {customer_of} did not answer within {ANSWER_SECONDS:g} s; the request "
                "stays with it and is carried out once it can: follow the order"
            )
        raise ApiProblem(
            503, said, slug="order-not-answering", headers={"Retry-After": "30"}
        ) from None


async def read_model(request: Request, model: type[Body], *, required: bool) -> Body:
    """A small JSON body read into its model; a missing optional one is all defaults."""
    body = await read_json_body(request, required=required)
    try:
        return model.model_validate(body if body is not None else {})
    except ValidationError as error:
        raise refuse_invalid_body(error, slug="invalid-body") from None


@router.post(
    "/orders",
    status_code=201,
    operation_id="place_order",
    summary="Place an order, answered once its card is held (the exercise's order JSON)",
    description="Anyone may place an order; the API chooses its order number (a body "
    "naming one is refused with 422, field `order_number`), and only staff (the API key) "
    "may choose one or send `settings` (403 otherwise). The answer comes once the order is "
    "accepted, 201 with the card hold, while the kitchen prepares it; or refused, once "
    "what it did is undone: 402 for a declined card, 409 out of stock, 422 outside the "
    "delivery area. With `Prefer: respond-async`, or without an answer within 10 s, 202 "
    "and the order goes on. With an `Idempotency-Key`, a retry of the same body gets the "
    "same answer (number, token, hold or problem); the same key with another body is "
    "refused with 422.",
    responses={
        201: {"headers": LOCATION, "links": FOLLOW_UPS},
        202: {
            "description": "Placed; the hold is not known yet: follow the order",
            "model": OrderPlaced,
            "headers": {**LOCATION, "Preference-Applied": {"schema": {"type": "string"}}},
            "links": FOLLOW_UPS,
        },
        **problem_responses(400, 401, 402, 403, 408, 409, 413, 415, 422, 429, 502, 503),
    },
    # Anonymous or staff: the staff key is optional here.
    openapi_extra={**json_body(OrderBody, required=True), "security": [{}]},
)
async def place(
    request: Request,
    response: Response,
    given: Credential,
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=r"^[\x21-\x7e]{1,255}$",
            description="Makes a retry safe: the same key and body answer as the first time",
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(description="'respond-async': answer 202 at once, without the card hold"),
    ] = None,
) -> OrderPlaced:
    staff = placed_by_staff(request, given)
    if not staff:  # staff are not paced: the key is theirs alone
        pace: OrderPace = request.app.state.pace
        pace.admit(request.client.host if request.client else "")
    header_once(request, "Idempotency-Key")
    body = await read_json_body(request)
    if not staff:
        placing.refuse_staff_fields(body)
    fingerprint = keys_of(request).body_fingerprint(body, staff)
    order = placing.checked_order(placing.numbered(body, staff))
    answer = None
    if accepting.wants_async(prefer):
        placed = await placing.place(request, order, idempotency_key, fingerprint)
        response.headers["Preference-Applied"] = "respond-async"
    else:
        accepted = await accepting.place_with_answer(request, order, idempotency_key, fingerprint)
        placed, answer = accepted.placed, accepted.answer
        if answer is not None and answer.refusal is not None:
            raise accepting.refused(placed, answer.refusal)
    if answer is None or answer.hold is None:
        response.status_code = 202
    number = placed.order_number
    response.headers["Location"] = f"/orders/{number}"
    return OrderPlaced(
        order_number=number,
        order_token=placed.token,
        token_expires_at=datetime.fromtimestamp(placed.expires, UTC).isoformat(),
        status_url=f"/orders/{number}",
        events_url=f"/orders/{number}/events",
        hold=hold_view(answer.hold if answer is not None else None),
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
    try:
        rows = await recent_orders(client_of(request), status.upper() if status else None, limit)
    except LookupError as unregistered:  # OrderStatus is not registered in the namespace
        raise ApiProblem(502, str(unregistered), slug="temporal-refused") from None
    return OrderList(orders=[OrderRow.model_validate(row) for row in rows])


@router.get(
    "/orders/{order_number}",
    operation_id="get_order",
    summary="An order: status, amount, steps, compensations, outcome",
    responses=problem_responses(401, 404, 422, 502, 503),
)
async def get_order(request: Request, order_number: OrderNumber, given: Credential) -> OrderView:
    access = await open_order(request, order_number, given)
    with order_errors():
        return await read_order(
            client_of(request), request.app.state.ledger, order_number, access.run_id
        )


class EventStream(StreamingResponse):
    """An event stream that, however it ends, calls ``on_close`` (its place under the caps
    is given back, its feed left)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[str],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        *,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(content, status_code, headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


#: The event stream's route: an answer that never ends (app.HeadAsGet leaves its HEAD alone).
EVENTS_ROUTE = "/orders/{order_number}/events"


@router.get(
    EVENTS_ROUTE,
    operation_id="follow_order",
    summary="Server-sent events: each step and compensation as it changes, then the outcome",
    response_class=EventStream,
    responses={
        200: {"content": {"text/event-stream": {"schema": event_schema()}}},
        204: {"description": "Nothing after Last-Event-ID, and the order is closed"},
        **problem_responses(401, 404, 422, 429, 502, 503),
    },
)
async def follow_order(
    request: Request,
    order_number: OrderNumber,
    given: FromStream,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,18}$", description="Resume after it"),
    ] = None,
) -> Response:
    """Ends by itself after the stream lifetime (an EventSource reconnects and resumes);
    at most a few streams per token and so many in all (429, 503 with Retry-After)."""
    access = await open_order(request, order_number, given.value, from_query=given.from_query)
    assert given.value is not None  # open_order refuses no credential
    streams: Streams = request.app.state.streams
    slot = streams.admit(given.value)
    after = int(last_event_id or 0)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    workflow_id = workflow_id_for(order_number)
    try:
        if access.status == RUNNING:
            follower = streams.follow(slot, workflow_id, access.run_id)
            events = with_keep_alive(follower.events(after, access.expires))
            return EventStream(events, headers=headers, on_close=follower.close)
        args = (client_of(request), workflow_id, access.run_id, after)
        remaining = [event async for event in order_events(*args, follow=False)]
    except BaseException:
        slot.release()
        raise
    if not remaining:
        slot.release()
        return Response(status_code=204, headers=headers)
    return EventStream(with_keep_alive(_replay(remaining)), headers=headers, on_close=slot.release)


async def _replay(events: list[str]) -> Any:
    for event in events:
        yield event


@acting_route("cancel", CancelBody, required=False)
async def cancel(request: Request, order_number: OrderNumber, given: Credential) -> CancelAccepted:
    access = await open_order(request, order_number, given)
    reason = (await read_model(request, CancelBody, required=False)).reason
    with order_errors(None if access.staff else order_number):
        # The run the credential opened, not whichever is the latest when the cancel is
        # sent (staff may have placed the number again in between).
        result = await cancel_order(client_of(request), order_number, reason, run_id=access.run_id)
    return CancelAccepted(
        order_number=order_number, reason=result.reason, compensations=result.compensations
    )


@acting_route("repair", RepairBody, required=True, staff_only=True)
async def repair(request: Request, order_number: OrderNumber, given: Credential) -> RepairDone:
    require_staff(request, given, order_number, "repair an order")
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
