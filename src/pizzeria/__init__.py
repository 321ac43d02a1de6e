"""pizzeria: the pizza-order Saga of the exercise, on Temporal, with a real ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pizzeria.saga import Saga, SagaError

__all__ = ["Saga", "SagaError", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy on purpose: the SDK's full sandbox (a replay, a worker built without
    # `order_sandbox`) runs this file again for every workflow it starts, and importing
    # the saga here made every such order pay for it (BENCHMARKS.md).
    if name in ("Saga", "SagaError"):
        from pizzeria import saga

        return getattr(saga, name)
    raise AttributeError(f"module 'pizzeria' has no attribute {name!r}")
