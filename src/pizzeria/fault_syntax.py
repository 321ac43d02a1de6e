"""The syntax the two fault lists share: the worker's (`pizzeria.temporal.faults`,
``STEP=MODE[:N][@RATE]``) and the payment provider's (`pizzeria.payments.provider.faults`,
``OPERATION=MODE[/ARG][:N][@RATE]``).

A list is entries separated by commas, or a JSON list of strings; an entry is
``NAME=HEAD`` then ``:N`` (a positive count) and ``@RATE`` (a fraction in (0, 1]). Each
parser keeps its own names, modes and error class (passed in as ``error``); these read the
parts they share. Only the standard library: the provider's process imports it too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EntryParts:
    """One entry cut at its marks; ``None`` where a mark is missing."""

    name: str  # before "=", stripped
    named: bool  # whether there was an "="
    head: str  # between "=" and ":" or "@": the mode (and the provider's /ARG)
    count: str | None  # after ":"
    rate: str | None  # after "@"


def entries_of(text: str, error: type[ValueError], json_items: str) -> list[str]:
    """The entries of a faults text, each stripped: comma-separated (blank ones skipped),
    or a JSON list of strings (``json_items`` says what its strings are in the error)."""
    text = text.strip()
    if not text:
        return []
    if not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as decode_error:
        raise error(f"the faults file is not valid JSON: {decode_error}") from None
    if not isinstance(loaded, list) or not all(isinstance(e, str) for e in loaded):
        raise error(f"the faults file must hold a JSON list of {json_items}")
    return [entry.strip() for entry in loaded]


def split_entry(entry: str) -> EntryParts:
    """``NAME=HEAD[:N][@RATE]`` cut into its parts, nothing checked yet."""
    name, sep, rule = entry.partition("=")
    head, at, rate = rule.partition("@")
    head, colon, count = head.partition(":")
    return EntryParts(name.strip(), bool(sep), head, count if colon else None, rate if at else None)


def count_of(entry: str, count: str | None, error: type[ValueError]) -> int | None:
    """``:N``, a positive whole number; None without it."""
    if count is None:
        return None
    if not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise error(f"bad fault {entry!r}: N must be a positive number")
    return int(count)


def number(text: str) -> float:
    """The text as a number; nan when it is none (non-ASCII digits included)."""
    try:
        return float(text) if text.isascii() else math.nan
    except ValueError:
        return math.nan


def rate_of(entry: str, rate: str | None, error: type[ValueError]) -> float | None:
    """``@RATE``, a fraction in (0, 1]; None without it."""
    if rate is None:
        return None
    fraction = number(rate)
    if not 0 < fraction <= 1:  # also refuses nan
        raise error(f"bad fault {entry!r}: RATE must be a fraction in (0, 1]")
    return fraction


def hashed_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by its parts: whether a rated fault strikes.

    A hash rather than ``random``: several processes, restarted at any moment, must agree
    on it, and a rerun with the same seed meets the same faults.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
