"""pizzeria: the pizza-order Saga of the exercise, on Temporal, with a real ledger."""

from pizzeria.saga import Saga, SagaError

__all__ = ["Saga", "SagaError", "__version__"]
__version__ = "0.1.0"
