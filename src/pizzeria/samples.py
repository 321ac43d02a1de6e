"""The exercise's order (Lisa Anderson, three pizzas), for the CLI, the demo and tests."""

from __future__ import annotations

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
    ("Large, with mushrooms and onions", 1500),
    ("Small, with pepperoni", 1200),
    ("Medium, with extra cheese", 1300),
)


def sample_order(
    order_number: str = "XD001",
    *,
    card: str = BAD_CARD,
    is_delivery: bool = True,
    items: list[Pizza] | None = None,
    prep_seconds: float | None = None,
    compensation_attempts: int | None = None,
) -> PizzaOrder:
    settings = None
    if prep_seconds is not None or compensation_attempts is not None:
        defaults = OrderSettings()
        settings = OrderSettings(
            prep_seconds=defaults.prep_seconds if prep_seconds is None else prep_seconds,
            compensation_attempts=(
                defaults.compensation_attempts
                if compensation_attempts is None
                else compensation_attempts
            ),
        )
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
