"""What the OpenAPI document says of the bodies and headers beyond their types: the rules
the server enforces (menu.py's, text.py's, the routes' own), so that a request the
document calls valid is not refused with a 422.

The server's checks stay where they are (menu.validate_order, the routes): this module
only describes them. Where a rule cannot be written in JSON Schema exactly, the document
says less than the server takes, never more: free text is shown as the characters every
field takes (`_SEEN`: the server also takes other scripts, combining marks and emoji, as
docs/security.md says), a pizza as GET /menu writes it, a refund's amount in whole dollars
when it is a JSON number.
"""

from __future__ import annotations

from typing import Any

from pizzeria import menu
from pizzeria.models import IDEMPOTENCY_KEY_SHAPE

#: Characters every text field takes, whatever the rule: letters, digits, punctuation and
#: symbols a reader sees (ASCII, Latin, Cyrillic, the common CJK ideographs), none of them
#: blank-looking, a control or a format character (text.py's rules). Written as plain
#: ranges, which every regular-expression engine reads alike.
_SEEN = r"[!-~\u00A1-\u00AC\u00AE-\u024F\u0400-\u0482\u048A-\u04FF\u4E00-\u9FFF]"
_SEEN_OR_SPACE = r"[ !-~\u00A1-\u00AC\u00AE-\u024F\u0400-\u0482\u048A-\u04FF\u4E00-\u9FFF]"
#: Text that may be blank: a cancel reason, a repair note, customer.email, address.line2.
FREE_TEXT = rf"^{_SEEN_OR_SPACE}*$"
#: Text that must say something: customer.name, a refund's reason, a delivery's street.
SAID = rf"^ *{_SEEN}{_SEEN_OR_SPACE}*$"
KEY = f"^{IDEMPOTENCY_KEY_SHAPE.pattern}$"
#: Dollars: at most 7 ASCII digits, then at most two decimals (refunds.API_DOLLARS), not zero.
DOLLARS = r"^[0-9]{1,7}(\.[0-9]{1,2})?$"
ZERO = r"^0+(\.0+)?$"

#: What every spelling of an ingredient holds (menu.TOPPINGS: "mushroom" and "mushrooms",
#: "cheese" and "extra cheese"); "pepperoni" and "peppers" are two.
_INGREDIENT_SPELLINGS = (
    "basil", "cheese", "ham", "mushroom", "olives", "onion", "pepperoni", "peppers",
    "pineapple", "sausage",
)  # fmt: skip
#: Each topping once (menu.recipe's once=True): no ingredient named twice, in any spelling.
_EACH_ONCE = "(?!.*(" + "|".join(f"{name}.*{name}" for name in _INGREDIENT_SPELLINGS) + "))"


