"""The exercise's order (Lisa Anderson, three pizzas), for the CLI, the demo and tests."""

from __future__ import annotations

from pizzeria.menu import PRICE_BY_SIZE
from pizzeria.models import (
    Address,
    CreditCardInfo,
    Customer,
    OrderSettings,
    Pizza,
    PizzaOrder,
)

GOOD_CARD = "4242424242424242"
BAD_CARD = "424242424242424"  # 15 digits: the exercise's bad card
EXERCISE_ITEMS = (
    ("Large, with mushrooms and onions", PRICE_BY_SIZE["large"]),
    ("Small, with pepperoni", PRICE_BY_SIZE["small"]),
    ("Medium, with extra cheese", PRICE_BY_SIZE["medium"]),
)


def sample_order(
    order_number: str = "XD001",
    *,
    card: str = GOOD_CARD,
    is_delivery: bool = True,
    items: list[Pizza] | None = None,
    prep_seconds: float | None = None,
    compensation_attempts: int | None = None,
    step_attempts: int | None = None,
    fast_path: bool | None = None,
) -> PizzaOrder:
    """The exercise's order, with a card the gateway accepts unless ``card`` says otherwise
    (``BAD_CARD`` is the exercise's failing one); any setting given adds the optional
    ``settings`` field."""
    settings = None
    chosen = {
        "prep_seconds": prep_seconds,
        "compensation_attempts": compensation_attempts,
        "step_attempts": step_attempts,
        "fast_path": fast_path,
    }
    if any(value is not None for value in chosen.values()):
        settings = OrderSettings(**{k: v for k, v in chosen.items() if v is not None})  # type: ignore[arg-type]
    return PizzaOrder(
        order_number=order_number,
        customer=Customer(
            customer_id=8675309,
            name="Lisa Anderson",
            email="lisa@example.com",
            phone="555-555-0000",
        ),
        items=items
        if items is not None
        else [Pizza(description, price) for description, price in EXERCISE_ITEMS],
        is_delivery=is_delivery,
        address=Address(
            line1="741 Evergreen Terrace",
            line2="Apartment 221B",
            city="Albuquerque",
            state="NM",
            postal_code="87101",
        ),
        credit_card_info=CreditCardInfo(holderName="Lisa Anderson", number=card),
        settings=settings,
    )
