"""What the worker's counters add up, step by step: the interceptor alone, with a meter
that records what it is given."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio import activity

from pizzeria.models import Refund
from pizzeria.temporal.metrics import _CountingActivity


class Meter:
    def __init__(self) -> None:
        self.added: Counter[str] = Counter()

    def create_counter(self, name: str, description: str) -> Any:
        return SimpleNamespace(add=lambda value, labels=None: self.added.update({name: value}))


class Next:
    def __init__(self, result: object) -> None:
        self.result = result

    async def execute_activity(self, input: object) -> object:
        return self.result


@pytest.mark.parametrize(
    ("step", "result", "counted"),
    [
        ("process_credit_card", SimpleNamespace(amount=3500), {"pizzeria_charged_cents": 3500}),
        (
            "refund_customer",
            Refund(amount=3500, applied=True),
            {"pizzeria_refunded_cents": 3500, "pizzeria_compensations": 1},
        ),
        # A billed order no driver took is given its money back: refunded too.
        (
            "refund_undelivered_order",
            Refund(amount=3500, applied=True),
            {"pizzeria_refunded_cents": 3500},
        ),
        ("send_bill", SimpleNamespace(amount=3500), {}),
    ],
)
async def test_money_counters_add_what_each_step_moved(
    monkeypatch: pytest.MonkeyPatch, step: str, result: object, counted: dict[str, int]
) -> None:
    meter = Meter()
    monkeypatch.setattr(activity, "info", lambda: SimpleNamespace(activity_type=step))
    monkeypatch.setattr(activity, "metric_meter", lambda: meter)
    counting = _CountingActivity(Next(result))  # type: ignore[arg-type]
    assert await counting.execute_activity(None) is result  # type: ignore[arg-type]
    assert dict(meter.added) == counted
