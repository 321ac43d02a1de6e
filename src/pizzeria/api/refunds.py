"""``POST /orders/{n}/refunds``: staff give part of a completed order's money back.

The route is a front for `pizzeria.refunds.refund_order`, the library ``pizzeria refund``
runs too: the order's run at Temporal, the claim in the ledger under the caller's
``Idempotency-Key``, the payment provider's refund under the claim's key. Only the staff
key may refund: an order's token, which opens the order to its customer, gets 403.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from pizzeria.api.auth import require_staff
from pizzeria.api.orders import (
    Credential,
    OrderNumber,
    client_of,
    json_body,
    order_errors,
    read_model,
)
from pizzeria.api.problems import ApiProblem, header_once, invalid, problem_responses
from pizzeria.api.schemas import FreeText, view_of
from pizzeria.ledger import Ledger, open_ledger
from pizzeria.payments.port import PaymentGateway
from pizzeria.refunds import (
    MAX_REASON,
    RefundInvalid,
    RefundKeyConflict,
    RefundRefused,
    RefundUnanswered,
    StaffRefund,
    checked_amount,
    dollars_to_cents,
    refund_order,
    staff_gateway,
)

router = APIRouter(tags=["orders"])
KEY_HEADER = "Idempotency-Key"


class RefundBody(BaseModel):
    """How much goes back, and why: ``amount_cents`` (whole cents) or ``amount`` (dollars),
    exactly one of them."""

    model_config = ConfigDict(extra="forbid")
    amount_cents: int | None = Field(
        default=None, strict=True, description="Cents to give back, e.g. 500"
    )
    amount: StrictStr | StrictInt | StrictFloat | None = Field(
        default=None, description='Dollars with at most two decimals, e.g. "5.00"'
    )
    reason: FreeText = Field(
        min_length=1, max_length=MAX_REASON, description="Why (kept by the payment provider)"
    )
    run_id: StrictStr | None = Field(
        default=None,
        max_length=36,
        description="The run of the order number to refund (an order placed again has a "
        "run per placing) [default: its latest run]",
    )

    def cents(self) -> int:
        given = [self.amount_cents is not None, self.amount is not None]
        if sum(given) != 1:
            raise RefundInvalid("amount_cents", "give amount_cents or amount, exactly one")
        if self.amount_cents is not None:
            return checked_amount(self.amount_cents)
        return dollars_to_cents(str(self.amount))


class RefundMade(BaseModel):
    order_number: str
    run_id: str = Field(description="The run of the order number whose bill it came out of")
    refund_id: str = Field(description="The payment provider's id of the refund")
    amount: int = Field(description="Cents given back by this refund")
    captured: int = Field(description="Cents the order's bill captured")
    refunded: int = Field(description="Cents given back in all, this refund included")
    left: int = Field(description="Cents a later refund may still give back")
    replayed: bool = Field(description="This key's refund was already made: nothing moved now")


@contextlib.asynccontextmanager
async def money(request: Request) -> AsyncIterator[tuple[Ledger, PaymentGateway]]:
    """The ledger, writable (the API's own reader is read-only), and the workers' payment
    provider, for one refund: a staff action is rare, and nothing is held between them."""
    ledger = await asyncio.to_thread(open_ledger, request.app.state.ledger.location)
    gateway = staff_gateway()
    try:
        yield ledger, gateway
    finally:
        await gateway.close()
        await asyncio.to_thread(ledger.close)


@contextlib.contextmanager
def refund_problems() -> Iterator[None]:
    """Each way a refund is refused, as its problem."""
    try:
        yield
    except RefundInvalid as wrong:
        raise invalid(wrong.field, wrong.reason) from None
    except RefundKeyConflict as reused:
        raise ApiProblem(422, str(reused), slug="idempotency-key-reused") from None
    except RefundRefused as refused:
        raise ApiProblem(409, str(refused), slug="refund-refused") from None
    except RefundUnanswered as unanswered:
        raise ApiProblem(
            503,
            f"{unanswered} (same {KEY_HEADER})",
            slug="payment-provider-unavailable",
            headers={"Retry-After": "2"},
        ) from None


@router.post(
    "/orders/{order_number}/refunds",
    status_code=201,
    operation_id="refund_order",
    summary="Give part of a completed order's money back (staff)",
    description="Refunds `amount_cents` (or `amount` in dollars) of what the order's bill "
    "captured (of its latest run, or of its run `run_id`), through the payment provider, "
    "once per `Idempotency-Key` (required): the "
    "same key again answers the same refund (200, `Idempotent-Replayed: true`), the same "
    "key with another amount is refused (422). Refused with 409 unless the order completed "
    "(or was ended from outside after its bill) and the amount fits in what its bill "
    "captured minus what went back already; nothing moves then. 503 when the provider "
    "did not answer: retry with the same key.",
    responses={
        200: {"description": "This key's refund, already made", "model": RefundMade},
        **problem_responses(400, 401, 403, 404, 408, 409, 413, 415, 422, 502, 503),
    },
    openapi_extra=json_body(RefundBody, required=True),
)
async def refund(
    request: Request,
    response: Response,
    order_number: OrderNumber,
    given: Credential,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=KEY_HEADER,
            description="Required: the refund's key; a retry with it never refunds twice",
        ),
    ] = None,
) -> RefundMade:
    require_staff(request, given, order_number, "refund an order")
    header_once(request, KEY_HEADER)
    wanted = await read_model(request, RefundBody, required=True)
    if idempotency_key is None:
        raise invalid(KEY_HEADER, "required: the same key makes a retry safe")
    with refund_problems(), order_errors():
        cents = wanted.cents()
        async with money(request) as (ledger, gateway):
            made = await refund_order(
                client_of(request),
                ledger,
                gateway,
                order_number,
                cents,
                wanted.reason,
                idempotency_key,
                run_id=wanted.run_id,
            )
    if made.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return answer(made)


def answer(made: StaffRefund) -> RefundMade:
    return view_of(RefundMade, made)
