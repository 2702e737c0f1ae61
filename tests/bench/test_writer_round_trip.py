"""Smoke test: bench/writer_round_trip.py measures every way and keeps its run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "writer_round_trip.py"


@pytest.mark.timeout(60)
def test_every_way_is_measured_and_kept(redis_standalone: object, tmp_path: Path) -> None:
    out = tmp_path / "rt.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--calls", "40", "--rounds", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())["result"]
    assert set(result["cpu_us_per_round_trip"]) == {"client_task_wait", "client", "line"}
    assert all(len(runs) == 2 and min(runs) > 0 for runs in result["runs"].values())
