"""What an order shows of itself: the current details and summaries (the Web UI's story),
the OrderStatus search attribute (``pizzeria orders --status``), the outcome memo
(``pizzeria orders``) and the orders counter.

Each is a piece a benchmark can switch off (tuning.py). Called from inside the workflow
(the sandbox passes this module through): only the workflow's deterministic APIs.
"""

from __future__ import annotations

from temporalio import workflow

from pizzeria import tuning
from pizzeria.models import ORDER_STATUS, STATUS_DELIVERY_FAILURE
from pizzeria.saga import Saga, repair_words

#: The current details and the OrderStatus of each way an order closes; any other outcome
#: (a confirmation's status) is a completed order.
OUTCOME_DETAILS = {"rejected": "Rejected", "failed": "Failed", "cancelled": "Cancelled"}
COMPLETED_DETAILS = "Completed"
OUTCOME_STATUS = {
    "rejected": "REJECTED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
    STATUS_DELIVERY_FAILURE: "DELIVERY_FAILURE",
}
COMPLETED_STATUS = "COMPLETED"
NEEDS_ATTENTION_STATUS = "NEEDS_ATTENTION"
COMPENSATING_STATUS = "COMPENSATING"


def said(summary: str) -> str | None:
    """A summary for the Web UI, unless a benchmark switched summaries off."""
    return summary if tuning.is_on("summaries") else None


def show_details(details: str) -> None:
    """The order's current details (``pizzeria status``, the Web UI)."""
    if tuning.is_on("summaries"):
        workflow.set_current_details(details)


def show_status(status: str) -> None:
    """Keep the OrderStatus search attribute current, when the order carries it."""
    current = workflow.info().typed_search_attributes.get(ORDER_STATUS)
    if tuning.is_on("visibility") and current is not None and current != status:
        workflow.upsert_search_attributes([ORDER_STATUS.value_set(status)])


def count_closed(status: str) -> None:
    """One more order closed with ``status``, for our Prometheus counters."""
    if tuning.is_on("metrics"):
        workflow.metric_meter().create_counter("pizzeria_orders", "Orders closed, by outcome").add(
            1, {"outcome": status.lower()}
        )


#: The memo's compensation of an order that undid nothing.
NOTHING_UNDONE = "none"


def compensation_said(saga: Saga) -> str:
    """How the order's saga ended, as its outcome memo says it."""
    if saga.repaired_by:
        return repair_words(saga.repaired_by)  # the note is in the order's failure
    return "compensated" if saga.compensating else NOTHING_UNDONE


def plain_completion(saga: Saga, status: str) -> bool:
    """Whether the order completed with nothing undone or repaired: the closed run's own
    status says all its memo would (no compensation, the order done)."""
    return status == COMPLETED_STATUS and compensation_said(saga) == NOTHING_UNDONE


def write_memo(saga: Saga, outcome: str) -> None:
    """The closed order's outcome and how its saga ended, in its memo."""
    workflow.upsert_memo({"compensation": compensation_said(saga), "outcome": outcome})
