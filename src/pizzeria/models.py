"""The order's data, exactly as the exercise's clients send and receive it.

The wire contract (field names, types, the workflow and task queue names) is fixed by the
"Rollback with the Saga Pattern" exercise. Fields we add are optional, with defaults, so a
client that knows only the exercise's JSON keeps working.
"""

# No `from __future__ import annotations` here: the SDK reads a dataclass's field types
# (typing.get_type_hints) on every payload it decodes, and string annotations would be
# compiled and evaluated again each time.
import re
from dataclasses import dataclass, field

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "pizza-tasks"
WORKFLOW_TYPE = "PizzaOrderWorkflow"
WORKFLOW_ID_PREFIX = "pizza-workflow-order-"

# Activity type names are part of the contract: the Web UI of every exercise client shows them.
STEP_GET_DISTANCE = "get_distance"
STEP_UPDATE_INVENTORY = "update_inventory"
STEP_PROCESS_CREDIT_CARD = "process_credit_card"
STEP_SEND_BILL = "send_bill"
STEP_NOTIFY_DELIVERY_DRIVER = "notify_delivery_driver"
#: Past the pivot, a billed order no driver took is refunded in full (not a compensation:
#: the order goes forward, and the refund is a step of it).
STEP_REFUND_UNDELIVERED = "refund_undelivered_order"
COMPENSATE_REVERT_INVENTORY = "revert_inventory"
COMPENSATE_REFUND_CUSTOMER = "refund_customer"
COMPENSATIONS = (COMPENSATE_REVERT_INVENTORY, COMPENSATE_REFUND_CUSTOMER)
#: Not a step: what a cancel on the fast path asks the ledger first (workflows.py).
ASK_BILL_RECORDED = "bill_recorded"
#: The steps in the order they run; the single spelling of each name for the workflow,
#: activities, ledger rows, fault settings and reports.
STEPS = (
    STEP_GET_DISTANCE,
    STEP_UPDATE_INVENTORY,
    STEP_PROCESS_CREDIT_CARD,
    STEP_SEND_BILL,
    STEP_NOTIFY_DELIVERY_DRIVER,
    STEP_REFUND_UNDELIVERED,
)
#: Each compensatable step and the compensation that undoes it.
COMPENSATION_OF = {
    STEP_UPDATE_INVENTORY: COMPENSATE_REVERT_INVENTORY,
    STEP_PROCESS_CREDIT_CARD: COMPENSATE_REFUND_CUSTOMER,
}

# Error types (ApplicationError.type) a client can rely on.
CREDIT_CARD_PROCESSING_ERROR = "CreditCardProcessingError"
INVALID_CHARGE_AMOUNT_ERROR = "InvalidChargeAmountError"
OUTSIDE_SERVICE_AREA_ERROR = "OutsideServiceAreaError"
INVALID_ORDER_ERROR = "InvalidOrderError"
UNKNOWN_TOPPING_ERROR = "UnknownToppingError"
OUT_OF_STOCK_ERROR = "OutOfStockError"
LATE_STEP_REFUSED_ERROR = "LateStepRefusedError"
ORDER_CANCELLED_ERROR = "OrderCancelledError"

STATUS_SUCCESS = "SUCCESS"
STATUS_DELIVERY_FAILURE = "DELIVERY FAILURE"

# Where an order's money is, as the ledger records it beside each payment id (the payment
# provider's own words: pizzeria.payments.port.MoneyState).
MONEY_HELD = "held"  # authorized: reserved on the card, not taken
MONEY_CAPTURED = "captured"  # taken by the bill
MONEY_RELEASED = "released"  # the hold was voided: nothing taken
MONEY_EXPIRED = "expired"  # the hold ran out before it was captured: nothing taken
MONEY_REFUNDED = "refunded"  # taken, then given back in full

#: A key that makes a request safe to retry (a refund's, a delivery's, the API's
#: Idempotency-Key header): 1 to 255 visible ASCII characters, no space.
IDEMPOTENCY_KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")
IDEMPOTENCY_KEY_SAID = "1 to 255 visible ASCII characters, no space"

MAX_DELIVERY_KILOMETERS = 25

#: Custom search attribute (Keyword) the workflow keeps up to date, for `pizzeria orders`.
#: Tracked only when the order was started with it (our own commands do so when the server
#: has it registered), so orders never fail on a server without it.
ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
#: How to register it in a namespace of a Temporal server that lacks it.
REGISTER_ORDER_STATUS = (
    f"temporal operator search-attribute create --name {ORDER_STATUS.name} --type Keyword"
)
ORDER_STATUSES = (
    "IN_PROGRESS",
    "COMPENSATING",
    "NEEDS_ATTENTION",
    "COMPLETED",
    "DELIVERY_FAILURE",
    "FAILED",
    "CANCELLED",
    "REJECTED",
)


def workflow_id_for(order_number: str) -> str:
    """The workflow id of an order: one running order per order number."""
    return f"{WORKFLOW_ID_PREFIX}{order_number}"


def order_ref(workflow_id: str, run_id: str) -> str:
    """The reference of one run of one order: the prefix of every ledger key it writes.

    The run id is in it so that a later run of the same order number never shares a key
    (nor undoes a row) with an earlier one.
    """
    return f"{workflow_id}/{run_id}"


def split_order_ref(ref: str) -> tuple[str, str]:
    """``(workflow id, run id)`` of an order reference (the run id never holds a slash)."""
    workflow_id, _, run_id = ref.rpartition("/")
    return workflow_id, run_id


