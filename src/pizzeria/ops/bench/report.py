"""The benchmark's report for people: a table of figures and ratios, and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pizzeria.ops.bench.cases import ALL_CASES, CASES
from pizzeria.ops.bench.costs import ShapeCost

TABLE_WIDTH = 156  # the case table's columns, the provider's two included, unwrapped
PLOT_NEEDS_MATPLOTLIB = "--plot needs matplotlib: pip install -e '.[bench]'"


class PlotUnavailable(RuntimeError):
    """No matplotlib: the plot cannot be drawn."""


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise PlotUnavailable(PLOT_NEEDS_MATPLOTLIB) from None
    return plt


def print_bench_report(report: dict[str, Any], out: Console) -> None:
    # Wide enough for every column when stdout is a file or a pipe (rich assumes 80).
    Console(highlight=False, width=max(out.width, TABLE_WIDTH)).print(bench_table(report))
    undo = [r for r in report["cases"] if "compensation_ms_p50" in r]
    for row in undo:
        out.print(
            f"{row['case']} at {row['concurrency']} in flight: failing step to last "
            f"compensation done {row['compensation_ms_p50']:.0f} ms (median of samples)"
        )
    for row in report.get("fast_path", []):
        verdict = ""
        if "meets_half_latency" in row:
            verdict = " (target <= 0.5: " + ("met)" if row["meets_half_latency"] else "missed)")
        out.print(
            f"fast path over regular path at {row['concurrency']} in flight: "
            f"p50 latency x{row['p50']:.2f}{verdict}, throughput x{row['throughput']:.2f}, "
            f"CPU per order x{row['cpu']:.2f}"
        )
    for row in report["cases"]:
        calls = row.get("provider_calls_per_order")
        if calls:
            share = row["provider_ms_per_order"] / row["p50_ms"] if row["p50_ms"] else 0
            out.print(
                f"{row['case']} at {row['concurrency']} in flight: {calls:.1f} payment provider "
                f"calls per order, {row['provider_ms_per_order']:.1f} ms in all "
                f"({share:.0%} of its p50), {row['provider_cpu_ms']:.1f} ms of the "
                "provider's CPU on the same cores"
            )
    for line in growth_lines(report["growth"]):
        out.print(line)
    out.print(f"elapsed: {report['elapsed_seconds']:.0f} s")


def growth_lines(growth: dict[str, dict[str, float] | float]) -> list[str]:
    """How cost grows, one line a measure: ``history events per workflow: good 19, ...``,
    or ``worker idle rss mb: 61.2`` for a measure of the whole worker, not per case."""
    lines = []
    for measure, by_case in growth.items():
        if isinstance(by_case, dict):
            figures = ", ".join(f"{case} {_figure(value)}" for case, value in by_case.items())
        else:
            figures = _figure(by_case)
        lines.append(f"{measure.replace('_', ' ')}: {figures}")
    return lines


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2f}"


def print_side_by_side(result: dict[str, Any], out: Console) -> None:
    """Each setup's table, then their throughput and the good order's costs side by side."""
    for report in result["setups"]:
        settings = report["settings"]
        out.print(f"[bold]{settings['ledger']} ledger, {settings['workers']} worker(s)[/bold]")
        Console(highlight=False, width=max(out.width, TABLE_WIDTH)).print(bench_table(report))
    table = Table(
        "ledger",
        "workers",
        "in flight",
        *(f"{case.name} wf/s" for case in CASES),
        "good p99 ms",
        "good server CPU ms/wf",
        "good worker CPU ms/wf",
        title="Setups side by side (median of the runs)",
    )
    for row in result["comparison"]:
        table.add_row(
            row["ledger"],
            str(row["workers"]),
            str(row["concurrency"]),
            *(figure(row[f"{case.name}_throughput"], ".1f") for case in CASES),
            figure(row["good_p99_ms"], ".0f"),
            figure(row["good_server_cpu_ms"], ".1f"),
            figure(row["good_worker_cpu_ms"], ".1f"),
        )
    Console(highlight=False, width=max(out.width, 132)).print(table)
    out.print(f"elapsed: {result['elapsed_seconds']:.0f} s")


def figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_versus(report: dict[str, Any], out: Console) -> None:
    """``--peer``: ours beside the peer's whole workflow, then each target and its ratio."""
    peer = report["peer"]
    table = Table(
        "in flight",
        "hold via API (fast pickup) p50 ms",
        "fast pickup p50 ms",
        f"{peer} workflow p50 ms",
        "empty workflow p50 ms",
        "hold / peer",
        "pickup / peer",
        "fast pickup CPU ms/order",
        f"{peer} CPU ms/wf",
        "CPU ratio",
        title=f"Ours beside {peer}'s five-step workflow, in one run (median of the batches)",
    )
    for level in report["levels"]:
        table.add_row(
            str(level["concurrency"]),
            figure(level["hold_p50_ms"], ".1f"),
            figure(level["pickup_p50_ms"], ".1f"),
            figure(level["peer_p50_ms"], ".1f"),
            figure(level["empty_p50_ms"], ".1f"),
            figure(level["hold_ratio"], ".2f"),
            figure(level["pickup_ratio"], ".2f"),
            figure(level["pickup_cpu_ms"], ".1f"),
            figure(level["peer_cpu_ms"], ".1f"),
            figure(level["cpu_ratio"], ".2f"),
        )
    Console(highlight=False, width=max(out.width, 150)).print(table)
    for level in report["levels"]:
        out.print(
            f"the engine's floor at {level['concurrency']} in flight: a workflow with no "
            f"step takes {level['empty_p50_ms']:.1f} ms, x{level['empty_ratio']:.2f} "
            f"{peer}'s whole workflow (not a target)"
        )
    for target in report["targets"]:
        verdict = "met" if target["met"] else "missed"
        out.print(
            f"{target['figure']} at {target['concurrency']} in flight: "
            f"x{target['ratio']:.2f} (target <= {target['target']:g}: {verdict})"
        )
    if report.get("late_holds"):
        out.print(
            f"{report['late_holds']} hold(s) came later than the API's wait (answered 202, "
            "the order going on): counted at that wait, a lower bound; the machine was "
            "too loaded for these figures"
        )
    out.print(f"elapsed: {report['elapsed_seconds']:.0f} s")


