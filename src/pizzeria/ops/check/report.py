"""What the check found, as JSON or as tables for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from pizzeria.models import dollars, short_run
from pizzeria.text import counted, for_terminal

# Order counts printed on their own; any other outcome (terminated, ...) is listed after.
NAMED_COUNTS = ("total", "completed", "failed", "cancelled", "open")
UNDONE_COUNTS = ("failed", "cancelled", "terminated", "timed_out")


@dataclass
class Violation:
    kind: str
    order: str  # the order number (or ingredient, for stock)
    run_id: str
    detail: str


@dataclass
class CheckReport:
    orders: dict[str, int]
    failures: dict[str, int]
    stock: dict[str, dict[str, Any]]
    money: dict[str, int]
    double_effects: int
    refunds_above_charges: int
    open_orders: list[str]
    violations: list[Violation]
    warnings: list[Violation]
    payments: dict[str, int] | None = None  # the provider's figures; None: not read

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "orders": self.orders,
            "failures": self.failures,
            "stock": self.stock,
            "money": self.money,
            "double_effects": self.double_effects,
            "refunds_above_charges": self.refunds_above_charges,
            "open_orders": self.open_orders,
            "violations": [asdict(v) for v in self.violations],
            "warnings": [asdict(w) for w in self.warnings],
            "payments": self.payments,
        }


def print_check_report(report: CheckReport, console: Console) -> None:
    print_orders(report, console)
    console.print(stock_table(report))
    print_money(report, console)
    print_payments(report, console)
    # Order numbers and details come from Temporal and the ledger: escaped, never markup.
    console.print(
        for_terminal(
            f"Double effects: {report.double_effects}; refunds above charges: "
            f"{report.refunds_above_charges}; orders still open: {len(report.open_orders)}"
            + (f" ({', '.join(report.open_orders[:20])})" if report.open_orders else "")
        ),
        markup=False,
    )
    for warning in report.warnings:
        order = f"order {warning.order}: " if warning.order != "-" else ""
        said = f": {warning.kind}: {order}{warning.detail}"
        console.print(Text.assemble(("warning", "yellow"), for_terminal(said)))
    if report.ok:
        agree = (
            "the ledger agrees with Temporal"
            if report.payments is None
            else "the ledger, Temporal and the payment provider agree"
        )
        console.print(f"[green]No violations[/green]: {agree}.")
        return
    table = Table(
        "violation", "order", "run", "detail", title=counted(len(report.violations), "violation")
    )
    for item in report.violations:
        row = (item.kind, item.order, short_run(item.run_id), item.detail)
        table.add_row(*(Text(for_terminal(value)) for value in row))
    console.print(table)


def print_orders(report: CheckReport, console: Console) -> None:
    orders = report.orders
    others = "".join(
        f", {name.replace('_', ' ')} {count}"
        for name, count in orders.items()
        if name not in NAMED_COUNTS and count
    )
    console.print(
        f"Orders: {orders['total']} - completed {orders['completed']}, failed "
        f"{orders['failed']}, cancelled {orders['cancelled']}{others}, "
        f"still open {orders['open']}"
    )
    if report.failures:
        console.print(
            "  failed by error: "
            + ", ".join(f"{kind} {count}" for kind, count in report.failures.items())
        )


def stock_table(report: CheckReport) -> Table:
    # An ingredient stays on one row: "tomato sauce" wrapped read as two ingredients.
    ingredient = Column("ingredient", no_wrap=True)
    stock = Table(
        ingredient,
        "initial",
        "received",
        "in stock",
        "consumed",
        "open",
        "undone",
        "ok",
        show_edge=False,  # 80 columns hold it whole
    )
    for name, row in report.stock.items():
        stock.add_row(
            name,
            str(row["initial"]),
            str(row["received"]),
            str(row["in_stock"]),
            str(row["consumed"]),
            str(row["held_open"]),
            str(row["held_undone"] + row["held_unknown"]),
            "yes" if row["conserved"] else "[red]NO[/red]",
        )
    return stock


def print_money(report: CheckReport, console: Console) -> None:
    money, orders = report.money, report.orders
    # The ledger's words for the card: held at the charge, let go by a compensation
    # (the hold released, or what was captured refunded), captured by the bill. Refunds
    # after the bill (no driver, staff) are the payment provider's line.
    console.print(
        f"Money: held {dollars(money['charged'])}, given back by compensations "
        f"{dollars(money['refunded'])}; captured by completed orders "
        f"{dollars(money['billed_completed'])}, refunded after the bill (no driver, staff) "
        f"{dollars(money['refunded_after_bill'])}; kept {dollars(money['kept'])}"
    )
    undone = sum(orders[name] for name in UNDONE_COUNTS)
    console.print(
        f"Per order, held - given back: the bill for {money['completed_orders_settled']} of "
        f"{orders['completed']} completed, 0 for {money['undone_orders_settled']} of {undone} "
        "failed, cancelled or terminated"
    )


def print_payments(report: CheckReport, console: Console) -> None:
    payments, orders = report.payments, report.orders
    if payments is None:
        return
    console.print(
        f"Payment provider: {payments['payments']} payments, {payments['refunds']} refunds; "
        f"held {dollars(payments['held'])}, captured {dollars(payments['captured'])}, "
        f"refunded {dollars(payments['refunded'])}"
        + (f"; {payments['not_judged']} objects of other orders" if payments["not_judged"] else "")
    )
    undone = sum(orders[name] for name in UNDONE_COUNTS)
    console.print(
        f"Per order at the provider, captured - refunded: the bill less its refunds for "
        f"{payments['completed_orders_settled']} of {orders['completed']} completed, 0 for "
        f"{payments['undone_orders_settled']} of {undone} failed, cancelled or terminated"
    )
