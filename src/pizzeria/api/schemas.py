"""The shapes of the API's bodies and answers, as the OpenAPI document shows them.

The order body is the exercise's order JSON (the wire contract), checked here for its
*types* only: strict, so ``12.5`` or ``true`` is never read as whole cents. Every rule
beyond the types (lengths, prices, the menu, the card's digits) is menu.py's
``validate_order``, the very check the workflow runs, so the API and the workflow can
never disagree about which orders exist.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pizzeria import menu
from pizzeria.models import (
    Address,
    CreditCardInfo,
    Customer,
    OrderSettings,
    Pizza,
    PizzaOrder,
)

STRICT = ConfigDict(strict=True)


class AddressBody(BaseModel):
    model_config = STRICT
    line1: str = Field(description="Required for a delivery")
    line2: str
    city: str
    state: str
    postal_code: str


class CustomerBody(BaseModel):
    model_config = STRICT
    customer_id: int = Field(description="A whole number from 0 to 2^63 - 1")
    name: str
    email: str
    phone: str


class PizzaBody(BaseModel):
    model_config = STRICT
    description: str = Field(
        description="A size and toppings from GET /menu, e.g. 'Large, with mushrooms and onions'"
    )
    price: int = Field(
        description=f"Whole cents, from 1 to {menu.MAX_ITEM_PRICE} (GET /menu has the prices)"
    )


class CardBody(BaseModel):
    model_config = STRICT
    holderName: str
    number: str = Field(description="12 to 19 digits; never shown back in full")


class SettingsBody(BaseModel):
    model_config = STRICT
    prep_seconds: float = Field(
        default=OrderSettings.prep_seconds, description=f"0 to {menu.MAX_PREP}"
    )
    compensation_attempts: int = Field(
        default=OrderSettings.compensation_attempts, description=f"1 to {menu.MAX_ATTEMPTS}"
    )
    step_attempts: int = Field(
        default=OrderSettings.step_attempts, description=f"1 to {menu.MAX_ATTEMPTS}"
    )


class OrderBody(BaseModel):
    """The exercise's order JSON; unknown fields are ignored, as the workflow ignores them."""

    model_config = STRICT
    order_number: str = Field(
        description="Letters, digits, '.', '_' and '-' (1 to 64); decides the order's identity"
    )
    customer: CustomerBody
    items: list[PizzaBody] = Field(description=f"1 to {menu.MAX_ITEMS} pizzas")
    is_delivery: bool
    address: AddressBody
    credit_card_info: CardBody
    settings: SettingsBody | None = None

    def to_order(self) -> PizzaOrder:
        return PizzaOrder(
            order_number=self.order_number,
            customer=Customer(**self.customer.model_dump()),
            items=[Pizza(**item.model_dump()) for item in self.items],
            is_delivery=self.is_delivery,
            address=Address(**self.address.model_dump()),
            credit_card_info=CreditCardInfo(**self.credit_card_info.model_dump()),
            settings=OrderSettings(**self.settings.model_dump()) if self.settings else None,
        )


# -- answers ------------------------------------------------------------------------------


class OrderAccepted(BaseModel):
    order_number: str
    order_token: str = Field(
        description="Send it as 'Authorization: Bearer <token>' (or ?token=) to read, "
        "follow and cancel this order"
    )
    status_url: str
    events_url: str


class StepView(BaseModel):
    name: str
    state: str = Field(
        description="pending, running, completed, failed, timed out, cancelled or not run"
    )
    attempts: int
    started_at: str | None
    duration_ms: float | None
    error: str


class OrderOutcomeView(BaseModel):
    status: str
    error_type: str | None
    error: str | None
    confirmation_number: str | None
    delivery: str | None = Field(description="SUCCESS or DELIVERY FAILURE once delivered")


class LedgerView(BaseModel):
    charged: int
    refunded: int
    billed: int


class OrderView(BaseModel):
    order_number: str
    status: str = Field(description="RUNNING, COMPLETED, FAILED, CANCELLED, TERMINATED...")
    details: str = Field(description="What the order is doing now")
    amount: int | None = Field(description="Cents billed and charged, discount included")
    card: str | None = Field(description="The card, masked: only the last four digits")
    cancellable: bool
    needs_attention: bool
    steps: list[StepView]
    compensations: list[StepView] = Field(description="In the order they ran")
    ledger: LedgerView | None
    outcome: OrderOutcomeView | None = Field(description="Once the order is closed")


class OrderRow(BaseModel):
    order_number: str
    started: str
    status: str
    order_status: str | None
    amount: int | None
    compensation: str | None


class OrderList(BaseModel):
    orders: list[OrderRow]


class CancelBody(BaseModel):
    model_config = STRICT
    reason: str = Field(default="cancelled by the customer", max_length=menu.MAX_TEXT)


class CancelAccepted(BaseModel):
    order_number: str
    reason: str
    compensations: list[str] = Field(description="What was undone, in order")


class RepairBody(BaseModel):
    model_config = STRICT
    action: str = Field(description="'retry' the failed compensations, or 'resolve' by hand")
    note: str = Field(default="", max_length=menu.MAX_TEXT, description="Needed to resolve")


class RepairDone(BaseModel):
    order_number: str
    action: str
    outcome: str


class MenuSize(BaseModel):
    size: str
    price: int
    portions: int


class Menu(BaseModel):
    sizes: list[MenuSize]
    toppings: list[str]
    base: list[str]
    discount_over: int = Field(description="Orders over this many cents get the discount")
    discount: int
    max_items: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    temporal: str
    ledger: str


class ProblemError(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] | None = None
    error_type: str | None = Field(default=None, description="The workflow's error type")


def schema_extra(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")
