"""bench/plot_latency.py: which runs it picks from each file shape, and that it draws a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench.plot_latency import PlotError, choose, main, systems_of


def run(p99: float | None, **extra: Any) -> dict[str, Any]:
    timeline = {
        "bucket_ms": 100,
        "t_s": [0.0, 0.1, 0.2],
        "n": [3, 0, 2],
        "p50_ms": [1.0, None, 2.0],
        "p99_ms": [3.0, None, 9.0],
        "max_ms": [3.0, None, 9.0],
    }
    return {
        "workload": "b",
        "backend": "redis",
        "lat_p50_ms": 1.0,
        "lat_p99_ms": p99,
        "lat_max_ms": 9.0,
        "timeline": timeline,
        "gc_pauses": {"t_s": [0.05, 0.15], "ms": [0.2, 40.0], "gen": [0, 2]},
        "loop_lag": {"interval_ms": 50, "t_s": [0.05, 0.1, 0.15], "lag_ms": [0.1, 0.2, 38.0]},
        "versions": {"commit": "abc1234"},
        **extra,
    }


def test_median_p99_run_of_each_system_in_a_run_all_file() -> None:
    data = {
        "b": {
            "chatscale": [run(30.0), run(10.0), run(20.0)],
            "resumable-stream": [run(5.0), {"error": "timed out"}, run(7.0), run(6.0)],
        },
        "a": {"chatscale": [run(1.0)]},
    }
    workload, per_system = systems_of(data, "b")
    assert workload == "b"
    picked = choose(per_system, [], None)
    # chatscale: p99s 30, 10, 20 -> median 20 is run 3; resumable-stream: the failed run is
    # skipped, 5, 7, 6 -> median 6 is run 4.
    assert [(c.system, c.number, c.of) for c in picked] == [
        ("chatscale", 3, 3),
        ("resumable-stream", 4, 4),
    ]
    assert [c.number for c in choose(per_system, ["resumable-stream"], 1)] == [1]
    with pytest.raises(PlotError, match="failed"):
        choose(per_system, ["resumable-stream"], 2)
    with pytest.raises(PlotError, match="pick one of the workloads"):
        systems_of(data, None)
    with pytest.raises(PlotError, match="no system"):
        choose(per_system, ["baseline"], None)


def test_streams_output_single_run_and_runs() -> None:
    assert systems_of(run(4.0), None)[1] == {"redis": [run(4.0)]}
    summary = {"workload": "b", "backend": "redis", "runs": [run(4.0), run(2.0)]}
    workload, per_system = systems_of(summary, None)
    assert workload == "b"
    # Two runs: the lower middle of the sorted p99s (2.0) is run 2.
    assert [c.number for c in choose(per_system, [], None)] == [2]
    with pytest.raises(PlotError, match="holds workload b"):
        systems_of(summary, "m")


def test_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra is not installed")
    source = tmp_path / "b.json"
    source.write_text(json.dumps({"b": {"chatscale": [run(9.0)], "resumable-stream": [run(3.0)]}}))
    assert main([str(source), "--log"]) == 0
    out = tmp_path / "b-b.png"
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(source), "--system", "nope"]) == 2
