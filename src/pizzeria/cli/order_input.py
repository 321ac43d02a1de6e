"""What `pizzeria order` is told to place: its flags read into an order (``--item``,
``--card -``), refused before connecting as the workflow would refuse it, the refusal
naming the flag the user typed."""

from __future__ import annotations

import getpass
import re
import sys

from pizzeria import menu, order_fields
from pizzeria.cli.common import UserError
from pizzeria.models import OrderSettings, Pizza, PizzaOrder
from pizzeria.samples import sample_order

#: The order's fields that `order` fills from a flag: menu.py's refusals name the field,
#: the user is shown the flag they typed.
FLAG_OF_FIELD = {
    "order_number": "--order-number",
    "credit_card_info.number": "--card",
    "settings.prep_seconds": "--prep-seconds",
    "settings.step_attempts": "--step-attempts",
    "settings.compensation_attempts": "--compensation-attempts",
}


#: The most of a typed value an error quotes (an --item of 100 KB is not printed back).
QUOTED_CHARS = 60


def quoted(text: str) -> str:
    """``text`` as an error quotes it: its start only, when long."""
    return repr(text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 3] + "...")


def parse_item(text: str) -> Pizza:
    """``DESCRIPTION`` or ``DESCRIPTION=CENTS``; the price defaults by size."""
    description, sep, price_text = text.rpartition("=") if "=" in text else (text, "", "")
    description = description.strip()
    if not description:
        raise UserError("--item needs a description such as 'Large, with mushrooms'")
    if sep:
        said = price_text.strip()
        if not (said.isascii() and said.isdigit()):
            if not said:
                raise UserError(f"--item {quoted(text)}: the price is missing after '='")
            raise UserError(f"--item price must be a positive number of cents, got {quoted(said)}")
        return Pizza(description=description, price=int(price_text))
    size = description.split(",")[0].split()[0].lower()
    if size not in menu.PRICE_BY_SIZE:
        raise UserError(f"--item {quoted(description)}: start with Small, Medium or Large")
    return Pizza(description=description, price=menu.PRICE_BY_SIZE[size])


def build_order(
    order_number: str,
    card: str,
    pickup: bool,
    items: tuple[str, ...],
    settings: OrderSettings,
) -> PizzaOrder:
    """The exercise's order with what the flags changed, refused here as the workflow would
    refuse it: a user deserves the answer before connecting."""
    if settings.prep_seconds < 0:
        raise UserError("--prep-seconds cannot be negative")
    pizzas = [parse_item(item) for item in items] if items else None
    placed = sample_order(order_number, card=card, is_delivery=not pickup, items=pizzas)
    placed.settings = settings
    try:
        menu.validate_order(placed, new_number=True)
    except order_fields.OrderRejected as rejected:
        raise UserError(said_with_flags(rejected, typed_items=bool(items))) from None
    return placed


def said_with_flags(rejected: order_fields.OrderRejected, *, typed_items: bool) -> str:
    """The refusal, naming the flag the user typed instead of the order's field:
    ``--prep-seconds must be between 0 and 3600.0``, ``--item #2: Unknown topping ...``."""
    field, message = rejected.field, str(rejected)
    flag = FLAG_OF_FIELD.get(field)
    item = re.fullmatch(r"(items\[(\d+)\])(?:\.\w+)?", field) if typed_items else None
    if item:  # the user typed --item, not items[0]: say which of them
        flag = f"--item #{int(item.group(2)) + 1}"
    if flag is None:
        return message
    # The message names the field, or the item ("items[1] ('Large') costs ..."): the flag
    # takes its place.
    for named in (field, item.group(1) if item else None):
        if named and message.startswith(named + " "):
            return f"{flag} {message[len(named) + 1 :]}"
    return f"{flag}: {message}"


def card_typed(card: str) -> str:
    """``--card``'s number; ``-`` reads it from standard input (at a terminal it is asked,
    without echo, as a password is)."""
    if card != "-":
        return card
    typed = getpass.getpass("Card number: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not typed.strip():
        raise UserError("--card -: no card number on the first line of standard input")
    return typed.strip()
