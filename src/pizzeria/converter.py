"""Payload decoding that fails for good on input it cannot read.

By default a payload the worker cannot decode (broken JSON, invalid UTF-8, an unknown
encoding, a JSON object that is not an order) fails the *workflow task*, which Temporal
retries forever: the order hangs "Running". Decoding through this converter raises a
typed, non-retryable ApplicationError instead, so such an order fails at once, before
any effect, and says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import DefaultPayloadConverter
from temporalio.exceptions import ApplicationError, FailureError

from pizzeria.models import INVALID_ORDER_ERROR, PizzaOrder

UNDECODABLE_PAYLOAD_ERROR = "UndecodablePayloadError"


def _whole_number_problem(order: Any) -> str | None:
    """JSON decoding turns 1500.5 or true into an int field silently: refuse them instead."""
    if not isinstance(order, dict):
        return None

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    customer = order.get("customer")
    if isinstance(customer, dict) and not whole(customer.get("customer_id")):
        return "customer.customer_id must be a whole number"
    items = order.get("items")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and not whole(item.get("price")):
            return "item price must be whole cents"
    return None


class StrictPayloadConverter(DefaultPayloadConverter):
    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        if type_hints and PizzaOrder in type_hints:
            self._check_order_numbers(payloads, type_hints)
        try:
            return super().from_payloads(payloads, type_hints)
        except FailureError:
            raise
        except Exception as error:
            is_order = bool(type_hints) and PizzaOrder in (type_hints or [])
            what = "the order" if is_order else "a payload"
            reason = str(error.__cause__ or error)[:300]
            raise ApplicationError(
                f"Cannot read {what}: {reason}",
                type=INVALID_ORDER_ERROR if is_order else UNDECODABLE_PAYLOAD_ERROR,
                non_retryable=True,
            ) from None

    @staticmethod
    def _check_order_numbers(payloads: Sequence[Payload], type_hints: list[type]) -> None:
        for payload, hint in zip(payloads, type_hints, strict=False):
            if hint is not PizzaOrder or payload.metadata.get("encoding") != b"json/plain":
                continue
            try:
                problem = _whole_number_problem(json.loads(payload.data))
            except ValueError:
                continue  # not JSON: the decoder says so below
            if problem:
                raise ApplicationError(
                    f"Cannot read the order: {problem}",
                    type=INVALID_ORDER_ERROR,
                    non_retryable=True,
                )
