"""The shapes of the API's bodies and answers, as the OpenAPI document shows them.

The order body is the exercise's order JSON (the wire contract), checked here for its
*types* only: strict, so ``12.5`` or ``true`` is never read as whole cents. Every rule
beyond the types (lengths, prices, the menu, the card's digits) is menu.py's
``validate_order``, the very check the workflow runs, so the API and the workflow can
never disagree about which orders exist.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from pizzeria import menu, models, order_fields
from pizzeria.models import OrderSettings
from pizzeria.samples import GOOD_CARD, sample_order
from pizzeria.text import text_problem

View = TypeVar("View", bound=BaseModel)


def view_of(model: type[View], source: object) -> View:
    """``model`` with each of its fields read from the attribute of that name of
    ``source`` (the order's hold, the ledger's rows of a run, a staff refund)."""
    return model.model_validate(source, from_attributes=True)


STRICT = ConfigDict(strict=True)
ORDER_NUMBER_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"
# The limits menu.validate_order enforces, shown in the document. They are not checked
# here a second time: menu.py is the one judge, here as in the workflow.
TEXT: dict[str, Any] = {"maxLength": order_fields.MAX_TEXT}
REQUIRED_TEXT: dict[str, Any] = {"minLength": 1, "maxLength": order_fields.MAX_TEXT}
ATTEMPTS: dict[str, Any] = {"minimum": 1, "maximum": menu.MAX_ATTEMPTS}
_TOPPING = "(" + "|".join(sorted(menu.TOPPINGS)) + ")"
#: How the page and the exercise write a pizza; menu.recipe also reads other spellings.
PIZZA_PATTERN = f"^(Small|Medium|Large)(, with {_TOPPING}((, {_TOPPING})* and {_TOPPING})?)?$"
# As anyone sends it: the API chooses the order number, and settings are for staff.
EXERCISE_ORDER: dict[str, Any] = {
    **{
        name: value
        for name, value in asdict(sample_order("XD001")).items()
        if name not in ("order_number", "settings")
    },
    "credit_card_info": {"holderName": "Lisa Anderson", "number": GOOD_CARD},
}


def _text_only(value: str) -> str:
    """text.py's one rule for free text: a 422 naming the field, never echoing the value."""
    problem = text_problem(value)
    if problem:
        raise PydanticCustomError("refused_characters", problem)
    return value


#: A cancel reason or a repair note: text.py's rule, here since no menu.py check sees them.
#: An order's text is judged by menu.validate_order, as in the workflow (its error type
#: included).
FreeText = Annotated[str, AfterValidator(_text_only)]


class AddressBody(BaseModel):
    """Where a delivery goes. The exercise's clients send all five fields; a field left out
    is blank, and a delivery's blank street, city, state or postal code is refused by
    ``validate_order`` (each named), as the workflow refuses it."""

    model_config = STRICT
    line1: str = Field(default="", description="Required for a delivery", json_schema_extra=TEXT)
    line2: str = Field(default="", json_schema_extra=TEXT)
    city: str = Field(default="", description="Required for a delivery", json_schema_extra=TEXT)
    state: str = Field(default="", description="Required for a delivery", json_schema_extra=TEXT)
    postal_code: str = Field(
        default="", description="Required for a delivery", json_schema_extra=TEXT
    )


class CustomerBody(BaseModel):
    model_config = STRICT
    customer_id: int = Field(json_schema_extra={"minimum": 0, "maximum": 2**63 - 1})
    name: str = Field(json_schema_extra=REQUIRED_TEXT)
    email: str = Field(json_schema_extra=TEXT)
    phone: str = Field(json_schema_extra=TEXT)


class PizzaBody(BaseModel):
    model_config = STRICT
    description: str = Field(
        description="A size and toppings from GET /menu, e.g. 'Large, with mushrooms and onions'"
        " (the size and the toppings in any case, toppings also separated by commas)",
        json_schema_extra={**REQUIRED_TEXT, "pattern": PIZZA_PATTERN},
    )
    price: int = Field(
        description="Whole cents (GET /menu has the prices)",
        json_schema_extra={"minimum": 1, "maximum": menu.MAX_ITEM_PRICE},
    )


