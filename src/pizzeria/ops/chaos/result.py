"""What a chaos run ends with: the outcomes, the breakdowns, the check, and the verdict."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from pizzeria.ops.check.report import CheckReport, print_check_report
from pizzeria.text import counted

CLOSED = ("COMPLETED", "FAILED", "CANCELLED", "TERMINATED", "TIMED_OUT")
MAX_LISTED = 50  # violations listed in the JSON summary (all are counted)


@dataclass
class ChaosResult:
    orders: int
    outcomes: Counter[str]
    worker_kills: int
    server_restarts: int
    repaired: int
    seconds: float
    seed: int
    report: CheckReport | None
    data_dir: Path | None
    notes: list[str] = field(default_factory=list)
    rolling_restarts: int = 0
    workers: int = 0
    ledger: str = ""  # where the ledger was, a password shown as ***
    late_writes: int = 0  # attempts that wrote after their timeout (from the worker logs)
    # Step attempts (late writes or not: a retry after a kill) that found their
    # compensation's tombstone and were refused.
    late_writes_refused: int = 0
    lost_answers: int = 0  # steps that took effect while their answer was lost
    fast_path: bool = False  # the orders ran their ledger steps as local activities
    provider_faults: str = ""  # the payment provider's faults ("": none)
    provider_restarts: int = 0  # times the payment provider was SIGKILLed and started again
    #: What the provider's log says it did to requests: 5xx answers, lost answers, resets.
    provider_faults_met: dict[str, int] = field(default_factory=dict)

    @property
    def open(self) -> int:
        """Orders not seen closed: still running, or lost track of (see ``notes``)."""
        return self.orders - sum(self.outcomes[status] for status in CLOSED)

    @property
    def violations(self) -> int:
        if self.report is None:
            return self.orders  # never checked: nothing is proven
        return len(self.report.violations)

    @property
    def ok(self) -> bool:
        return self.violations == 0 and self.open == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "completed": self.outcomes["COMPLETED"],
            "failed": self.outcomes["FAILED"],
            "cancelled": self.outcomes["CANCELLED"],
            "worker_kills": self.worker_kills,
            "server_restarts": self.server_restarts,
            "rolling_restarts": self.rolling_restarts,
            "workers": self.workers,
            "ledger": self.ledger,
            "violations": self.violations,
            "seconds": round(self.seconds, 1),
            "open": self.open,
            "repaired": self.repaired,
            "late_writes": self.late_writes,
            "late_writes_refused": self.late_writes_refused,
            "lost_answers": self.lost_answers,
            "seed": self.seed,
            "fast_path": self.fast_path,
            "provider_faults": self.provider_faults,
            "provider_restarts": self.provider_restarts,
            "provider_faults_met": self.provider_faults_met,
            "failures": self.report.failures if self.report else {},
            # What the check found, so that a failed run says why in its JSON too.
            "violations_found": [
                {"kind": v.kind, "order": v.order, "run_id": v.run_id, "detail": v.detail}
                for v in (self.report.violations if self.report else [])[:MAX_LISTED]
            ],
            "data_dir": str(self.data_dir) if self.data_dir else None,
        }


def worker_log_counts(data_dir: Path) -> tuple[int, int, int]:
    """Late writes, late writes refused, lost answers: what the workers logged."""
    late = refused = lost = 0
    for log in data_dir.glob("worker-*.log"):
        with open(log, errors="replace") as lines:
            for line in lines:
                late += "takes effect late" in line
                refused += "Late step refused" in line
                lost += "its answer is lost" in line
    return late, refused, lost


#: How the provider's log (`pizzeria.payments.provider.server`) says a fault struck.
PROVIDER_LOG_FAULTS = {
    "errors": re.compile(r" -> 5\d\d injected"),
    "lost_answers": re.compile(r"then the connection closed unanswered"),
    "refused_connections": re.compile(r" connection reset \(injected refuse\)"),
}


def provider_log_counts(log: Path) -> dict[str, int]:
    """The faults the payment provider's requests met, from its log."""
    counts = dict.fromkeys(PROVIDER_LOG_FAULTS, 0)
    try:
        with open(log, errors="replace") as lines:
            for line in lines:
                for name, pattern in PROVIDER_LOG_FAULTS.items():
                    counts[name] += pattern.search(line) is not None
    except FileNotFoundError:
        pass
    return counts


def print_chaos_summary(result: ChaosResult, console: Console) -> None:
    if result.report is not None:
        print_check_report(result.report, console)
    console.print(
        f"Chaos: {result.orders} orders{' on the fast path' if result.fast_path else ''} "
        f"in {result.seconds:.1f} s (seed {result.seed}): "
        f"completed {result.outcomes['COMPLETED']}, failed {result.outcomes['FAILED']}, "
        f"cancelled {result.outcomes['CANCELLED']}, still open {result.open}; "
        f"{counted(result.workers, 'worker')} on {result.ledger}: "
        f"{counted(result.worker_kills, 'worker kill')}, "
        f"{counted(result.rolling_restarts, 'rolling restart')}, "
        f"{counted(result.server_restarts, 'server restart')}, "
        f"{counted(result.repaired, 'order')} repaired; "
        f"{counted(result.late_writes, 'late write')}, "
        f"{counted(result.late_writes_refused, 'step attempt')} refused after their "
        f"compensation ran; {counted(result.lost_answers, 'lost answer')}"
    )
    console.print(provider_line(result), markup=False)
    verdict = "[green]nothing lost, nothing doubled[/green]" if result.ok else "[red]FAILED[/red]"
    console.print(f"Verdict: {verdict} ({counted(result.violations, 'violation')})")


def provider_line(result: ChaosResult) -> str:
    """What the payment provider went through: its faults (on or off) and its restarts."""
    met = result.provider_faults_met
    if result.provider_faults:
        faults = (
            f"faults on ({met.get('errors', 0)} 5xx answers, {met.get('lost_answers', 0)} "
            f"answers lost, {met.get('refused_connections', 0)} connections refused)"
        )
    else:
        faults = "faults off"
    return f"Payment provider: {faults}; {result.provider_restarts} provider restarts (SIGKILL)"
