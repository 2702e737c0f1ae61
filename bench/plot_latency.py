"""Plot latency over time from the streams benchmark's own JSON (issue 14).

    .venv/bin/python bench/plot_latency.py RESULT.json [--workload b] [--system chatscale]
        [--system resumable-stream] [--run N] [--log] [--out b.png]

RESULT.json is what ``bench/streams.py`` prints (one run, or ``--runs N`` with every run
under ``runs``) or what ``bench/run_all.py --out`` writes (workload -> system -> runs).
One panel per system, x = seconds since the producers were released: p50, p99 and max
latency of each 100 ms bucket of arrival time (the ``timeline`` field), event-loop lag
(``loop_lag``), and garbage-collector pauses (``gc_pauses``: Python's generation 2 and
Node's major collections as red bands as wide as the pause, younger ones as ticks along
the bottom). Without ``--run`` each system's run is the one whose p99 is the median.
Needs the ``bench`` extra (matplotlib); draws with the Agg backend, no display needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Pauses drawn prominently: CPython's oldest generation, V8's mark-sweep-compact.
MAJOR_GC = {"2", "major"}


class PlotError(ValueError):
    """The file does not hold what was asked for."""


@dataclass
class Chosen:
    """One system's run, picked for the plot."""

    system: str
    run: dict[str, Any]
    number: int  # 1-based, among the system's runs
    of: int


def systems_of(data: dict[str, Any], workload: str | None) -> tuple[str, dict[str, list[Any]]]:
    """The workload and its runs per system, whatever the file's shape."""
    if "runs" in data or "timeline" in data:  # bench/streams.py, --runs N or one run
        runs = data.get("runs", [data])
        name = str(data.get("workload"))
        if workload is not None and workload != name:
            raise PlotError(f"the file holds workload {name}, not {workload}")
        return name, {str(data.get("backend")): runs}
    if "error" in data:
        raise PlotError(f"the run failed: {data['error']}")
    if workload is None:
        if len(data) != 1:
            raise PlotError(f"pick one of the workloads {sorted(data)} with --workload")
        workload = next(iter(data))
    if workload not in data:
        raise PlotError(f"no workload {workload} in the file (it has {sorted(data)})")
    return workload, data[workload]