class CardBody(BaseModel):
    model_config = STRICT
    holderName: str = Field(json_schema_extra=REQUIRED_TEXT)
    number: str = Field(
        default="",
        description="Sent to the payment provider once, for the hold; never stored, never "
        "shown back in full. Leave it out when sending payment_method",
        json_schema_extra={"pattern": "^([0-9]{12,19})?$"},
    )
    payment_method: str | None = Field(
        default=None,
        description="Instead of the number: the payment provider's token for the card "
        "(pm_..., e.g. from Stripe.js or POST /v1/payment_methods with a publishable key)",
        json_schema_extra={"pattern": "^pm_[A-Za-z0-9_]{1,200}$"},
    )


class SettingsBody(BaseModel):
    """Staff's knobs, ours alone (no exercise client sends them): a misspelt one is refused
    (422 naming it) rather than ignored."""

    model_config = ConfigDict(strict=True, extra="forbid")
    prep_seconds: float = Field(
        default=OrderSettings.prep_seconds,
        json_schema_extra={"minimum": 0, "maximum": menu.MAX_PREP},
    )
    compensation_attempts: int = Field(
        default=OrderSettings.compensation_attempts, json_schema_extra=ATTEMPTS
    )
    step_attempts: int = Field(default=OrderSettings.step_attempts, json_schema_extra=ATTEMPTS)
    fast_path: bool = Field(
        default=OrderSettings.fast_path,
        description="Run the ledger steps, their compensations and a delivery's distance "
        "check as local activities; a pickup checks no distance (docs/design.md, the fast path)",
    )


class OrderBody(BaseModel):
    """The exercise's order JSON; unknown fields are ignored, as the workflow ignores them."""

    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [EXERCISE_ORDER]})
    order_number: str | None = Field(
        default=None,
        description="Staff only (with the API key): the order number to give the order, "
        "one order per number. Anyone else leaves it out (422 otherwise): the API chooses "
        "an unguessable one and answers with it",
        json_schema_extra={"pattern": ORDER_NUMBER_PATTERN},
    )
    customer: CustomerBody
    items: list[PizzaBody] = Field(json_schema_extra={"minItems": 1, "maxItems": menu.MAX_ITEMS})
    is_delivery: bool
    address: AddressBody | None = Field(
        default=None,
        description="Required for a delivery; a pickup (is_delivery false) may leave it out",
    )
    credit_card_info: CardBody
    settings: SettingsBody | None = Field(
        default=None, description="Staff only (with the API key): 403 for anyone else"
    )

    def to_order(self) -> models.PizzaOrder:
        return models.PizzaOrder(
            order_number=self.order_number or "",
            customer=models.Customer(**self.customer.model_dump()),
            items=[models.Pizza(**item.model_dump()) for item in self.items],
            is_delivery=self.is_delivery,
            address=models.Address(**(self.address or AddressBody()).model_dump()),
            credit_card_info=models.CreditCardInfo(**self.credit_card_info.model_dump()),
            settings=OrderSettings(**self.settings.model_dump()) if self.settings else None,
        )


# -- answers ------------------------------------------------------------------------------


class OrderAccepted(BaseModel):
    order_number: str = Field(description="Chosen by the API (or by staff)")
    order_token: str = Field(
        description="Send it as 'Authorization: Bearer <token>' to read, follow and cancel "
        "this order (the event stream also takes ?token=). It opens this run of this order "
        "only, until token_expires_at"
    )
    token_expires_at: str = Field(description="When the token stops opening it (UTC)")
    status_url: str
    events_url: str


class StepView(BaseModel):
    name: str
    state: str = Field(
        description="pending, running, completed, failed, timed out, cancelled, not run, or "
        "abandoned (still going when the run was ended from outside)"
    )
    attempts: int
    started_at: str | None
    duration_ms: float | None
    error: str


