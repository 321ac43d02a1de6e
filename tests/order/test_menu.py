"""Recipes, prices, the card check and which orders we accept: pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pizzeria.menu import (
    BASE,
    DISCOUNT,
    DISCOUNT_THRESHOLD,
    MAX_ITEM_PRICE,
    MAX_ITEMS,
    PORTIONS_BY_SIZE,
    PRICE_BY_SIZE,
    TOPPINGS,
    billed_amount,
    card_problem,
    describe_items,
    incomplete_address,
    ingredients_for,
    luhn_valid,
    menu_price,
    off_menu,
    order_problems,
    order_total,
    recipe,
    repeated_toppings,
    validate_order,
)
from pizzeria.models import Pizza, PizzaOrder
from pizzeria.order_fields import OrderRejected
from pizzeria.samples import BAD_CARD, EXERCISE_ITEMS, GOOD_CARD, sample_order

INVALID_CARD = "Invalid credit card number"


def rejected_kind(order: PizzaOrder) -> str:
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    return raised.value.kind


# -- recipes -------------------------------------------------------------------------------


def test_recipe_large_with_mushrooms_and_onions_triples_every_portion() -> None:
    assert recipe("Large, with mushrooms and onions") == Counter(
        {"dough": 3, "tomato sauce": 3, "cheese": 3, "mushrooms": 3, "onions": 3}
    )


def test_recipe_small_with_pepperoni_is_one_portion_of_each() -> None:
    assert recipe("Small, with pepperoni") == Counter(
        {"dough": 1, "tomato sauce": 1, "cheese": 1, "pepperoni": 1}
    )


def test_recipe_medium_with_extra_cheese_adds_cheese() -> None:
    assert recipe("Medium, with extra cheese") == Counter(
        {"dough": 2, "tomato sauce": 2, "cheese": 4}
    )


@pytest.mark.parametrize(
    "description",
    ["Large", "  large  ", "LARGE, WITH HAM", "Large with ham", "large, with ham, and olives"],
)
def test_recipe_reads_sizes_case_insensitively_and_without_toppings(description: str) -> None:
    portions = recipe(description)
    assert all(portions[name] == 3 for name in BASE)
    assert set(portions) <= {*BASE, "ham", "olives"}


def test_recipe_accepts_singular_toppings_and_lists_with_commas() -> None:
    assert recipe("Small, with mushroom, onion and ham") == Counter(
        {"dough": 1, "tomato sauce": 1, "cheese": 1, "mushrooms": 1, "onions": 1, "ham": 1}
    )


@pytest.mark.parametrize(
    "description", ["Large, with anchovies", "Small, with ham and pineapple and glue"]
)
def test_recipe_rejects_an_unknown_topping(description: str) -> None:
    with pytest.raises(OrderRejected) as raised:
        recipe(description)
    assert raised.value.kind == "UnknownToppingError"


@pytest.mark.parametrize("description", ["Huge, with ham", "", "pizza", "Extra large"])
def test_recipe_rejects_an_unknown_size(description: str) -> None:
    with pytest.raises(OrderRejected) as raised:
        recipe(description)
    assert raised.value.kind == "InvalidOrderError"


def test_ingredients_for_the_exercise_order_adds_up_its_three_pizzas() -> None:
    items = [Pizza(description, price) for description, price in EXERCISE_ITEMS]
    assert ingredients_for(items) == {
        "cheese": 3 + 1 + 4,
        "dough": 3 + 1 + 2,
        "mushrooms": 3,
        "onions": 3,
        "pepperoni": 1,
        "tomato sauce": 3 + 1 + 2,
    }
    assert order_total(items) == 4000
    assert describe_items(items) == "; ".join(d for d, _ in EXERCISE_ITEMS)


# -- pricing -------------------------------------------------------------------------------


def test_billed_amount_takes_the_discount_off_totals_above_the_threshold() -> None:
    assert DISCOUNT_THRESHOLD == 3000
    assert DISCOUNT == 500
    assert billed_amount(4000) == 3500
    assert billed_amount(3001) == 2501


def test_billed_amount_at_or_below_the_threshold_is_the_total() -> None:
    assert billed_amount(3000) == 3000
    assert billed_amount(1) == 1
    assert billed_amount(0) == 0


# -- cards ---------------------------------------------------------------------------------


def test_the_good_test_card_is_accepted() -> None:
    assert GOOD_CARD == "4242424242424242"
    assert luhn_valid(GOOD_CARD)
    assert card_problem(GOOD_CARD) is None


def test_the_exercises_fifteen_digit_card_is_invalid() -> None:
    assert BAD_CARD == "424242424242424"
    assert card_problem(BAD_CARD) == INVALID_CARD


@pytest.mark.parametrize(
    "number",
    [
        "",
        "4242424242424241",  # 16 digits, fails the Luhn check
        "42424242424242420",  # 17 digits
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "424242424242424a",
        "abcdabcdabcdabcd",
        " 424242424242424",
        "\uff14\uff12" * 8,  # full-width digits: isdigit() but not a card
        "424242424242424\u00b2",  # superscript two: isdigit() but int() fails
    ],
)
def test_card_numbers_with_the_wrong_length_letters_or_spaces_are_rejected(number: str) -> None:
    assert card_problem(number) == INVALID_CARD


# -- orders --------------------------------------------------------------------------------


def test_validate_order_accepts_the_sample_order() -> None:
    validate_order(sample_order(card=BAD_CARD))  # the bad card is the gateway's verdict, not ours
    validate_order(sample_order(card=GOOD_CARD, is_delivery=False))


def test_validate_order_rejects_an_order_without_items() -> None:
    assert rejected_kind(sample_order(items=[])) == "InvalidOrderError"


def test_validate_order_rejects_too_many_items() -> None:
    validate_order(sample_order(items=[Pizza("Small", 1200)] * MAX_ITEMS))
    too_many = [Pizza("Small", 1200)] * (MAX_ITEMS + 1)
    assert rejected_kind(sample_order(items=too_many)) == "InvalidOrderError"


@pytest.mark.parametrize("price", [0, MAX_ITEM_PRICE + 1, 10**12])
def test_validate_order_rejects_zero_or_huge_prices(price: int) -> None:
    assert rejected_kind(sample_order(items=[Pizza("Small", price)])) == "InvalidOrderError"


def test_validate_order_rejects_a_price_that_is_not_whole_cents() -> None:
    order = sample_order(items=[Pizza("Small", True)])
    assert rejected_kind(order) == "InvalidOrderError"
    order = sample_order(items=[Pizza("Small", 12.5)])  # type: ignore[arg-type]
    assert rejected_kind(order) == "InvalidOrderError"


def rejection(order: PizzaOrder) -> str:
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    return str(raised.value)


def test_a_missing_price_is_called_missing_not_a_fraction_of_a_cent() -> None:
    order = sample_order(items=[Pizza("Small", None)])  # type: ignore[arg-type]
    assert rejection(order) == "item price is missing"
    assert rejection(sample_order(items=[Pizza("Small", 12.5)])) == (  # type: ignore[arg-type]
        "item price must be whole cents"
    )


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("Lisa\x00", "customer.name holds control characters"),
        ("Lisa\nAnderson", "customer.name holds control characters"),
        ("Lisa \ud800", "customer.name holds a lone surrogate (half of a character, not text)"),
    ],
)
def test_a_lone_surrogate_is_not_called_a_control_character(name: str, said: str) -> None:
    order = sample_order()
    order = replace(order, customer=replace(order.customer, name=name))
    assert rejection(order) == said


def test_validate_order_rejects_a_negative_price_as_an_invalid_charge() -> None:
    order = sample_order(items=[Pizza("Small", -1)])
    assert rejected_kind(order) == "InvalidChargeAmountError"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_validate_order_rejects_an_empty_or_overlong_customer_name(name: str) -> None:
    order = sample_order()
    order = replace(order, customer=replace(order.customer, name=name))
    assert rejected_kind(order) == "InvalidOrderError"


def test_validate_order_rejects_an_empty_card_holder() -> None:
    order = sample_order()
    order = replace(order, credit_card_info=replace(order.credit_card_info, holderName=" "))
    assert rejected_kind(order) == "InvalidOrderError"


@pytest.mark.parametrize(
    "order_number", ["", "XD 001", "XD/001", "XD001;DROP", "x" * 65, "XD\n001", "ÄÖÜ"]
)
def test_validate_order_rejects_bad_order_number_characters(order_number: str) -> None:
    assert rejected_kind(sample_order(order_number)) == "InvalidOrderError"


@pytest.mark.parametrize("order_number", ["XD001", "a", "order-2024.01_x", "9" * 64])
def test_validate_order_accepts_plain_order_numbers(order_number: str) -> None:
    validate_order(sample_order(order_number))


def test_validate_order_needs_an_address_only_for_delivery() -> None:
    order = sample_order()
    no_address = replace(order.address, line1="")
    assert rejected_kind(replace(order, address=no_address)) == "InvalidOrderError"
    validate_order(replace(order, address=no_address, is_delivery=False))


def test_validate_order_rejects_an_unknown_topping() -> None:
    order = sample_order(items=[Pizza("Large, with anchovies", 1500)])
    assert rejected_kind(order) == "UnknownToppingError"


def test_validate_order_rejects_an_unknown_size() -> None:
    order = sample_order(items=[Pizza("Gigantic, with ham", 1500)])
    assert rejected_kind(order) == "InvalidOrderError"


# -- which field a refusal is about ----------------------------------------------------------


def rejected_field(order: PizzaOrder) -> tuple[str, str]:
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    return raised.value.field, raised.value.kind


def with_items(*items: Pizza) -> PizzaOrder:
    return sample_order(items=list(items))


SMALL = Pizza("Small", 1200)


@pytest.mark.parametrize(
    ("order", "field", "kind"),
    [
        (
            with_items(SMALL, SMALL, Pizza("Small", -5)),
            "items[2].price",
            "InvalidChargeAmountError",
        ),
        (with_items(SMALL, Pizza("Small", 12.5)), "items[1].price", "InvalidOrderError"),  # type: ignore[arg-type]
        (with_items(Pizza("Small", None)), "items[0].price", "InvalidOrderError"),  # type: ignore[arg-type]
        (
            with_items(SMALL, Pizza("Small", MAX_ITEM_PRICE + 1)),
            "items[1].price",
            "InvalidOrderError",
        ),
        (
            with_items(SMALL, Pizza("Small, with glue", 1200)),
            "items[1].description",
            "UnknownToppingError",
        ),
        (with_items(Pizza("Gigantic", 1200)), "items[0].description", "InvalidOrderError"),
        (with_items(Pizza(" ", 1200)), "items[0].description", "InvalidOrderError"),
        (with_items(), "items", "InvalidOrderError"),
        (with_items(*[SMALL] * (MAX_ITEMS + 1)), "items", "InvalidOrderError"),
        (sample_order("XD 001"), "order_number", "InvalidOrderError"),
        (sample_order(card="4242 4242"), "credit_card_info.number", "InvalidOrderError"),
        (sample_order(prep_seconds=-1), "settings.prep_seconds", "InvalidOrderError"),
        (sample_order(step_attempts=0), "settings.step_attempts", "InvalidOrderError"),
    ],
)
def test_a_refusal_names_the_field_it_is_about(order: PizzaOrder, field: str, kind: str) -> None:
    """Clients (the API's 422) point at the field from the refusal, never from its words."""
    assert rejected_field(order) == (field, kind)


def test_a_refusal_of_a_customer_or_delivery_field_names_its_path() -> None:
    order = sample_order()
    nameless = replace(order, customer=replace(order.customer, name="Lisa\n"))
    assert rejected_field(nameless) == ("customer.name", "InvalidOrderError")
    homeless = replace(order, address=replace(order.address, line1=""))
    assert rejected_field(homeless) == ("address.line1", "InvalidOrderError")
    assert rejected_field(replace(order, is_delivery="yes")) == ("is_delivery", "InvalidOrderError")  # type: ignore[arg-type]


# -- prices come from the menu ----------------------------------------------------------------


def test_the_exercise_orders_prices_are_the_menus() -> None:
    items = [Pizza(description, price) for description, price in EXERCISE_ITEMS]
    assert [price for _, price in EXERCISE_ITEMS] == [1500, 1200, 1300]
    assert [menu_price(item.description) for item in items] == [1500, 1200, 1300]
    validate_order(sample_order(items=items))
    assert not off_menu(sample_order(items=items))


@pytest.mark.parametrize(
    ("items", "field", "said"),
    [
        (
            [Pizza("Large, with ham", 1000)],
            "items[0].price",
            "items[0] ('Large, with ham') costs 1500 cents on the menu ($15.00), not 1000",
        ),
        (
            [SMALL, Pizza("medium", 1200)],
            "items[1].price",
            "items[1] ('medium') costs 1300 cents on the menu ($13.00), not 1200",
        ),
        (  # no space after the size: a large pizza to the kitchen, so to the bill too
            [Pizza("Largewith ham and pineapple", 100)],
            "items[0].price",
            "items[0] ('Largewith ham and pineapple') costs 1500 cents on the menu ($15.00), "
            "not 100",
        ),
        (
            [SMALL, Pizza("  MEDIUMWITH MUSHROOMS ", 99)],
            "items[1].price",
            "items[1] ('  MEDIUMWITH MUSHROOMS ') costs 1300 cents on the menu ($13.00), not 99",
        ),
    ],
)
def test_a_price_other_than_the_menus_is_refused_naming_the_item_and_the_menus_price(
    items: list[Pizza], field: str, said: str
) -> None:
    order = sample_order(items=items)
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    assert (raised.value.kind, raised.value.field, str(raised.value)) == (
        "InvalidOrderError",
        field,
        said,
    )
    assert off_menu(order)
    validate_order(order, menu_prices=False)  # the rule orders started before ran under


# -- each topping once ------------------------------------------------------------------


def test_a_topping_named_twice_is_refused_naming_the_item_and_the_topping() -> None:
    # The price is the size's: fifteen "mushrooms" took fifteen times the stock for $15.
    doubled = Pizza("Large, with mushrooms, Mushrooms and onions", 1500)
    order = sample_order(items=[SMALL, doubled])
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    assert (raised.value.kind, raised.value.field, str(raised.value)) == (
        "InvalidOrderError",
        "items[1].description",
        "items[1].description names 'mushrooms' twice: each topping once",
    )
    assert repeated_toppings(order)
    validate_order(order, toppings_once=False)  # the rule orders started before ran under
    assert recipe(doubled.description)["mushrooms"] == 6  # and what they took
    assert not repeated_toppings(sample_order())  # extra cheese is no second cheese topping
    validate_order(sample_order(items=[Pizza("Medium, with extra cheese and ham", 1300)]))


# -- a delivery needs an address a driver can find ------------------------------------------


@pytest.mark.parametrize("field", ["city", "state", "postal_code"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_a_delivery_without_a_city_state_or_postal_code_is_refused_naming_it(
    field: str, blank: str
) -> None:
    order = sample_order()
    setattr(order.address, field, blank)
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    assert (raised.value.kind, raised.value.field, str(raised.value)) == (
        "InvalidOrderError",
        f"address.{field}",
        f"a delivery needs address.{field}",
    )
    assert incomplete_address(order)
    validate_order(order, full_address=False)  # the rule orders started before ran under
    pickup = sample_order(is_delivery=False)
    setattr(pickup.address, field, blank)
    validate_order(pickup)  # nothing is delivered: no address needed
    assert not incomplete_address(pickup)


@pytest.mark.parametrize(
    ("rule", "part", "value"),
    [
        *[(repeated_toppings, "items", v) for v in (None, "pizzas", [None], [Pizza(None, 1)])],  # type: ignore[arg-type]
        (repeated_toppings, "items", [Pizza("Huge", 1)]),
        *[(incomplete_address, "address", v) for v in (None, "Main St", 7)],
    ],
)
def test_which_orders_a_new_rule_changes_never_raises_and_says_no_for_what_it_cannot_read(
    rule: Callable[[object], bool], part: str, value: object
) -> None:
    """The workflow asks these before any check, of whatever a client sent."""
    order = sample_order()
    setattr(order, part, value)
    assert rule(order) is False
    assert rule(None) is False
    assert rule(sample_order()) is False  # the exercise's order: whole, each topping once


def test_a_negative_price_is_still_an_invalid_charge_not_an_off_menu_price() -> None:
    order = sample_order(items=[SMALL, Pizza("Large", -1500)])
    assert rejected_field(order) == ("items[1].price", "InvalidChargeAmountError")


@pytest.mark.parametrize(
    "items",
    [None, "pizzas", [None], [Pizza("Gigantic", 100)], [Pizza(None, 100)], [Pizza("Small", 12.5)]],  # type: ignore[arg-type]
)
def test_off_menu_never_raises_and_says_no_for_what_it_cannot_price(items: object) -> None:
    order = sample_order()
    order.items = items  # type: ignore[assignment]
    assert off_menu(order) is False


def test_ingredients_for_names_the_item_it_cannot_read() -> None:
    with pytest.raises(OrderRejected) as raised:
        ingredients_for([SMALL, Pizza("Large, with anchovies", 1500)])
    assert (raised.value.field, raised.value.kind) == (
        "items[1].description",
        "UnknownToppingError",
    )


# -- properties ----------------------------------------------------------------------------


@st.composite
def pizzas(draw: st.DrawFn) -> Pizza:
    size = draw(st.sampled_from(sorted(PORTIONS_BY_SIZE)))
    size = draw(st.sampled_from([size, size.upper(), size.capitalize()]))
    # Each topping once (by ingredient: "mushroom" is "mushrooms"), as an order must.
    names = st.sampled_from(sorted(TOPPINGS))
    toppings = draw(st.lists(names, max_size=4, unique_by=lambda name: TOPPINGS[name]))
    if toppings:
        listed = ", ".join(toppings[:-1])
        description = (
            f"{size}, with {listed} and {toppings[-1]}"
            if listed
            else (f"{size}, with {toppings[-1]}")
        )
    else:
        description = size
    return Pizza(description, PRICE_BY_SIZE[size.lower()])


def expected_portions(pizza: Pizza) -> Counter[str]:
    """The recipe rule written out again, independently of the parser."""
    size_word, _, rest = pizza.description.lower().partition(",")
    size = PORTIONS_BY_SIZE[size_word.strip()]
    portions = Counter(dict.fromkeys(BASE, size))
    if rest:
        names = rest.strip().removeprefix("with").replace(" and ", ",").split(",")
        for name in names:
            if name.strip():
                portions[TOPPINGS[name.strip()]] += size
    return portions


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(pizzas(), min_size=1, max_size=MAX_ITEMS))
def test_ingredients_for_is_the_sum_of_the_recipes(items: list[Pizza]) -> None:
    total: Counter[str] = Counter()
    independent: Counter[str] = Counter()
    for item in items:
        total.update(recipe(item.description))
        independent.update(expected_portions(item))
    assert ingredients_for(items) == dict(total) == dict(independent)
    assert list(ingredients_for(items)) == sorted(total)
    validate_order(sample_order(items=items))


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(pizzas(), min_size=1, max_size=MAX_ITEMS))
def test_billed_amount_is_never_more_than_the_total_nor_negative(items: list[Pizza]) -> None:
    total = order_total(items)
    assert total > 0
    billed = billed_amount(total)
    assert 0 <= billed <= total
    assert total - billed in (0, DISCOUNT)


@given(st.integers(min_value=1, max_value=MAX_ITEMS * MAX_ITEM_PRICE))
@settings(database=None)
def test_billed_amount_of_any_positive_total_is_between_zero_and_the_total(total: int) -> None:
    assert 0 <= billed_amount(total) <= total


@settings(database=None)
@given(st.text(max_size=20))
def test_card_problem_never_raises_and_accepts_only_16_ascii_digits(number: str) -> None:
    problem = card_problem(number)
    assert problem in (None, INVALID_CARD)
    if problem is None:
        assert len(number) == 16
        assert all(ch in "0123456789" for ch in number)


# -- every refused field at once (a form shows them all) ------------------------------------


def broken_in_many_places() -> PizzaOrder:
    order = sample_order(card=GOOD_CARD)
    order.customer.name = ""
    order.customer.email = "a\x1bb"
    order.credit_card_info.number = "4242 4242"
    order.address.city = " "  # a delivery needs a city
    order.address.postal_code = ""  # and a postal code: both said at once
    order.items[0].price = 1  # off the menu
    return order


def test_order_problems_names_every_refused_field_and_first_the_one_validate_order_raises():
    order = broken_in_many_places()
    problems = order_problems(order)
    assert [problem.field for problem in problems] == [
        "customer.name",
        "customer.email",
        "credit_card_info.number",
        "address.city",
        "address.postal_code",
        "items[0].price",
    ]
    with pytest.raises(OrderRejected) as raised:
        validate_order(order)
    assert (raised.value.field, str(raised.value)) == (problems[0].field, str(problems[0]))
    assert order_problems(sample_order(card=GOOD_CARD)) == []


def test_order_problems_goes_on_past_a_field_of_the_wrong_shape_without_failing_itself():
    order = sample_order(card=GOOD_CARD)
    order.order_number = None  # type: ignore[assignment]
    order.is_delivery = "yes"  # type: ignore[assignment]
    order.address.line1 = 7  # type: ignore[assignment]
    order.address.state = ["NY"]  # type: ignore[assignment]
    order.customer.customer_id = -1
    fields = [problem.field for problem in order_problems(order, new_number=True)]
    assert fields == [
        "order_number",
        "customer.customer_id",
        "is_delivery",
        "address.line1",
        "address.state",
    ]
    # Not an order at all: one problem about the whole, nothing read past it.
    assert [p.field for p in order_problems(None)] == [""]  # type: ignore[arg-type]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.sampled_from(["Ada", "", "\u3164", "a\x00"]),
    city=st.sampled_from(["Town", "", " ", "\u202e"]),
    number=st.sampled_from([GOOD_CARD, "", "42", "x" * 16]),
    price=st.sampled_from([None, 1, 0, -5]),
    delivery=st.booleans(),
    new_number=st.booleans(),
)
def test_the_first_of_order_problems_is_always_what_validate_order_raises(
    name, city, number, price, delivery, new_number
):
    order = sample_order(card=number, is_delivery=delivery)
    order.customer.name, order.address.city = name, city
    if price is not None:
        order.items[0].price = price
    problems = order_problems(order, new_number=new_number)
    try:
        validate_order(order, new_number=new_number)
    except OrderRejected as raised:
        assert problems and (problems[0].field, str(problems[0])) == (raised.field, str(raised))
    else:
        assert problems == []