def choose(per_system: dict[str, list[Any]], systems: list[str], run: int | None) -> list[Chosen]:
    """Run ``run`` (1-based) of each system, or the run whose p99 is the median (the lower
    middle one for an even count); runs that failed or have no timeline are skipped."""
    unknown = [s for s in systems if s not in per_system]
    if unknown:
        raise PlotError(f"no system {unknown} in the file (it has {sorted(per_system)})")
    chosen = []
    for system in systems or list(per_system):
        runs = per_system[system]
        usable = [
            (i, r)
            for i, r in enumerate(runs)
            if "error" not in r and r.get("timeline") and r.get("lat_p99_ms") is not None
        ]
        if run is not None:
            if not 1 <= run <= len(runs):
                raise PlotError(f"{system} has {len(runs)} runs, no run {run}")
            if all(i != run - 1 for i, _ in usable):
                raise PlotError(f"{system} run {run} failed or has no timeline")
            index = run - 1
        else:
            if not usable:
                raise PlotError(f"{system} has no run with a timeline")
            ranked = sorted(usable, key=lambda pair: pair[1]["lat_p99_ms"])
            index = ranked[(len(ranked) - 1) // 2][0]
        chosen.append(Chosen(system, runs[index], index + 1, len(runs)))
    return chosen


def _steps(t_s: list[float], values: list[Any], width_s: float) -> tuple[list[float], list[float]]:
    """A bucketed series as a staircase: each value held over its bucket."""
    xs = [*t_s, t_s[-1] + width_s] if t_s else []
    ys = [math.nan if v is None else float(v) for v in values]
    return xs, [*ys, ys[-1]] if ys else []


def _gc_kinds(pauses: dict[str, Any]) -> list[str]:
    return [str(k) for k in pauses.get("gen", pauses.get("kind", []))]


def _commit(chosen: list[Chosen]) -> str:
    commits = sorted({str(c.run.get("versions", {}).get("commit", "unknown")) for c in chosen})
    return "/".join(commits)


def draw(workload: str, chosen: list[Chosen], out: Path, log: bool) -> None:
    """Write the PNG: one panel per system, shared axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(chosen),
        1,
        figsize=(14, 3.6 * len(chosen)),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, item in zip(axes[:, 0], chosen, strict=True):
        run = item.run
        timeline = run["timeline"]
        width_s = timeline["bucket_ms"] / 1000
        for field, colour, label in (
            ("max_ms", "tab:grey", "max"),
            ("p99_ms", "tab:orange", "p99"),
            ("p50_ms", "tab:blue", "p50"),
        ):
            xs, ys = _steps(timeline["t_s"], timeline[field], width_s)
            ax.plot(xs, ys, drawstyle="steps-post", color=colour, label=f"{label} per bucket")
        lag = run.get("loop_lag") or {}
        if lag.get("t_s"):
            ax.plot(
                lag["t_s"],
                lag["lag_ms"],
                color="tab:green",
                linewidth=0.8,
                marker=".",
                markersize=3,
                label=f"loop lag (every {lag['interval_ms']} ms)",
            )
        pauses = run.get("gc_pauses") or {}
        kinds = _gc_kinds(pauses)
        major = [
            (t, ms)
            for t, ms, k in zip(pauses.get("t_s", []), pauses.get("ms", []), kinds, strict=True)
            if k in MAJOR_GC
        ]
        minor = [t for t, k in zip(pauses.get("t_s", []), kinds, strict=True) if k not in MAJOR_GC]
        for index, (t, ms) in enumerate(major):
            ax.axvspan(
                t,
                t + max(ms / 1000, width_s / 20),
                color="red",
                alpha=0.35,
                label="GC gen 2 / major" if index == 0 else None,
            )
        if minor:
            ax.plot(
                minor,
                [0.0] * len(minor),
                linestyle="none",
                marker="|",
                markersize=8,
                color="purple",
                transform=ax.get_xaxis_transform(),
                label="GC younger gen / minor",
            )
        totals = ", ".join(f"{k} {v:.1f} ms" for k, v in pauses.get("total_ms", {}).items())
        ax.set_title(
            f"{item.system}: run {item.number} of {item.of}, p50 {run['lat_p50_ms']} ms, "
            f"p99 {run['lat_p99_ms']} ms, max {run['lat_max_ms']} ms, CPU {run.get('cpu_pct')} %"
            + (f"; GC total by generation or kind: {totals}" if totals else ""),
            fontsize=9,
        )
        ax.set_ylabel("latency ms")
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)  # off the data
    axes[-1, 0].set_xlabel("seconds since the producers were released (arrival time)")
    systems = ", ".join(c.system for c in chosen)
    fig.suptitle(
        f"workload {workload}: {systems}; latency per "
        f"{chosen[0].run['timeline']['bucket_ms']} ms bucket; commit {_commit(chosen)}"
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point: read, choose the runs, write the PNG and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("result", type=Path, help="JSON of bench/streams.py or run_all.py --out")
    parser.add_argument("--workload", help="needed when the file holds several")
    parser.add_argument(
        "--system", action="append", default=[], help="repeatable; default: every system"
    )
    parser.add_argument("--run", type=int, help="1-based; default: the run with the median p99")
    parser.add_argument("--log", action="store_true", help="logarithmic latency axis")
    parser.add_argument("--out", type=Path, help="default: RESULT-WORKLOAD.png beside RESULT")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.result.read_text())
        workload, per_system = systems_of(data, args.workload)
        chosen = choose(per_system, args.system, args.run)
    except (OSError, json.JSONDecodeError, PlotError) as exc:
        print(f"plot_latency: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.result.with_name(f"{args.result.stem}-{workload}.png")
    draw(workload, chosen, out, args.log)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
