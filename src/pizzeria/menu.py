"""What a pizza is made of, what an order costs, and which orders we accept.

Pure functions with no I/O: the workflow calls them (so they must stay deterministic) to
reject a bad order before any effect, and the activities call them to move stock. The
checks of the order's other fields (and `OrderRejected`) are `order_fields.py`'s.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

import pizzeria.order_fields as fields
from pizzeria.models import (
    INVALID_CHARGE_AMOUNT_ERROR,
    UNKNOWN_TOPPING_ERROR,
    Address,
    Pizza,
    PizzaOrder,
)

DISCOUNT_THRESHOLD = 3000  # cents: larger totals get DISCOUNT off (the exercise's rule)
DISCOUNT = 500
MAX_ITEMS = 50
MAX_ITEM_PRICE = 100_000  # cents
MAX_PREP = 3600.0  # seconds
MAX_ATTEMPTS = 1000
CARD_LENGTH = 16

#: The one price table: what a pizza of each size costs, in cents (toppings included).
PRICE_BY_SIZE = {"small": 1200, "medium": 1300, "large": 1500}
#: How many portions of each ingredient a pizza of each size takes.
PORTIONS_BY_SIZE = {"small": 1, "medium": 2, "large": 3}
BASE = ("dough", "tomato sauce", "cheese")
TOPPINGS = {
    "mushrooms": "mushrooms",
    "mushroom": "mushrooms",
    "onions": "onions",
    "onion": "onions",
    "pepperoni": "pepperoni",
    "extra cheese": "cheese",
    "cheese": "cheese",
    "olives": "olives",
    "peppers": "peppers",
    "ham": "ham",
    "pineapple": "pineapple",
    "sausage": "sausage",
    "basil": "basil",
}
INGREDIENTS = tuple(dict.fromkeys([*BASE, *TOPPINGS.values()]))
INITIAL_STOCK = 1000  # portions of each ingredient in a new ledger


#: A pizza's description, lowercase: its size, then its toppings ("with a, b and c").
PIZZA = re.compile(r"(small|medium|large)\s*(?:,?\s*with\s+(.+))?")


def recipe(description: str, *, field: str = "description", once: bool = False) -> Counter[str]:
    """Portions of each ingredient in one pizza, from a description like the exercise's.

    "Large, with mushrooms and onions" is three portions of dough, sauce and cheese plus
    three of mushrooms and three of onions: a size multiplies every portion. ``field``
    names the description in a refusal. With ``once``, a topping named twice is refused
    (the price is the size's: fifteen "mushrooms" would take fifteen times the stock for
    the price of one); without, it counts each time, as orders placed before the rule.
    """
    text = description.strip().lower()
    match = PIZZA.fullmatch(text)
    if match is None:
        raise fields.invalid(
            field, f"Unknown pizza {description[:60]!r}: start with Small, Medium or Large"
        )
    size = PORTIONS_BY_SIZE[match.group(1)]
    portions: Counter[str] = Counter({ingredient: size for ingredient in BASE})
    named: set[str] = set()
    for name in topping_names(match.group(2)):
        ingredient = TOPPINGS.get(name)
        if ingredient is None:
            raise fields.OrderRejected(
                UNKNOWN_TOPPING_ERROR, f"Unknown topping {name[:40]!r}", field=field
            )
        if once and ingredient in named:
            raise fields.invalid(field, f"{field} names {name[:40]!r} twice: each topping once")
        named.add(ingredient)
        portions[ingredient] += size
    return portions


def topping_names(toppings: str | None) -> list[str]:
    """The toppings of "with a, b and c", each as written (lowercase)."""
    if not toppings:
        return []
    return [name.strip() for name in re.split(r"\s*(?:,|\band\b)\s*", toppings) if name]


def repeated_toppings(order: object) -> bool:
    """Whether any item of ``order`` names a topping twice: the only orders whose verdict
    the one-topping-once rule changes (the workflow asks for its patch only then). Never
    raises, whatever the order holds."""
    items = getattr(order, "items", None)
    for item in items if isinstance(items, list) else []:
        description = getattr(item, "description", None)
        if not isinstance(description, str):
            continue
        match = PIZZA.fullmatch(description.strip().lower())
        names = [TOPPINGS.get(name) for name in topping_names(match.group(2) if match else None)]
        known = [name for name in names if name is not None]
        if len(known) != len(set(known)):
            return True
    return False


def ingredients_for(items: Iterable[Pizza]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for index, item in enumerate(items):
        total.update(recipe(item.description, field=f"items[{index}].description"))
    return dict(sorted(total.items()))


def order_total(items: Iterable[Pizza]) -> int:
    return sum(item.price for item in items)


def billed_amount(total: int) -> int:
    """The amount billed and charged: one rule, so the charge always equals the bill."""
    return total - DISCOUNT if total > DISCOUNT_THRESHOLD else total


def billed_for(items: Iterable[Pizza]) -> int:
    """What an order of these items is billed: its total, less the discount."""
    return billed_amount(order_total(items))


def luhn_valid(number: str) -> bool:
    digits = [int(ch) for ch in reversed(number)]
    checksum = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return checksum % 10 == 0


def card_problem(number: str) -> str | None:
    """Why a card number cannot be charged, or None when it can."""
    # isascii: str.isdigit() also accepts digits such as "\uff14" or "\u00b2", which would
    # pass as a card (full-width) or crash luhn_valid (superscripts).
    if (
        len(number) != CARD_LENGTH
        or not (number.isascii() and number.isdigit())
        or not luhn_valid(number)
    ):
        return "Invalid credit card number"
    return None


def describe_items(items: Iterable[Pizza]) -> str:
    return "; ".join(item.description for item in items)


def validate_order(
    order: PizzaOrder,
    *,
    menu_prices: bool = True,
    full_address: bool = True,
    toppings_once: bool = True,
    new_number: bool = False,
) -> None:
    """Refuse an order that could never be fulfilled, before any effect.

    ``new_number``: the order is being placed now, its number given now (the API, `pizzeria
    order`), so two stricter rules apply. Its number must start with a letter or a digit:
    ``.`` and ``..`` are no path an address can hold (clients resolve them away) and
    ``-rf`` reads as an option on a command line. And each of its text fields must be
    readable (`text.unreadable_problem`): a name of only U+3164 (a Hangul filler) or
    private-use characters shows as nothing. The workflow keeps the older rules, as orders
    were started under them.

    Each item's price must be the menu's (`PRICE_BY_SIZE`): the customer pays what the
    menu says, never what a client claims. ``menu_prices=False`` is the rule orders
    started before it ran under (the workflow replays them so: see `off_menu`). A delivery
    needs a city, a state and a postal code; ``full_address=False`` is the rule before
    that (see `incomplete_address`). A pizza names each topping once; ``toppings_once=False``
    is the rule before that (see `repeated_toppings`).

    Whether the card can be charged is deliberately not decided here: as in the exercise, a
    bad card (the 15-digit one, a failed checksum) is the card gateway's verdict, so it fails
    at ``process_credit_card`` and the saga undoes the inventory update. That is the
    behaviour the exercise teaches. Only a number that is not a card number at all (spaces,
    letters, fewer than 12 or more than 19 digits) is refused here, before any effect.
    """
    for check in _checks(order, menu_prices, full_address, toppings_once, new_number):
        check()


def order_problems(order: PizzaOrder, *, new_number: bool = False) -> list[fields.OrderRejected]:
    """Every field of ``order`` that `validate_order` refuses, each with the first problem
    it finds there, in the order it checks them (its first is the one it raises): what a
    form can show at once. Empty when the order is fine."""
    problems: dict[str, fields.OrderRejected] = {}
    for check in _checks(order, True, True, True, new_number):
        try:
            check()
        except fields.OrderRejected as rejected:
            problems.setdefault(rejected.field, rejected)
            if rejected.field == fields.WHOLE_ORDER:  # no field of it can be read
                break
    return list(problems.values())


def _checks(
    order: PizzaOrder, menu_prices: bool, full_address: bool, toppings_once: bool, new_number: bool
) -> Iterator[fields.Check]:
    """`validate_order`'s checks, one per field (or group), each raising `OrderRejected`.
    Each reads the order only when called, and reads a field only in the shape the
    checks before it let through: `order_problems` goes on past a refused one."""
    yield lambda: fields.validate_shape(order)
    yield lambda: fields.validate_number(order.order_number, new_number)
    yield lambda: fields.validate_customer_id(order.customer.customer_id)
    yield lambda: fields.free_text(order.customer.name, "customer.name")
    yield lambda: fields.free_text(order.customer.email, "customer.email", required=False)
    yield lambda: fields.free_text(order.customer.phone, "customer.phone", required=False)
    yield lambda: fields.free_text(order.credit_card_info.holderName, "credit_card_info.holderName")
    yield lambda: fields.validate_card(order.credit_card_info)
    yield lambda: fields.validate_is_delivery(order.is_delivery)
    for name in fields.ADDRESS_FIELDS:
        yield fields.address_text(order, name)
    yield lambda: fields.validate_delivery_line(order)
    for name in fields.DELIVERY_FIELDS if full_address else ():
        yield fields.delivery_field(order, name)
    yield lambda: _validate_items(order.items, menu_prices=menu_prices, toppings_once=toppings_once)
    yield lambda: validate_settings(order) if order.settings is not None else None
    if new_number:
        yield lambda: fields.validate_readable(order)


def incomplete_address(order: object) -> bool:
    """Whether ``order`` is a delivery whose address lacks a city, a state or a postal code:
    the only orders whose verdict the full-address rule changes (the workflow asks for its
    patch only then). Never raises, whatever the order holds."""
    address = getattr(order, "address", None)
    if getattr(order, "is_delivery", None) is not True or not isinstance(address, Address):
        return False
    parts = [getattr(address, name, None) for name in fields.DELIVERY_FIELDS]
    return any(isinstance(part, str) and not part.strip() for part in parts)


def _validate_items(items: object, *, menu_prices: bool = True, toppings_once: bool = True) -> None:
    if not isinstance(items, list) or not items:
        raise fields.invalid("items", "an order needs at least one item")
    if len(items) > MAX_ITEMS:
        raise fields.invalid("items", f"an order holds at most {MAX_ITEMS} items")
    for index, item in enumerate(items):
        if not isinstance(item, Pizza):
            raise fields.invalid(f"items[{index}]", "each item must be a pizza")
        description = f"items[{index}].description"
        fields.free_text(item.description, description)
        _validate_price(item.price, f"items[{index}].price")
        recipe(item.description, field=description, once=toppings_once)
        if menu_prices:
            _validate_menu_price(item, index)


def menu_price(description: str) -> int | None:
    """What the menu charges for the pizza ``description`` names (its size decides), None
    when the description names no size of the menu.

    The size as `recipe` reads it too: "Largewith ham" is a large pizza to the kitchen
    and the stock, so it costs what a large one costs (it used to name no size here, and
    any price passed). Read the older way first: every description priced before is
    priced the same, so the only orders whose verdict this changes are those it used to
    leave unpriced, for which the workflow's `off_menu` check asks its patch, as for any
    other off-menu order (orders started before keep their path)."""
    if not isinstance(description, str):
        return None
    lower = description.lower()
    match = re.match(r"\s*(small|medium|large)\b", lower) or PIZZA.fullmatch(lower.strip())
    return PRICE_BY_SIZE[match.group(1)] if match else None


def _validate_menu_price(item: Pizza, index: int) -> None:
    """The item's price is the menu's, or the order is refused naming both."""
    price = menu_price(item.description)
    if price is not None and item.price != price:
        raise fields.invalid(
            f"items[{index}].price",
            f"items[{index}] ({item.description[:60]!r}) costs {price} cents on the menu "
            f"(${price / 100:.2f}), not {item.price}",
        )


def off_menu(order: object) -> bool:
    """Whether any item of ``order`` claims a price other than the menu's: the only
    orders whose verdict the menu-price rule changes (the workflow asks for its patch
    only then). Never raises, whatever the order holds."""
    items = getattr(order, "items", None)
    if not isinstance(items, list):
        return False
    for item in items:
        price = getattr(item, "price", None)
        wanted = menu_price(getattr(item, "description", None))  # type: ignore[arg-type]
        if fields.whole(price) and wanted is not None and price != wanted:
            return True
    return False


def _validate_price(price: object, field: str) -> None:
    if price is None:
        raise fields.invalid(field, "item price is missing")
    if not fields.whole(price):
        raise fields.invalid(field, "item price must be whole cents")
    assert isinstance(price, int)
    if price < 0:
        raise fields.OrderRejected(
            INVALID_CHARGE_AMOUNT_ERROR, f"Invalid charge amount: {price}", field=field
        )
    if price == 0 or price > MAX_ITEM_PRICE:
        raise fields.invalid(
            field, f"item price must be between 1 and {MAX_ITEM_PRICE} cents, got {price}"
        )


def validate_settings(order: PizzaOrder) -> None:
    """The optional knobs: a wait the workflow can sleep, attempts a retry policy can hold."""
    settings = order.settings
    assert settings is not None
    wait = settings.prep_seconds
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_PREP:
        raise fields.invalid(
            "settings.prep_seconds", f"settings.prep_seconds must be between 0 and {MAX_PREP}"
        )
    for name in ("compensation_attempts", "step_attempts"):
        attempts = getattr(settings, name)
        if not fields.whole(attempts) or not 1 <= attempts <= MAX_ATTEMPTS:
            raise fields.invalid(
                f"settings.{name}", f"settings.{name} must be between 1 and {MAX_ATTEMPTS}"
            )