def order_number_of(workflow_id: str) -> str:
    """The order number a workflow id was made from (the id itself when not ours)."""
    return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


RUN_ID_SAID = "give the run's whole id, a UUID, as `pizzeria ledger --json` shows it"
RUN_ID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run_id_given(text: str) -> str:
    """A run id as a user gives it: a UUID with its dashes, as Temporal makes them, in
    lower case; else a ValueError saying what to give (`RUN_ID_SAID`)."""
    if not RUN_ID_SHAPE.fullmatch(text.lower()):
        raise ValueError(RUN_ID_SAID)
    return text.lower()


def short_run(run_id: str) -> str:
    """A run id as a column shows it: its last 8 hex digits. Temporal's run ids are UUIDv7,
    which begin with their time: two runs of the same minute share their first digits."""
    return run_id.replace("-", "")[-8:]


def dollars(cents: int | None) -> str:
    """Money as people read it: ``$1,234.50``; ``-`` when there is no amount."""
    if cents is None:
        return "-"
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)  # whole numbers: a float is exact to 2**53 alone
    return f"{sign}${whole:,}.{part:02d}"


def mask_card_number(number: str) -> str:
    """Show a card number the way a receipt does: only the last four digits."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return f"**** {digits[-4:]}" if len(digits) >= 4 else "****"


@dataclass
class Address:
    line1: str
    line2: str
    city: str
    state: str
    postal_code: str


@dataclass
class Customer:
    customer_id: int
    name: str
    email: str
    phone: str


@dataclass
class Pizza:
    description: str
    price: int  # cents


@dataclass
class CreditCardInfo:
    """The exercise's card: its ``number``, sent to the payment provider once, at the
    hold, and never stored by us. Or, instead of the number, ``payment_method``: a token
    (``pm_...``) the payment provider gave the customer's browser for the card."""

    holderName: str
    number: str = field(default="", repr=False)
    payment_method: str | None = None

    @property
    def masked(self) -> str:
        if not self.number and self.payment_method:
            return "card token"
        return mask_card_number(self.number)

    @property
    def last4(self) -> str:
        """The last four digits, as the ledger keeps them ("" for a token)."""
        return self.number[-4:] if self.number else ""

    def __repr__(self) -> str:
        token = f", payment_method={self.payment_method!r}" if self.payment_method else ""
        return f"CreditCardInfo(holderName={self.holderName!r}, number={self.masked!r}{token})"


@dataclass
class OrderSettings:
    """Optional knobs, not in the exercise: tests and benchmarks set the waits to zero.

    Attributes:
        prep_seconds: the kitchen's wait (the exercise's short timer, 3 s), once the card is
            held (orders started before `hold-before-kitchen`: after the distance check).
        compensation_attempts: attempts per compensation before the order asks an operator
            for help ("needs attention") instead of failing with its effects half undone.
        step_attempts: attempts per step before the order gives up and compensates.
        fast_path: run the distance check, the ledger steps and their compensations as
            local activities, on the worker that runs the order (docs/design.md, "the
            fast path"); the driver search stays a regular activity.
    """

    prep_seconds: float = 3.0
    compensation_attempts: int = 10
    step_attempts: int = 10
    fast_path: bool = False


@dataclass
class PizzaOrder:
    order_number: str
    customer: Customer
    items: list[Pizza]
    is_delivery: bool
    address: Address
    credit_card_info: CreditCardInfo
    settings: OrderSettings | None = None


@dataclass
class OrderConfirmation:
    order_number: str
    status: str
    confirmation_number: str
    billing_timestamp: int
    amount: int


@dataclass
class Distance:
    kilometers: int


@dataclass
class Bill:
    customer_id: int
    order_number: str
    description: str
    amount: int  # cents, before the discount: send_bill applies it
    order_ref: str = ""


@dataclass
class CreditCardCharge:
    bill: Bill
    credit_card: CreditCardInfo
    amount: int = 0  # cents actually charged: the billed amount, discount included
    order_ref: str = ""


@dataclass
class CardCharge:
    """What the charge needs: the run, the order number, the amount and the card.

    Orders started before it existed send the larger `CreditCardCharge` (the whole bill
    with it); the activity takes both."""

    order_ref: str
    order_number: str
    amount: int  # cents, the billed amount, discount included
    credit_card: CreditCardInfo


@dataclass
class RunRef:
    """What a compensation needs: which run of which order to undo. A `StockRequest`
    decodes as one too (its items are not needed to put back what the run took)."""

    order_ref: str
    order_number: str


@dataclass
class CreditCardConfirmation:
    card_last4: str
    confirmation_number: str
    amount: int
    billing_timestamp: int
    # The payment provider's hold: its payment id and where the money is (MONEY_HELD).
    # Answers of workers from before payments went through a provider leave them empty.
    payment_id: str = ""
    state: str = ""


@dataclass
class StockRequest:
    """Ingredients taken for (or given back by) one run of one order."""

    order_ref: str
    order_number: str
    items: list[Pizza]


@dataclass
class StockChange:
    ingredients: dict[str, int]
    applied: bool  # False when the call was a repeat or had nothing to undo


@dataclass
class Refund:
    amount: int
    applied: bool


@dataclass
class CancelResult:
    accepted: bool
    reason: str
    compensations: list[str] = field(default_factory=list)


@dataclass
class RepairResult:
    action: str
    outcome: str