class StepChange(BaseModel):
    """An event of the stream: a step or compensation started or ended."""

    kind: str = Field(description="step or compensation")
    name: str
    state: str = Field(description="running, completed, failed, timed out or cancelled")
    error: str
    at: str = Field(description="When, in UTC (ISO 8601)")


class OrderOutcomeView(BaseModel):
    status: str
    error_type: str | None
    error: str | None
    confirmation_number: str | None
    delivery: str | None = Field(description="SUCCESS or DELIVERY FAILURE once delivered")


class LedgerView(BaseModel):
    charged: int = Field(description="Cents put on the card: held, then captured by the bill")
    refunded: int = Field(description="Cents the undone order gave back (a released hold)")
    billed: int
    refunded_after_bill: int = Field(0, description="Cents refunded after the bill (no driver)")
    refunded_by_staff: int = Field(
        0, description="Cents staff refunded after the order completed (see `refunds`)"
    )
    money: str = Field(
        "",
        description="Where the money is at the payment provider: held, captured, released, "
        "expired, refunded ('' when the card was never held)",
    )
    statement: str = Field(
        "",
        description="The money as the card's statement shows it, in words: 'hold $35.00, "
        "captured $35.00', 'hold $35.00, released: nothing taken', 'nothing held'...",
    )


class RefundView(BaseModel):
    """A refund staff gave the order after it completed (POST /orders/{n}/refunds)."""

    amount: int = Field(description="Cents given back")
    state: str = Field(
        description="'refunded'; 'pending': the payment provider's answer is not recorded yet "
        "(a retry with the same Idempotency-Key finishes it); 'refused': nothing moved"
    )
    refund_id: str | None = Field(description="The payment provider's id of the refund")
    claimed_at: str = Field(description="When it was asked for (UTC)")


class OrderView(BaseModel):
    order_number: str
    run_id: str = Field(
        description="Its run at Temporal: an order number placed again (once the last run "
        "closed) has a run per placing, each with its own effects"
    )
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
    trace_id: str | None = Field(None, description="Its OpenTelemetry trace, when traced")
    refunds: list[RefundView] = Field(
        default_factory=list, description="Refunds staff gave it once it completed, oldest first"
    )


class OrderRow(BaseModel):
    order_number: str
    run_id: str = Field(description="This run of the order number")
    started: str
    status: str
    order_status: str | None
    amount: int | None
    compensation: str | None


class OrderList(BaseModel):
    orders: list[OrderRow]


class CancelBody(BaseModel):
    model_config = STRICT
    reason: FreeText = Field(default="cancelled by the customer", max_length=order_fields.MAX_TEXT)


class CancelAccepted(BaseModel):
    order_number: str
    reason: str
    compensations: list[str] = Field(description="What was undone, in order")


class RepairBody(BaseModel):
    model_config = STRICT
    action: str = Field(description="'retry' the failed compensations, or 'resolve' by hand")
    note: FreeText = Field(
        default="", max_length=order_fields.MAX_TEXT, description="Needed to resolve"
    )


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


class PaymentsConfig(BaseModel):
    """Where the order page trades the card number for the payment provider's token: no
    secret, a publishable key at most."""

    tokenize: bool = Field(
        description="true: the page sends the card number to provider_url only, with "
        "publishable_key, and sends the token (credit_card_info.payment_method) to "
        "POST /orders. false: the page sends the number in the order (why says why)"
    )
    provider_url: str | None = Field(
        description="The payment provider's base URL as a browser reaches it; the page "
        "posts to {provider_url}/v1/payment_methods"
    )
    publishable_key: str | None = Field(
        description="The provider's publishable key (pk_...), sent as 'Authorization: Bearer'"
    )
    why: str | None = Field(description="Why the page does not tokenize, when it does not")


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
    order_number: str | None = Field(
        default=None, description="A refused order's number (POST /orders): its Location"
    )
    order_token: str | None = Field(
        default=None,
        description="A refused order's token (POST /orders): opens its Location, to see "
        "what was undone",
    )
