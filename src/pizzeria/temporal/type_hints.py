"""A dataclass's type hints, read once per class instead of once per value decoded.

The SDK's JSON converter turns a decoded JSON object into a dataclass field by field, and
asks `typing.get_type_hints` for the class's field types every time, for every nested
dataclass too. With postponed annotations (``from __future__ import annotations``, as in
every module here) that evaluates each field's annotation string again: of the 215 us the
SDK takes to decode an order (`PizzaOrder`, with its customer, address, card and three
pizzas), 135 us are those lookups. A class's hints do not change once they resolve, so
`install` has the converter's module look them up through a cache keyed by the class.

The cache holds classes weakly: a class made afresh for each workflow run (a module the
sandbox imports again for every run) is not kept alive by it. A lookup that fails (a
forward reference that does not resolve) is not cached and fails again the same way.
Any other call (a function, extra arguments) goes to `typing.get_type_hints` as it is.
"""

from __future__ import annotations

import threading
import typing
import weakref
from typing import Any

import temporalio.converter._payload_converter as sdk_converter

_TYPING_HINTS = typing.get_type_hints
_cache: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # the worker decodes on its activity threads as well as its loop


def get_type_hints(
    obj: Any,
    globalns: dict[str, Any] | None = None,
    localns: dict[str, Any] | None = None,
    include_extras: bool = False,
) -> dict[str, Any]:
    """`typing.get_type_hints`, remembered for a class asked about with no other argument.

    Each caller gets its own dict: one that changes its copy changes nothing here.
    """
    if not isinstance(obj, type) or globalns is not None or localns is not None or include_extras:
        return _TYPING_HINTS(obj, globalns, localns, include_extras)
    with _lock:
        hints = _cache.get(obj)
    if hints is None:
        hints = _TYPING_HINTS(obj)
        with _lock:
            _cache[obj] = hints
    return dict(hints)


def sdk_matches() -> bool:
    """Whether the converter's module still looks hints up with `typing.get_type_hints`
    (temporalio 1.35, pinned in pyproject.toml), or with this module's cache already."""
    return getattr(sdk_converter, "get_type_hints", None) in (_TYPING_HINTS, get_type_hints)


def install() -> bool:
    """Use the cache for the SDK's conversions in this process; False if the SDK changed."""
    if not sdk_matches():
        return False
    sdk_converter.get_type_hints = get_type_hints  # type: ignore[assignment,attr-defined]
    return True
