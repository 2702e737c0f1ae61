"""Smoke test: bench/command_cpu.py measures both packers on every command kind and keeps
its run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "command_cpu.py"


@pytest.mark.timeout(60)
def test_both_packers_are_measured_and_kept(redis_standalone: object, tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "2", "--commands", "200", "--tasks", "10",
         "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())["result"]
    assert len(result["summary"]) == 4
    for kind in result["summary"].values():
        assert kind["hiredis_us"] > 0 and kind["redis_py_us"] > 0
    for runs in result["runs_us"].values():
        assert set(runs) == {"hiredis", "redis-py"}
        assert all(len(costs) == 2 and min(costs) > 0 for costs in runs.values())
