"""What the API opens when first asked for, not when it starts: it starts (and answers
what needs none of it) while the ledger or the key table cannot be opened yet."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


Opened = TypeVar("Opened", bound=Closable)


class OpenedWhenAsked(Generic[Opened]):
    """``opener``'s result, made by the first `get` (one thread at a time) and kept."""

    def __init__(self, opener: Callable[[], Opened]) -> None:
        self._opener = opener
        self._opened: Opened | None = None
        self._lock = threading.Lock()

    def get(self) -> Opened:
        with self._lock:
            if self._opened is None:
                self._opened = self._opener()
            return self._opened

    def close(self) -> None:
        """Close what was opened, if anything; a later `get` opens it again."""
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None
