"""Dataclasses in payloads, converted faster than the SDK does, to the same bytes and values:
decoded with their type hints read once per class (`pizzeria.temporal.type_hints`: one
lookup per class, no class kept alive, nothing cached that failed), and encoded by the
worker's converter from their fields, without a deep copy (`DataclassFieldsEncoder`).
"""

from __future__ import annotations

import gc
import typing
import weakref
from dataclasses import dataclass, make_dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import temporalio.converter._payload_converter as sdk_converter
from temporalio.converter import DataConverter

from pizzeria.models import (
    CardCharge,
    CreditCardInfo,
    Pizza,
    PizzaOrder,
    StockRequest,
)
from pizzeria.samples import sample_order
from pizzeria.temporal import type_hints
from pizzeria.temporal.converter import StrictPayloadConverter

CONVERTER = DataConverter.default.payload_converter


@dataclass
class Line:
    pizza: Pizza
    count: int


@dataclass
class Basket:
    lines: list[Line]
    note: str | None = None


@dataclass
class Board:
    specials: dict[str, Pizza]
    sizes: tuple[str, ...]
    updated: datetime


@dataclass
class Later:
    topping: Topping  # type: ignore[name-defined]  # noqa: F821  (defined by the test)


def values() -> list[Any]:
    order = sample_order("TH-1")
    with_settings = sample_order("TH-2", prep_seconds=0, fast_path=True)
    card = CreditCardInfo(holderName="Ada", payment_method="pm_card_visa")
    return [
        order,
        with_settings,
        StockRequest(order_ref="r", order_number="TH-1", items=order.items),
        CardCharge(order_ref="r", order_number="TH-1", amount=3500, credit_card=card),
    ]


def decoded(value: Any) -> Any:
    return CONVERTER.from_payloads(CONVERTER.to_payloads([value]), [type(value)])[0]


@pytest.mark.parametrize(
    "value",
    [
        *values(),
        Basket([Line(Pizza("Medium Hawaiian", 1200), 2)]),
        Board(
            specials={"monday": Pizza("Large Margherita", 1500)},
            sizes=("small", "large"),
            updated=datetime(2026, 12, 4, 19, 45, tzinfo=UTC),
        ),
    ],
)
def test_the_workers_converter_encodes_a_dataclass_to_the_sdks_bytes(value: Any) -> None:
    ours = StrictPayloadConverter().to_payloads([value])
    assert ours == CONVERTER.to_payloads([value])
    assert StrictPayloadConverter().from_payloads(ours, [type(value)]) == [value]


@pytest.mark.parametrize("value", values(), ids=lambda v: type(v).__name__)
def test_a_dataclass_decodes_to_what_the_sdks_own_lookups_give(
    value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert type_hints.install()
    cached = decoded(value)
    with monkeypatch.context() as sdk_alone:
        sdk_alone.setattr(sdk_converter, "get_type_hints", typing.get_type_hints)
        by_the_sdk = decoded(value)
    assert cached == by_the_sdk == value
    assert type(cached) is type(value)


def test_each_class_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[type] = []

    def counting(obj: Any, *args: Any) -> dict[str, Any]:
        asked.append(obj)
        return typing.get_type_hints(obj, *args)

    monkeypatch.setattr(type_hints, "_TYPING_HINTS", counting)
    assert type_hints.install()
    # Classes no other test has decoded (made here, with their types, not strings).
    line = make_dataclass("OrderLine", [("pizza", Pizza), ("count", int)])
    basket = make_dataclass("OrderBasket", [("lines", list[line]), ("note", str | None)])  # type: ignore[valid-type]
    value = basket(lines=[line(Pizza("Large Margherita", 1500), n) for n in (1, 2, 3)], note=None)
    for _ in range(5):
        assert decoded(value) == value
    # Pizza may have been looked up (and kept) before this test: at most once, then.
    assert asked.count(basket) == 1 and asked.count(line) == 1 and asked.count(Pizza) <= 1


def test_a_caller_changing_its_hints_changes_nothing_for_the_next() -> None:
    first = type_hints.get_type_hints(PizzaOrder)
    first["items"] = int
    assert type_hints.get_type_hints(PizzaOrder)["items"] == list[Pizza]


def test_a_class_made_for_one_run_is_not_kept_alive() -> None:
    def a_class() -> type:
        @dataclass
        class Once:
            size: int

        return Once

    cls = a_class()
    assert type_hints.get_type_hints(cls) == {"size": int}
    gone = weakref.ref(cls)
    del cls
    gc.collect()
    assert gone() is None


def test_a_hint_that_does_not_resolve_fails_each_time_until_it_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(2):
        with pytest.raises(NameError):
            type_hints.get_type_hints(Later)
    monkeypatch.setitem(globals(), "Topping", str)
    assert type_hints.get_type_hints(Later) == {"topping": str}


def test_other_calls_go_to_typing_as_they_are() -> None:
    def price(size: str, count: int = 1) -> int:
        return count

    assert type_hints.get_type_hints(price) == {"size": str, "count": int, "return": int}
    extras = type_hints.get_type_hints(PizzaOrder, include_extras=True)
    assert extras == typing.get_type_hints(PizzaOrder, include_extras=True)


def test_an_sdk_that_looks_hints_up_another_way_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def its_own(obj: Any) -> dict[str, Any]:
        return {}

    monkeypatch.setattr(sdk_converter, "get_type_hints", its_own)
    assert not type_hints.install()
    assert sdk_converter.get_type_hints is its_own  # type: ignore[attr-defined]
