"""``pizzeria bench --ablation``: the order with each optional piece switched off in turn.

Each variant runs on a fresh stack whose worker switches one piece of `pizzeria.tuning` off
(the first variant switches nothing off), with the good order and its bare shape in the
usual batches (baseline, order, order, baseline) at each concurrency asked for. Pieces of
the worker (encryption, the sandbox, metrics) weigh on the bare shape too; the ratio shows
what the order pays on top. With several runs the variants take turns, run after run, and
every figure is the median over the runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pizzeria.ops.bench.batches import Batch
from pizzeria.ops.bench.cases import BASELINE_GOOD, GOOD, Settings
from pizzeria.ops.bench.figures import case_figures, machine_json, rounded
from pizzeria.ops.bench.measure import StepReporter, measure_group
from pizzeria.tuning import PIECES

VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("everything on", ()),
    *((f"without {piece}", (piece,)) for piece in PIECES),
)


def variant_row(name: str, concurrency: int, runs: Sequence[Sequence[Batch]]) -> dict[str, Any]:
    """One variant at one concurrency: medians over runs of the order and its bare shape."""

    def median_of(case: str, figure: str) -> float:
        return statistics.median(
            case_figures([b for b in batches if b.case == case and b.concurrency == concurrency])[
                figure
            ]
            for batches in runs
        )

    row: dict[str, Any] = {"variant": name, "concurrency": concurrency}
    for case, prefix in ((GOOD.name, "order"), (BASELINE_GOOD.name, "baseline")):
        row[f"{prefix}_throughput"] = median_of(case, "throughput")
        row[f"{prefix}_cpu_ms"] = median_of(case, "cpu_ms")
        row[f"{prefix}_worker_cpu_ms"] = median_of(case, "worker_cpu_ms")
    row["throughput_ratio"] = row["order_throughput"] / row["baseline_throughput"]
    row["cpu_ratio"] = row["order_cpu_ms"] / row["baseline_cpu_ms"]
    return row


def labelled(step: StepReporter, name: str) -> StepReporter:
    return lambda text: step(f"{name}: {text}")


async def run_ablation(settings: Settings, step: StepReporter) -> dict[str, Any]:
    runs: dict[str, list[list[Batch]]] = {name: [] for name, _ in VARIANTS}
    for run in range(settings.repeat):
        for name, without in VARIANTS:
            chosen = replace(settings, without=without)
            batches, _ = await measure_group(
                chosen, run, (BASELINE_GOOD, GOOD), labelled(step, name)
            )
            runs[name].append(batches)
    rows = [
        variant_row(name, concurrency, runs[name])
        for name, _ in VARIANTS
        for concurrency in settings.concurrency
    ]
    return {
        "settings": {"repeat": settings.repeat, "concurrency": list(settings.concurrency)},
        "machine": machine_json(),
        "pieces": dict(PIECES),
        "variants": [rounded(row) for row in rows],
    }
