"""Placing orders, reading their outcome, and acting on a running one, for every client.

- `pizzeria.client.placing`: start an order (one order number, one charge, unless asked
  again) and wait for its outcome;
- `pizzeria.client.early_answers`: what an order started with its ``order_accepted``
  Update answered early (the card held, or why it was refused);
- `pizzeria.client.outcomes`: how a run ended (its compensations read from its history,
  so it needs no worker), which orders there are;
- `pizzeria.client.acting`: cancel, repair or abandon a running order.

Callers import the names below from `pizzeria.client`.
"""

from pizzeria.client.acting import (
    ANSWER_SECONDS,
    Abandoned,
    OrderDidNotAnswer,
    OrderRefused,
    OrderWaitsForOperator,
    abandon_order,
    cancel_order,
    resolve_by_hand,
    retry_compensations,
    running_order,
    stuck_advice,
)
from pizzeria.client.attention import before_attention
from pizzeria.client.outcomes import (
    WEB_UI,
    OrderOutcome,
    compensations_from_history,
    order_handle,
    outcome_of,
    read_outcome,
    recent_orders,
    web_ui_link,
)
from pizzeria.client.placing import (
    OrderAlreadyCompleted,
    OrderAlreadyRunning,
    order_status_registered,
    place_order,
    start_order,
    static_summary,
    why_not_started,
)
from pizzeria.history.reader import STATUS_NAMES, status_name

__all__ = [
    "ANSWER_SECONDS",
    "STATUS_NAMES",
    "WEB_UI",
    "Abandoned",
    "OrderAlreadyCompleted",
    "OrderAlreadyRunning",
    "OrderDidNotAnswer",
    "OrderOutcome",
    "OrderRefused",
    "OrderWaitsForOperator",
    "abandon_order",
    "before_attention",
    "cancel_order",
    "compensations_from_history",
    "order_handle",
    "order_status_registered",
    "outcome_of",
    "place_order",
    "read_outcome",
    "recent_orders",
    "resolve_by_hand",
    "retry_compensations",
    "running_order",
    "start_order",
    "static_summary",
    "status_name",
    "stuck_advice",
    "web_ui_link",
    "why_not_started",
]
