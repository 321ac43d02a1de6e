"""How an order's money reads on the customer's card statement: a hold, captured or
released, and what went back after the bill. One wording for the CLI and the API."""

from __future__ import annotations

from typing import Any

from pizzeria.models import dollars

CARD_SHOWS = {
    "held": "hold {held}, not captured yet",
    "captured": "hold {held}, captured {billed}",
    "released": "hold {held}, released: nothing taken",
    "expired": "hold {held} expired: nothing taken",
    "refunded": "hold {held}, captured {billed}, refunded {back}",
    "": "nothing held",
}


def money_line(book: dict[str, Any]) -> str:
    """Where one order's money is, as its card statement shows it (a ledger row's JSON):
    a hold, captured or released, and what went back after the bill, by staff too."""
    shown = CARD_SHOWS.get(book.get("money", ""), "{held} ({money})")
    line = shown.format(
        held=dollars(book["charged"]),
        billed=dollars(book["billed"]),
        back=dollars(book.get("refunded_after_bill") or book["refunded"]),
        money=book.get("money", ""),
    )
    staff = book.get("refunded_by_staff") or 0
    return line + (f"; {dollars(staff)} refunded by staff" if staff else "")
