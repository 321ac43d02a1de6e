"""Payload decoding that fails for good on input it cannot read.

By default a payload the worker cannot decode (broken JSON, invalid UTF-8, an unknown
encoding, a JSON object that is not an order) fails the *workflow task*, which Temporal
retries forever: the order hangs "Running". Decoding through this converter raises a
typed, non-retryable ApplicationError instead, so such an order fails at once, before
any effect, and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import DefaultPayloadConverter
from temporalio.exceptions import ApplicationError, FailureError

from pizzeria.models import INVALID_ORDER_ERROR, PizzaOrder

UNDECODABLE_PAYLOAD_ERROR = "UndecodablePayloadError"


class StrictPayloadConverter(DefaultPayloadConverter):
    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
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
