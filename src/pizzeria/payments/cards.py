"""Card numbers as both sides of the payment wire see them: Stripe's test cards, what each
one answers, and the test PaymentMethod id Stripe gives each.

Shared by the adapter (which sends a test card to real Stripe as its PaymentMethod id) and
the local provider (which answers a test card the way Stripe's test mode does). A full
card number is never kept or written anywhere: only its last four digits, its brand and
a fingerprint (a keyed hash: without its key, a hash of a 16-digit number whose first six
and last four are known is undone by trying the million numbers between) leave this
module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

CARD_LENGTH = 16
INVALID_NUMBER_CODE = "incorrect_number"
INVALID_NUMBER_MESSAGE = "Invalid credit card number"


@dataclass(frozen=True)
class Decline:
    """How a card is declined: Stripe's ``code``, ``decline_code`` and message."""

    code: str
    decline_code: str | None
    message: str


GENERIC_DECLINE = Decline("card_declined", "generic_decline", "Your card was declined.")
INSUFFICIENT_FUNDS = Decline(
    "card_declined", "insufficient_funds", "Your card has insufficient funds."
)
EXPIRED_CARD = Decline("expired_card", "expired_card", "Your card has expired.")
INVALID_NUMBER = Decline(INVALID_NUMBER_CODE, None, INVALID_NUMBER_MESSAGE)


@dataclass(frozen=True)
class KnownCard:
    """One of Stripe's test cards: its test PaymentMethod id and its verdict (None: it
    is accepted)."""

    payment_method: str
    brand: str
    decline: Decline | None = None


#: Stripe's test card numbers and the test PaymentMethod ids that stand for them.
TEST_CARDS: dict[str, KnownCard] = {
    "4242424242424242": KnownCard("pm_card_visa", "visa"),
    "5555555555554444": KnownCard("pm_card_mastercard", "mastercard"),
    "4000000000000002": KnownCard("pm_card_chargeDeclined", "visa", GENERIC_DECLINE),
    "4000000000009995": KnownCard(
        "pm_card_chargeDeclinedInsufficientFunds", "visa", INSUFFICIENT_FUNDS
    ),
    "4000000000000069": KnownCard("pm_card_chargeDeclinedExpiredCard", "visa", EXPIRED_CARD),
}
TEST_PAYMENT_METHODS: dict[str, KnownCard] = {
    card.payment_method: card for card in TEST_CARDS.values()
}
#: The last four digits Stripe shows for each test PaymentMethod id.
TEST_PAYMENT_METHOD_LAST4 = {card.payment_method: n[-4:] for n, card in TEST_CARDS.items()}


def luhn_valid(number: str) -> bool:
    digits = [int(ch) for ch in reversed(number)]
    checksum = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return checksum % 10 == 0


def normalized(number: str) -> str:
    """The number without the spaces people type between groups of digits."""
    return number.replace(" ", "")


def number_valid(number: str) -> bool:
    """Sixteen ASCII digits that pass the Luhn check (the exercise's 15-digit card fails)."""
    return (
        len(number) == CARD_LENGTH and number.isascii() and number.isdigit() and luhn_valid(number)
    )


def brand_of(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    return "unknown"


def fingerprint(number: str, secret: bytes) -> str:
    """Stands for the card in stored objects: the same card, the same fingerprint, under
    the provider's ``secret``, which whoever sees the fingerprint does not have."""
    return hmac.new(secret, b"pizzeria-card\x1f" + number.encode(), hashlib.sha256).hexdigest()[:16]


_DIGIT_RUN = re.compile(r"\d{12,}")


def without_card_numbers(text: str) -> str:
    """``text`` (an id a caller made up, say) with each run of 12 or more digits, which
    may be a card number, shown as its last four: for messages that repeat what was sent."""
    return _DIGIT_RUN.sub(lambda run: f"****{run.group()[-4:]}", text)


def masked(number: str) -> str:
    """The number as logs and errors may show it: the last four digits only."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return f"**** {digits[-4:]}" if len(digits) >= 4 else "****"


def decline_of(number: str) -> Decline | None:
    """What the local provider answers for a (valid) number: a test card's decline, else
    None (accepted)."""
    card = TEST_CARDS.get(number)
    return card.decline if card else None
