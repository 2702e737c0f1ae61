"""The fault checker (``bench/chaos.py``) in its short profile: answers survive faults.

Each test runs the checker as a program (its own Redis topology and three ``chatscale
serve`` processes on loopback ports, all stopped at the end) on fixed seeds, then reads its
JSON report: every chat must be right end to end (ids 1..N once, deltas = final text =
status = stored answer, every job ended), no job may move away from an instance that no
fault touched, and no key may be left without a TTL. The long profile (200 schedules) is in
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.fixtures import REQUIRE_ENV
from tests.harness.servers import missing_tools

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"
RUN_TIMEOUT_S = 170

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 20)]

#: Faults of an instance (dead, drained, restarted).
INSTANCE_FAULTS = "kill9,sigterm,redis_restart_keep,redis_down,proxy_latency,proxy_reset"
#: Faults that made live owners look dead before heartbeats waited for steady contact.
STALLS = "sigstop,proxy_blackhole,redis_pause,redis_restart_lose"


def _chaos(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run the checker; its JSON report (the run's output is shown on failure)."""
    missing = missing_tools("redis-server", "redis-cli")
    if missing:
        message = f"the fault checker needs {', '.join(missing)}"
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    print(done.stdout[-20_000:], done.stderr[-5_000:])
    reports = sorted(tmp_path.glob("chaos-*.json"))
    assert reports, f"no report (exit {done.returncode}): {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(reports[0].read_text())
    return report


def _assert_clean(report: dict[str, Any], schedules: int) -> None:
    """Every schedule ran, its chats produced answers, and no end-to-end anomaly."""
    assert len(report["schedules"]) == schedules
    found = {
        f"seed {s['seed']}": {k: n for k, n in s["anomalies"].items() if k in report["e2e_kinds"]}
        for s in report["schedules"]
    }
    assert report["e2e_anomalies"] == 0, found
    assert [t for s in report["schedules"] for t in s["needless_takeovers"]] == []
    assert report["unexpected_keys_without_ttl"] == {}
    assert all(s["answer_tokens"] > 0 for s in report["schedules"])
    assert all(f["error"] == "" for s in report["schedules"] for f in s["faults"])


def test_standalone_instance_faults(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "standalone", "--schedules", "3", "--seed", "11",
        "--faults", INSTANCE_FAULTS,
    )  # fmt: skip
    _assert_clean(report, 3)


def test_standalone_stalls_and_data_loss(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "standalone", "--schedules", "3", "--seed", "31",
        "--faults", STALLS,
    )  # fmt: skip
    _assert_clean(report, 3)


@pytest.mark.sentinel
def test_sentinel_failover(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "sentinel", "--schedules", "1", "--seed", "21",
        "--faults", "sentinel_failover",
    )  # fmt: skip
    _assert_clean(report, 1)


@pytest.mark.cluster
def test_cluster_master_killed(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "cluster", "--schedules", "1", "--seed", "41",
        "--faults", "cluster_master_kill",
    )  # fmt: skip
    _assert_clean(report, 1)
