"""An order's fields, each checked apart from the menu: its shape, its number, the customer,
the card, the address, and the free text in them (`text.py`'s rule). A check raises
`OrderRejected` naming the field; `menu.validate_order` runs them, and checks the items.

Pure functions with no I/O: the workflow runs them (so they must stay deterministic).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pizzeria.text as text
from pizzeria.models import INVALID_ORDER_ERROR, Address, CreditCardInfo, Customer, PizzaOrder

#: The longest free text a field may hold, in characters.
MAX_TEXT = 200


#: The `OrderRejected.field` of a refusal about the order as a whole, not one of its fields.
WHOLE_ORDER = ""


class OrderRejected(ValueError):
    """An order we refuse before doing anything. ``kind`` is the error type clients see;
    ``field`` names what is wrong as a path into the order's JSON (``items[2].price``,
    ``customer.name``), or is `WHOLE_ORDER`."""

    def __init__(self, kind: str, message: str, *, field: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


def invalid(field: str, message: str) -> OrderRejected:
    return OrderRejected(INVALID_ORDER_ERROR, message, field=field)


def _unprintable(value: str) -> str | None:
    """What is wrong with the text's characters, if anything: text.py's one rule for every
    free-text field (controls, format characters, line separators, lone surrogates)."""
    return text.text_problem(value)


def whole(value: object) -> bool:
    """An int that is not a bool (the JSON decoder also lets 12.5 through as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def free_text(value: object, name: str, *, required: bool = True) -> str:
    """A printable string of at most MAX_TEXT characters (and not blank, when required)."""
    if not isinstance(value, str) or (required and not value.strip()):
        raise invalid(name, f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise invalid(name, f"{name} is longer than {MAX_TEXT}")
    problem = _unprintable(value)
    if problem:
        raise invalid(name, f"{name} {problem}")
    return value


#: One of `menu.validate_order`'s checks: it raises `OrderRejected` (what it returns is not read).
Check = Callable[[], object]


def validate_shape(order: object) -> None:
    """JSON null (or another shape) can reach the workflow where an order should be."""
    parts = {"customer": Customer, "address": Address, "credit_card_info": CreditCardInfo}
    if not isinstance(order, PizzaOrder) or not all(
        isinstance(getattr(order, name), kind) for name, kind in parts.items()
    ):
        raise invalid(WHOLE_ORDER, "the order must be a JSON object of the contract")


def validate_number(number: object, new_number: bool) -> None:
    # Said the same way however long: the rule of 64 before the general one of MAX_TEXT.
    if not isinstance(number, str) or not number.strip():
        free_text(number, "order_number")
    assert isinstance(number, str)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", number):
        raise invalid(
            "order_number", "order_number must be 1 to 64 letters, digits, '.', '_' or '-'"
        )
    if new_number and not number[0].isalnum():
        raise invalid("order_number", "order_number must start with a letter or a digit")


def validate_readable(order: PizzaOrder) -> None:
    """Each text field of a new order holds something a reader can see (see menu.validate_order)."""
    fields = {
        "customer.name": order.customer.name,
        "customer.email": order.customer.email,
        "customer.phone": order.customer.phone,
        "credit_card_info.holderName": order.credit_card_info.holderName,
        **{f"address.{name}": getattr(order.address, name) for name in ADDRESS_FIELDS},
    }
    for name, value in fields.items():
        problem = text.unreadable_problem(value) if isinstance(value, str) else None
        if problem:
            raise invalid(name, f"{name} {problem}")


def validate_customer_id(customer_id: object) -> None:
    if not whole(customer_id) or not 0 <= customer_id < 2**63:  # type: ignore[operator]
        raise invalid(
            "customer.customer_id",
            "customer.customer_id must be a whole number from 0 to 9223372036854775807",
        )


def validate_card(card: CreditCardInfo) -> None:
    """A card number, or instead a payment provider's token for the card (``pm_...``)."""
    token = card.payment_method
    if token is not None:
        if not isinstance(token, str) or not re.fullmatch(r"pm_[A-Za-z0-9_]{1,200}", token):
            raise invalid(
                "credit_card_info.payment_method",
                "credit_card_info.payment_method must be a payment provider's token, pm_...",
            )
        if card.number != "":
            raise invalid(
                "credit_card_info.number",
                "send the card number or a payment_method token, not both",
            )
        return
    if not isinstance(card.number, str) or not re.fullmatch(r"[0-9]{12,19}", card.number):
        raise invalid(
            "credit_card_info.number",
            "credit_card_info.number must be 12 to 19 digits, nothing else",
        )


#: An address's text fields, each checked as free text.
ADDRESS_FIELDS = ("line1", "line2", "city", "state", "postal_code")
#: What a driver needs besides ``line1`` (``line2`` may stay empty).
DELIVERY_FIELDS = ("city", "state", "postal_code")


def validate_is_delivery(is_delivery: object) -> None:
    if not isinstance(is_delivery, bool):
        raise invalid("is_delivery", "is_delivery must be true or false")


def address_text(order: PizzaOrder, name: str) -> Check:
    return lambda: free_text(getattr(order.address, name), f"address.{name}", required=False)


def validate_delivery_line(order: PizzaOrder) -> None:
    """What a driver needs first, of the fields that are text (the checks before say the
    rest): a street line. Then each of `DELIVERY_FIELDS`, a check of its own, so that a
    form is told every one missing at once (`menu.order_problems`)."""
    line1 = order.address.line1
    if order.is_delivery is True and isinstance(line1, str):
        free_text(line1, "address.line1")


def delivery_field(order: PizzaOrder, name: str) -> Check:
    def check() -> None:
        value = getattr(order.address, name)
        if order.is_delivery is True and isinstance(value, str) and not value.strip():
            raise invalid(f"address.{name}", f"a delivery needs address.{name}")

    return check
