"""Summing up: per case and concurrency the median over runs, the ratios to the baseline,
and how cost grows with orders and with orders in flight."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any

from pizzeria.ops.baseline import BAD_CARD_SHAPE, GOOD_ORDER_SHAPE, LOCAL_STEPS, BaselineShape
from pizzeria.ops.bench.batches import Batch, StackFacts
from pizzeria.ops.bench.cases import (
    ALL_CASES,
    CASES,
    FAST_GOOD,
    GOOD,
    PREP_SECONDS,
    WORKER_ENVIRONMENT,
    Case,
    Settings,
)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def case_figures(batches: Sequence[Batch]) -> dict[str, float]:
    """One run's figures for one case and concurrency, from its batches taken together."""
    workflows = sum(b.workflows for b in batches)
    latencies = [latency for b in batches for latency in b.latencies]
    server = 1000 * sum(b.server_cpu for b in batches) / workflows
    worker = 1000 * sum(b.worker_cpu for b in batches) / workflows
    return {
        "workflows": workflows,
        "throughput": workflows / sum(b.seconds for b in batches),
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "server_cpu_ms": server,
        "worker_cpu_ms": worker,
        "cpu_ms": server + worker,
        "client_cpu_ms": 1000 * sum(b.client_cpu for b in batches) / workflows,
        "worker_peak_rss_mb": max(b.peak_rss for b in batches) / 2**20,
        # The payment provider's round trips, as the workers waited for them (bare shapes
        # make none): how many per order, and their time per order added up.
        "provider_calls_per_order": sum(b.provider_calls for b in batches) / workflows,
        "provider_ms_per_order": 1000 * sum(b.provider_seconds for b in batches) / workflows,
        # The provider's own CPU: not the order's (Stripe's, in production), but on the
        # same cores here, so it weighs on the order's throughput beside its bare shape's.
        "provider_cpu_ms": 1000 * sum(b.provider_cpu for b in batches) / workflows,
    }


RATIO_FIGURES = {
    "throughput": "throughput",
    "p50": "p50_ms",
    "p99": "p99_ms",
    "server_cpu": "server_cpu_ms",
    "worker_cpu": "worker_cpu_ms",
    "cpu": "cpu_ms",
}
TARGET_THROUGHPUT = 0.9
TARGET_CPU = 1.15  # issue 14: at most 1.15 times the bare engine's CPU per workflow
TARGET_P99 = 1.2
TARGET_P99_CONCURRENCY = 50
# The fast path's promise: a good order at 1 in flight in at most half the regular time.
TARGET_FAST_PATH_LATENCY = 0.5


def bench_report(
    settings: Settings, batches: Sequence[Batch], stacks: Sequence[StackFacts]
) -> dict[str, Any]:
    """Per case and concurrency the median over runs; ratios from those medians."""
    cases = case_rows(settings, batches, stacks)
    by_key = {(row["case"], row["concurrency"]): row for row in cases}
    report = {
        "settings": settings_json(settings),
        "machine": machine_json(),
        "cases": [rounded(row) for row in cases],
        "ratios": [rounded(ratio) for ratio in ratio_rows(settings, by_key)],
        "growth": growth(settings, batches, stacks),
    }
    fast_path = fast_path_rows(settings, by_key)
    if fast_path:
        report["fast_path"] = [rounded(row) for row in fast_path]
    return report