def describe(document: dict[str, Any]) -> None:
    """The rules written into FastAPI's ``document``, in place."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _no_null(parameter)
    refund = document["paths"]["/orders/{order_number}/refunds"]["post"]
    for parameter in refund["parameters"]:
        if parameter["name"] == "Idempotency-Key":  # the route refuses a request without
            parameter["required"] = True
            parameter["schema"] = {**parameter["schema"], "type": "string", "pattern": KEY}
    schemas = document["components"]["schemas"]
    _order(schemas)
    _acting(schemas)


def _no_null(parameter: dict[str, Any]) -> None:
    """A header or query parameter is a string or absent, never JSON null: FastAPI shows
    an optional one as ``anyOf [..., null]``, and a client would send the text ``null``."""
    schema = parameter.get("schema", {})
    kept = [part for part in schema.get("anyOf", []) if part.get("type") != "null"]
    if "anyOf" in schema and len(kept) == 1:
        rest = {name: value for name, value in schema.items() if name != "anyOf"}
        parameter["schema"] = {**kept[0], **rest}


#: What a free-text field's description adds: its pattern is narrower than the server.
WIDER = (
    " (The pattern shows the characters every text field takes; the server also takes "
    "other scripts, combining marks and emoji: docs/security.md.)"
)


def _text(schema: dict[str, Any], pattern: str) -> None:
    schema.pop("anyOf", None)
    schema.update({"type": "string", "pattern": pattern})
    schema["description"] = (schema.get("description", "").rstrip() + WIDER).strip()


def _order(schemas: dict[str, Any]) -> None:
    customer = schemas["CustomerBody"]["properties"]
    _text(customer["name"], SAID)
    for name in ("email", "phone"):
        _text(customer[name], FREE_TEXT)
    for name in schemas["AddressBody"]["properties"]:
        _text(schemas["AddressBody"]["properties"][name], FREE_TEXT)
    # A number staff choose starts with a letter or a digit (order_fields.validate_number).
    # Sent, it is a string (null is refused as no number at all).
    number = schemas["OrderBody"]["properties"]["order_number"]
    number.pop("anyOf")
    number.pop("default", None)
    number.update({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"})
    card = schemas["CardBody"]
    _text(card["properties"]["holderName"], SAID)
    # A card number, or instead a token: exactly one (order_fields.validate_card).
    card["properties"]["payment_method"] = {
        key: value for key, value in card["properties"]["payment_method"].items() if key != "anyOf"
    } | {"type": "string"}
    card["oneOf"] = [
        {
            "required": ["number"],
            "properties": {"number": {"pattern": "^[0-9]{12,19}$"}},
            "not": {"required": ["payment_method"]},
        },
        {"required": ["payment_method"], "properties": {"number": {"const": ""}}},
    ]
    pizza = schemas["PizzaBody"]
    pizza["properties"]["description"]["pattern"] = (
        "^" + _EACH_ONCE + pizza["properties"]["description"]["pattern"].removeprefix("^")
    )
    # The price is the menu's for the pizza's size (menu.validate_order's menu prices).
    pizza["oneOf"] = [
        {
            "properties": {
                "description": {"pattern": f"^{size.title()}"},
                "price": {"const": price},
            }
        }
        for size, price in menu.PRICE_BY_SIZE.items()
    ]
    # A delivery needs its street, city, state and postal code (each named when missing).
    needed = ["line1", "city", "state", "postal_code"]
    schemas["OrderBody"]["if"] = {
        "properties": {"is_delivery": {"const": True}},
        "required": ["is_delivery"],
    }
    schemas["OrderBody"]["then"] = {
        "required": ["address"],
        "properties": {
            "address": {
                "type": "object",
                "required": needed,
                "properties": {name: {"pattern": SAID} for name in needed},
            }
        },
    }


def _acting(schemas: dict[str, Any]) -> None:
    schemas["CancelBody"]["properties"]["reason"]["pattern"] = FREE_TEXT
    repair = schemas["RepairBody"]
    repair["properties"]["action"]["enum"] = ["retry", "resolve"]
    repair["properties"]["note"]["pattern"] = FREE_TEXT
    repair["oneOf"] = [
        {"properties": {"action": {"const": "retry"}}},
        {
            "properties": {"action": {"const": "resolve"}, "note": {"pattern": SAID}},
            "required": ["note"],
        },
    ]
    refund = schemas["RefundBody"]
    properties = refund["properties"]
    properties["amount_cents"] = {
        "type": "integer",
        "minimum": 1,
        "description": properties["amount_cents"]["description"],
    }
    properties["amount"] = {
        "anyOf": [
            {"type": "string", "pattern": DOLLARS, "not": {"pattern": ZERO}},
            {"type": "integer", "minimum": 1, "maximum": 9_999_999},
        ],
        "description": properties["amount"]["description"]
        + " (a JSON number is read as dollars too)",
    }
    properties["reason"]["pattern"] = SAID
    # The run's whole id, in either case (models.run_id_of).
    properties["run_id"] = {
        "type": "string",
        "pattern": "^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$",
        "description": properties["run_id"]["description"],
    }
    refund["oneOf"] = [{"required": ["amount_cents"]}, {"required": ["amount"]}]
