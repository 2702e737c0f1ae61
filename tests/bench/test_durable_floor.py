"""Smoke test: bench/durable_floor.py serves and measures its variants, and keeps its run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "durable_floor.py"


@pytest.mark.timeout(120)
def test_variants_are_measured_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    argv = [sys.executable, str(SCRIPT), "--seconds", "0.5", "--runs", "1", "--writers", "4"]
    done = subprocess.run(
        [*argv, "--variants", "bare,protocol", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())["result"]["summary"]
    assert set(summary) == {"bare", "protocol"}
    assert all(v["ops_per_s"] > 0 and v["server_cpu_us_per_op"] > 0 for v in summary.values())


def test_an_unknown_variant_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--variants", "bare,nginx"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "unknown variants ['nginx']" in done.stderr