def fast_path_rows(
    settings: Settings, by_key: dict[tuple[str, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The fast path's good order over the regular one's, at each concurrency measured."""
    rows = []
    for concurrency in settings.concurrency:
        fast = by_key.get((FAST_GOOD.name, concurrency))
        regular = by_key.get((GOOD.name, concurrency))
        if fast is None or regular is None:
            continue
        row: dict[str, Any] = {"concurrency": concurrency}
        for name, key in RATIO_FIGURES.items():
            row[name] = fast[key] / regular[key] if regular[key] else None
        if concurrency == 1:
            row["meets_half_latency"] = (
                row["p50"] is not None and row["p50"] <= TARGET_FAST_PATH_LATENCY
            )
        rows.append(row)
    return rows


def case_rows(
    settings: Settings, batches: Sequence[Batch], stacks: Sequence[StackFacts]
) -> list[dict[str, Any]]:
    """One row per case and concurrency measured: each figure the median over the runs."""
    rows: list[dict[str, Any]] = []
    for case in ALL_CASES:
        for concurrency in settings.concurrency:
            runs = []
            for run in range(settings.repeat):
                chosen = [
                    b
                    for b in batches
                    if b.case == case.name and b.concurrency == concurrency and b.run == run
                ]
                if chosen:
                    runs.append(case_figures(chosen))
            if not runs:
                continue
            row: dict[str, Any] = {"case": case.name, "concurrency": concurrency}
            for key in runs[0]:
                row[key] = statistics.median(r[key] for r in runs)
            row["workflows"] = int(sum(r["workflows"] for r in runs))
            row.update(history_figures(case, concurrency, stacks))
            row["runs"] = [{k: round(v, 3) for k, v in r.items()} for r in runs]
            rows.append(row)
    return rows


def ratio_rows(
    settings: Settings, by_key: dict[tuple[str, int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each saga case over its baseline at the same concurrency, and whether it meets the
    targets."""
    ratios = []
    for case in ALL_CASES:
        for concurrency in settings.concurrency:
            saga = by_key.get((case.name, concurrency))
            bare = by_key.get((case.baseline or "", concurrency))
            if case.baseline is None or saga is None or bare is None:
                continue
            ratio: dict[str, Any] = {
                "case": case.name,
                "baseline": case.baseline,
                "concurrency": concurrency,
            }
            for name, key in RATIO_FIGURES.items():
                ratio[name] = saga[key] / bare[key] if bare[key] else None
            ratio["meets"] = meets_targets(ratio, concurrency)
            ratios.append(ratio)
    return ratios


def meets_targets(ratio: dict[str, Any], concurrency: int) -> dict[str, bool]:
    meets = {
        "throughput": ratio["throughput"] is not None and ratio["throughput"] >= TARGET_THROUGHPUT,
        "cpu": ratio["cpu"] is not None and ratio["cpu"] <= TARGET_CPU,
    }
    if concurrency == TARGET_P99_CONCURRENCY:
        meets["p99"] = ratio["p99"] is not None and ratio["p99"] <= TARGET_P99
    return meets


def history_figures(case: Case, concurrency: int, stacks: Sequence[StackFacts]) -> dict[str, Any]:
    facts = [
        f
        for stack in stacks
        for f in stack.histories.get(case.name, [])
        if f.concurrency == concurrency
    ]
    if not facts:
        return {}
    figures: dict[str, Any] = {
        "history_events": statistics.median(f.events for f in facts),
        "history_bytes": statistics.median(f.bytes for f in facts),
    }
    undo = [f.compensation_seconds for f in facts if f.compensation_seconds is not None]
    if undo:
        figures["compensation_ms_p50"] = 1000 * statistics.median(undo)
        figures["compensation_ms_max"] = 1000 * max(undo)
    return figures


def growth(
    settings: Settings, batches: Sequence[Batch], stacks: Sequence[StackFacts]
) -> dict[str, Any]:
    """How cost grows: per order (history, ledger) and per order in flight (memory)."""
    result: dict[str, Any] = {}
    for case in ALL_CASES:
        facts = [f for stack in stacks for f in stack.histories.get(case.name, [])]
        if facts:
            result.setdefault("history_events_per_workflow", {})[case.name] = statistics.median(
                f.events for f in facts
            )
            result.setdefault("history_bytes_per_workflow", {})[case.name] = statistics.median(
                f.bytes for f in facts
            )
    for stack in stacks:
        saga = stack.pair[1]
        if stack.orders:
            result.setdefault("ledger_rows_per_order", {})[saga] = stack.ledger_rows / stack.orders
            result.setdefault("ledger_payload_bytes_per_order", {})[saga] = (
                stack.ledger_payload_bytes / stack.orders
            )
            result.setdefault("ledger_file_bytes_per_order", {})[saga] = (
                stack.ledger_file_bytes / stack.orders
            )
    low, high = min(settings.concurrency), max(settings.concurrency)
    if high > low:
        for case in ALL_CASES:
            peaks = {
                c: statistics.median(
                    b.peak_rss for b in batches if b.case == case.name and b.concurrency == c
                )
                for c in (low, high)
                if any(b.case == case.name and b.concurrency == c for b in batches)
            }
            if len(peaks) == 2:
                result.setdefault("worker_rss_kb_per_inflight_workflow", {})[case.name] = (
                    (peaks[high] - peaks[low]) / (high - low) / 1024
                )
    if stacks:
        result["worker_idle_rss_mb"] = statistics.median(s.idle_rss for s in stacks) / 2**20
    return {key: rounded(value) for key, value in result.items()}


def comparison(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setup and concurrency: each case's throughput, and the good order's latency and
    CPU per workflow (the server's, the workers' together)."""
    rows = []
    for report in reports:
        settings = report["settings"]
        by_key = {(row["case"], row["concurrency"]): row for row in report["cases"]}
        for concurrency in settings["concurrency"]:
            row: dict[str, Any] = {
                "ledger": settings["ledger"],
                "workers": settings["workers"],
                "concurrency": concurrency,
            }
            for case in CASES:
                figures = by_key.get((case.name, concurrency))
                row[f"{case.name}_throughput"] = figures["throughput"] if figures else None
            good = by_key.get(("good", concurrency), {})
            for key in ("p50_ms", "p99_ms", "server_cpu_ms", "worker_cpu_ms"):
                row[f"good_{key}"] = good.get(key)
            rows.append(rounded(row))
    return rows


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def settings_json(settings: Settings) -> dict[str, Any]:
    return {
        "repeat": settings.repeat,
        "concurrency": list(settings.concurrency),
        "workflows_per_batch": {str(c): settings.batch_size(c) for c in settings.concurrency},
        "batches_per_case": 2,
        "batch_order": "each group's cases forth and back, e.g. baseline, saga, saga, baseline "
        "(a fresh server and worker per group)",
        "workers": settings.workers,
        "ledger": settings.ledger_kind,
        "worker_options": list(settings.worker_options),
        "server_options": list(settings.server_options),
        "sandbox_passthrough": list(settings.sandbox_passthrough),
        "prep_seconds": PREP_SECONDS,
        "worker_environment": {k: v for k, v in WORKER_ENVIRONMENT.items() if v},
        "baseline_shapes": {
            "baseline-good": describe_shape(GOOD_ORDER_SHAPE),
            "baseline-bad": describe_shape(BAD_CARD_SHAPE),
            "baseline-local-good": describe_shape(GOOD_ORDER_SHAPE, local=LOCAL_STEPS),
        },
        "groups": [[case.name for case in group] for group in settings.groups],
    }


def describe_shape(shape: BaselineShape, local: frozenset[str] = frozenset()) -> str:
    parts = [*shape.steps]
    if shape.failing_step:
        parts.append(f"{shape.failing_step} (fails)")
    parts += [f"{name} (compensation)" for name in shape.compensations]
    return ", ".join(part + (" (local)" if part.split()[0] in local else "") for part in parts)


def machine_json() -> dict[str, Any]:
    from temporalio import __version__ as temporalio_version

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "temporalio": temporalio_version,
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