def costs_table(costs: list[ShapeCost]) -> Table:
    """``--costs``: one row per shape."""
    table = Table("shape", "events", "payload bytes", "actions")
    for cost in costs:
        table.add_row(cost.shape, str(cost.events), f"{cost.payload_bytes:,}", str(cost.actions))
    return table


def ablation_table(report: dict[str, Any]) -> Table:
    """``--ablation``: each variant against its bare shape."""
    table = Table("in flight", "order wf/s", "bare wf/s", "ratio", "order CPU", "bare CPU", "ratio")
    table.add_column("variant", no_wrap=True)
    for row in report["variants"]:
        table.add_row(
            str(row["concurrency"]),
            f"{row['order_throughput']:.1f}",
            f"{row['baseline_throughput']:.1f}",
            f"{row['throughput_ratio']:.2f}",
            f"{row['order_cpu_ms']:.1f}",
            f"{row['baseline_cpu_ms']:.1f}",
            f"{row['cpu_ratio']:.2f}",
            row["variant"],
        )
    return table


def profile_table(report: dict[str, Any]) -> Table:
    """``--profile``: the worker's time per workflow, piece by piece, and in all."""
    table = Table("piece", "bare ms/wf", "order ms/wf", "difference", "what it is")
    for row in report["pieces"]:
        table.add_row(
            row["piece"],
            f"{row['baseline_ms']:.2f}",
            f"{row['order_ms']:.2f}",
            f"{row['difference_ms']:+.2f}",
            row["what"],
        )
    totals = report["totals_ms"]
    bare, order = totals.values()  # the bare shape's, then the order's
    table.add_row("all", f"{bare:.2f}", f"{order:.2f}", f"{order - bare:+.2f}", "")
    return table


def bench_table(report: dict[str, Any]) -> Table:
    """Per case and concurrency its figures, and its ratios to the baseline (green when
    they meet the target, red when not)."""
    ratios = {(r["case"], r["concurrency"]): r for r in report["ratios"]}
    table = Table(
        "case",
        "in flight",
        "wf/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/wf",
        "worker CPU ms/wf",
        "wf/s ratio",
        "p99 ratio",
        "CPU ratio",
        "provider calls/wf",
        "provider ms/wf",
        title=f"pizzeria bench: median of {report['settings']['repeat']} run(s)",
    )
    for row in report["cases"]:
        ratio = ratios.get((row["case"], row["concurrency"]))

        def mark(name: str, text: str, ratio: dict[str, Any] | None = ratio) -> str:
            if ratio is None or name not in ratio["meets"]:
                return text
            return f"[green]{text}[/green]" if ratio["meets"][name] else f"[red]{text}[/red]"

        table.add_row(
            row["case"],
            str(row["concurrency"]),
            f"{row['throughput']:.1f}",
            f"{row['p50_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            f"{row['server_cpu_ms']:.1f}",
            f"{row['worker_cpu_ms']:.1f}",
            mark("throughput", f"{ratio['throughput']:.2f}") if ratio else "",
            mark("p99", f"{ratio['p99']:.2f}") if ratio else "",
            mark("cpu", f"{ratio['cpu']:.2f}") if ratio else "",
            *provider_cells(row),
        )
    return table


def provider_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The payment provider's round trips per order; "-" for a shape that makes none."""
    calls = row.get("provider_calls_per_order")
    if not calls:
        return "-", "-"
    return f"{calls:.1f}", f"{row['provider_ms_per_order']:.1f}"


def draw_plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for case in ALL_CASES:
        rows = sorted(
            (r for r in report["cases"] if r["case"] == case.name), key=lambda r: r["concurrency"]
        )
        if not rows:
            continue
        style = "-" if case.saga else "--"
        x = [r["concurrency"] for r in rows]
        left.plot(x, [r["throughput"] for r in rows], style, marker="o", label=case.name)
        right.plot(x, [r["p99_ms"] for r in rows], style, marker="o", label=case.name)
    levels = sorted({r["concurrency"] for r in report["cases"]})
    for axes, label in ((left, "workflows per second"), (right, "p99 latency (ms)")):
        axes.set_xscale("log")
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.minorticks_off()
        axes.set_xlabel("workflows in flight")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(f"pizzeria bench (median of {report['settings']['repeat']} runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
