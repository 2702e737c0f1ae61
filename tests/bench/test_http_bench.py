"""The HTTP benchmarks (h1-h3) keep their raw results as JSON, as the streams runs do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import http_client

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Tiny runs: seconds each, only to show the run completes and its record is written.
RUNS = [
    pytest.param("h1", ["--connections", "20", "--hold", "1", "--batch", "20"], id="h1"),
    pytest.param("h2", ["--chats", "5", "--tokens", "10", "--ramp", "0.5"], id="h2"),
    pytest.param(
        "h2",
        ["--chats", "3", "--tokens", "10", "--ramp", "0.5", "--provider", "openai"],
        id="h2-openai",
    ),
    pytest.param(
        "h2",
        ["--chats", "3", "--tokens", "5", "--ramp", "0.5", "--store", "sqlite"],
        id="h2-sqlite",
    ),
    pytest.param(
        "h3", ["--chats", "5", "--tokens", "10", "--ramp", "0.5", "--every", "0.2"], id="h3"
    ),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("workload", "args"), RUNS)
def test_run_is_kept_as_json(workload: str, args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / f"http_{workload}.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kept: dict[str, Any] = json.loads(out.read_text())
    assert kept["workload"] == f"http-{workload}"
    assert kept["result"] == json.loads(done.stdout)  # what was printed, in full
    assert kept["result"]["workload"] == workload
    assert kept["options"] and kept["commit"] and kept["utc"] and kept["load_average"]
    assert str(out) in done.stderr
    if workload == "h2":
        result = kept["result"]
        assert result["completed"] == result["chats"], result["errors"]
        if "openai" in args:
            # The fake upstream served them, in a process of its own.
            assert result["provider"] == "openai" and result["upstream_cpu_s"] is not None


def test_default_place_is_bench_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(http_client, "RESULTS", tmp_path / "results")
    path = http_client.keep_result("http-h2", {"chats": 1}, {"ok": True}, None)
    assert path.parent == tmp_path / "results"
    assert path.name.startswith("http-h2-") and path.suffix == ".json"
    assert json.loads(path.read_text())["result"] == {"ok": True}
