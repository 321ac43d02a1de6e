"""The orders one client may place a minute, counted without a server."""

from __future__ import annotations

import pytest

from pizzeria.api import pace
from pizzeria.api.pace import OrderPace
from pizzeria.api.problems import ApiProblem


def test_a_client_gets_its_orders_a_minute_then_429_until_the_oldest_is_a_minute_old():
    paced = OrderPace(2)
    paced.admit("10.0.0.1", now=100.0)
    paced.admit("10.0.0.1", now=130.0)
    with pytest.raises(ApiProblem) as refused:
        paced.admit("10.0.0.1", now=140.0)
    assert (refused.value.status, refused.value.slug) == (429, "too-many-orders")
    assert refused.value.headers == {"Retry-After": "20"}  # the first is a minute old at 160
    paced.admit("10.0.0.2", now=140.0)  # another client is counted apart
    paced.admit("10.0.0.1", now=160.0)  # the first has left the minute
    with pytest.raises(ApiProblem):
        paced.admit("10.0.0.1", now=165.0)  # the refusal was not counted: 130 and 160


def test_no_limit_admits_everything_and_only_so_many_clients_are_remembered(monkeypatch):
    unlimited = OrderPace(0)
    for second in range(1000):
        unlimited.admit("10.0.0.1", now=float(second))
    monkeypatch.setattr(pace, "MAX_CLIENTS", 3)
    paced = OrderPace(1)
    for n in range(5):
        paced.admit(f"10.0.0.{n}", now=0.0)
    assert list(paced._placed) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    paced.admit("10.0.0.0", now=1.0)  # forgotten, so admitted again
