"""What a chaos run orders, and which faults its workers meet: all from the seed."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pizzeria.menu import INITIAL_STOCK, PRICE_BY_SIZE
from pizzeria.models import Address, CreditCardInfo, Customer, OrderSettings, Pizza, PizzaOrder

# Compensation faults strike at most 3 attempts, below the 10 compensation attempts an
# order has, so every order can undo itself without an operator.
DEFAULT_FAULTS = ",".join(
    [
        "get_distance=fail:1@0.05",
        "update_inventory=fail:2@0.1",
        "update_inventory=out_of_stock@0.03",
        "update_inventory=late:1@0.04",
        "update_inventory=lost:1@0.03",
        "process_credit_card=fail:3@0.2",
        "process_credit_card=decline@0.05",
        "process_credit_card=late:1@0.04",
        "process_credit_card=lost:1@0.03",
        "send_bill=fail:2@0.2",
        "send_bill=refuse@0.03",
        "send_bill=lost:1@0.03",
        "revert_inventory=fail:2@0.3",
        "refund_customer=fail:3@0.3",
    ]
)
# The payment provider's bad days (its faults file, `pizzeria.payments.provider.faults`):
# 5xx answers, answers lost after the work was done, refused connections, answers slower
# than the worker's 3 s timeout; each drawn at random per request, a retry drawing again.
# Listing (the check's reading) is never faulted, and the file is emptied before the check.
#: An answer slower than the worker's timeout: the provider does the work after the worker
#: gave up on it (what a real provider may do too).
SLOWER_THAN_THE_WORKER = "*=slow/4@0.01"
DEFAULT_PROVIDER_FAULTS = ",".join(
    [
        "authorize=error/503@0.05",
        "authorize=lost@0.03",
        "authorize=refuse@0.02",
        "capture=error@0.05",
        "capture=lost@0.03",
        "capture=refuse@0.02",
        "void=error@0.05",
        "void=lost@0.03",
        "refund=error@0.05",
        "refund=lost@0.05",
        "retrieve=error@0.03",
        "search=error@0.05",
        "*=slow/0.5@0.03",
        SLOWER_THAN_THE_WORKER,
    ]
)
GOOD_CARDS = ("4242424242424242", "5555555555554444", "4000056655665556", "2223003122003222")
# The exercise's 15 digits and a bad checksum (the provider: "Invalid credit card number"),
# a generic decline and insufficient funds (Stripe's test cards).
BAD_CARDS = ("424242424242424", "4242424242424241", "4000000000000002", "4000000000009995")
TOPPINGS = (
    "mushrooms",
    "onions",
    "pepperoni",
    "extra cheese",
    "olives",
    "peppers",
    "ham",
    "pineapple",
    "sausage",
    "basil",
)
CUSTOMERS = ("Lisa Anderson", "Zoë Ñúñez", "Marge Simpson", "José Álvarez", "Ned Flanders")
NEAR = Address("741 Evergreen Terrace", "Apartment 221B", "Albuquerque", "NM", "87101")
FAR = Address("12345 Very Long Road Far Beyond The Hills", "Unit 9", "Santa Fe", "NM", "87501")


@dataclass
class ChaosSettings:
    orders: int = 300
    concurrency: int = 20
    workers: int = 2
    worker_kills: int = 3
    server_restarts: int = 1
    rolling_restarts: int = 1
    cancel_rate: float = 0.1
    bad_card_rate: float = 0.1
    seed: int = 0
    faults: str = DEFAULT_FAULTS
    provider_faults: str = DEFAULT_PROVIDER_FAULTS  # "": the provider answers every request
    provider_restarts: int = 1  # times the payment provider is SIGKILLed and started again
    stock: int = INITIAL_STOCK
    timeout: float = 900.0
    data_dir: Path | None = None
    keep_data: bool = False
    fast_path: bool = False  # every order runs its ledger steps as local activities
    ledger: str | None = None  # a file or a postgresql:// URL; None: ledger.db in the data dir


@dataclass
class PlannedOrder:
    order: PizzaOrder
    cancel_after: float | None = None  # seconds after the start
    cancel_by_update: bool = True


def plan_orders(settings: ChaosSettings) -> list[PlannedOrder]:
    """N orders from the seed alone: the same seed gives the same orders."""
    rng = random.Random(settings.seed)
    return [plan_order(rng, settings, number) for number in range(settings.orders)]


def plan_items(rng: random.Random) -> list[Pizza]:
    items = []
    for _ in range(rng.randint(1, 3)):
        size = rng.choice(list(PRICE_BY_SIZE))
        toppings = rng.sample(TOPPINGS, rng.randint(0, 2))
        description = size.capitalize() + (", with " + " and ".join(toppings) if toppings else "")
        items.append(Pizza(description, PRICE_BY_SIZE[size]))  # the menu's price, or refused
    return items


def plan_order(rng: random.Random, settings: ChaosSettings, number: int) -> PlannedOrder:
    items = plan_items(rng)
    bad = rng.random() < settings.bad_card_rate
    card = rng.choice(BAD_CARDS if bad else GOOD_CARDS)
    is_delivery = rng.random() < 0.7
    cancel = rng.random() < settings.cancel_rate
    name = rng.choice(CUSTOMERS)
    order = PizzaOrder(
        order_number=f"CHAOS-{settings.seed}-{number:04d}",
        customer=Customer(8675309 + number, name, "customer@example.com", "555-555-0000"),
        items=items,
        is_delivery=is_delivery,
        address=FAR if rng.random() < 0.03 else NEAR,
        credit_card_info=CreditCardInfo(name, card),
        settings=OrderSettings(
            # An order to cancel waits a little longer, so the cancel can come before its
            # bill as often as after.
            prep_seconds=1.5 if cancel else round(rng.uniform(0, 0.5), 2),
            # Few attempts: a step can fail for good after the charge (a refund to make),
            # and a late step meets its compensation's tombstone.
            step_attempts=rng.choices((1, 3, 10), weights=(10, 20, 70))[0],
            compensation_attempts=10,
            fast_path=settings.fast_path,
        ),
    )
    return PlannedOrder(
        order,
        cancel_after=round(rng.uniform(0.2, 2.5), 2) if cancel else None,
        cancel_by_update=rng.random() < 2 / 3,
    )
