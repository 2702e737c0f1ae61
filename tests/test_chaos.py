"""The fault checker (``bench/chaos.py``) in its short profile: answers survive faults.

Each test runs the checker as a program (its own Redis topology and three ``chatscale
serve`` processes on loopback ports, all stopped at the end) on fixed seeds, then reads its
JSON report: every chat must be right end to end (ids 1..N once, deltas = final text =
status = stored answer, every job ended). The faults are split by what the engine
guarantees today: faults of a *dead or drained* owner, and faults of Redis or the network
that do not make a live owner look dead, must leave 0 anomalies; faults that make a live
owner look dead (SIGSTOP, a black hole, Redis paused beyond the lease) run as a known
defect (see the xfail reason) until the engine handles them.
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

#: Faults whose chats must come through untouched today.
SURVIVABLE = "kill9,sigterm,redis_restart_keep,redis_down,proxy_latency,proxy_reset"
#: Faults that make a live owner look dead (a takeover of a job its owner still produces).
LIVE_OWNER_LOOKS_DEAD = "sigstop,proxy_blackhole,redis_pause"

ZOMBIE_STORES = (
    "engine defect: after a takeover of a job whose owner was only paused (SIGSTOP, a black "
    "hole, Redis paused beyond STREAM_LEASE_TTL), the old owner's producer that completed "
    "locally before it learned it was fenced keeps status COMPLETE, so chat.py's "
    "_record_local stores *its* text in the conversation (stored_mismatch: the stored "
    "answer differs from the final event and the status); such takeovers are also needless"
)

FAILOVER_LOSES_STREAMS = (
    "engine defect (since d2a267a): after a SENTINEL FAILOVER every running chat ends with an "
    'id-less \'error {"message":"stream not found"}\' frame, while /status still says '
    "running at an older event and the stored answer is 'done' with the whole text "
    "(final_not_done, id_missing, status_mismatch, text_diverged; needless takeovers too)"
)


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
    assert all(s["answer_tokens"] > 0 for s in report["schedules"])
    assert all(f["error"] == "" for s in report["schedules"] for f in s["faults"])


def test_standalone_survivable_faults(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "standalone", "--schedules", "3", "--seed", "11",
        "--faults", SURVIVABLE,
    )  # fmt: skip
    _assert_clean(report, 3)
    assert report["unexpected_keys_without_ttl"] == {}


@pytest.mark.sentinel
@pytest.mark.xfail(reason=FAILOVER_LOSES_STREAMS, strict=False)
def test_sentinel_failover(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "sentinel", "--schedules", "1", "--seed", "21",
        "--faults", "sentinel_failover",
    )  # fmt: skip
    _assert_clean(report, 1)


@pytest.mark.xfail(reason=ZOMBIE_STORES, strict=False)
def test_standalone_live_owner_looks_dead(tmp_path: Path) -> None:
    report = _chaos(
        tmp_path, "--topology", "standalone", "--schedules", "2", "--seed", "31",
        "--faults", LIVE_OWNER_LOOKS_DEAD,
    )  # fmt: skip
    _assert_clean(report, 2)
