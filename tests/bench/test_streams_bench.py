"""Smoke tests: the streams benchmark runs end to end and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench._common import ChunkError, Workload, make_chunk, percentile, read_stamps
from bench.streams import main as streams_main

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "streams.py"
FIELDS = {
    "workload",
    "backend",
    "total_chunks",
    "deliveries",
    "wall_s",
    "chunks_per_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "cpu_s",
    "cpu_pct",
    "peak_rss_mb",
    "redis_calls_per_chunk",
    "kept_up",
}


def bench(*args: str, expect_ok: bool = True) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode == 0) is expect_ok, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_live(result: dict[str, Any], workload: str, backend: str) -> None:
    assert result.keys() >= FIELDS
    assert (result["workload"], result["backend"]) == (workload, backend)
    assert result["total_chunks"] == result["streams"] * result["chunks_per_stream"] > 0
    assert result["deliveries"] == result["total_chunks"] * result["consumers_per_stream"]
    assert result["wall_s"] > 0 and result["chunks_per_s"] > 0
    assert 0 <= result["lat_p50_ms"] <= result["lat_p99_ms"] <= result["lat_max_ms"]
    assert result["cpu_s"] >= 0 and result["peak_rss_mb"] > 0
    timeline = result["timeline"]
    assert sum(timeline["n"]) == result["deliveries"]
    assert max(m for m in timeline["max_ms"] if m is not None) == result["lat_max_ms"]
    assert len(result["loop_lag"]["t_s"]) == len(result["loop_lag"]["lag_ms"])
    assert set(result["gc_pauses"]["gen"]) <= {0, 1, 2}


def test_memory_backend_runs_workload_a() -> None:
    result = bench("a", "--backend", "memory", "--scale", "0.01")
    check_live(result, "a", "memory")
    assert result["redis_calls_per_chunk"] is None


def test_redis_backend_runs_workload_a(redis_standalone: Any) -> None:
    url = redis_standalone.url()
    result = bench("a", "--backend", "redis", "--scale", "0.01", "--redis-url", url)
    check_live(result, "a", "redis")
    assert result["redis_calls_per_chunk"] > 0
    assert result["versions"]["redis_server"]


def test_baseline_counts_two_commands_per_chunk(redis_standalone: Any) -> None:
    url = redis_standalone.url()
    result = bench("a", "--backend", "baseline", "--scale", "0.01", "--redis-url", url)
    check_live(result, "a", "baseline")
    # One XADD per chunk and (at least nearly) one XREAD per chunk, plus connection set-up.
    assert 1.5 <= result["redis_calls_per_chunk"] <= 4
    assert result["redis_commands"]["xadd"] == result["total_chunks"]


def test_resume_reports_redis_memory(redis_standalone: Any) -> None:
    url = redis_standalone.url()
    result = bench("c", "--backend", "baseline", "--scale", "0.01", "--redis-url", url)
    assert result["deliveries"] == result["total_chunks"] == 200
    assert result["lat_p99_ms"] is None and result["kept_up"] is None
    assert result["redis_keys"] == 1 and result["redis_mem_ratio"] > 1


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = streams_main(list(args))
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, result


def test_paced_workload_reports_kept_up(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = in_process(capsys, "b100", "--backend", "memory", "--scale", "0.05")
    assert code == 0
    check_live(result, "b100", "memory")
    assert result["ideal_s"] == pytest.approx(10 / 50)
    assert isinstance(result["kept_up"], bool)


def test_bad_input_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = in_process(capsys, "a", "--backend", "memory", "--scale", "0")
    assert code == 1 and "--scale" in result["error"]
    code, result = in_process(capsys, "a", "--backend", "memory", "--setting", "stream_lease_ttl=5")
    assert code == 1 and "STREAM_LEASE_TTL" in result["error"]
    with pytest.raises(SystemExit):
        streams_main(["zz"])


def test_chunks_round_trip_and_reject_garbage() -> None:
    text = make_chunk(12) + make_chunk(1_234_567_890_123)
    assert len(text) == 32
    assert read_stamps(text) == [12, 1_234_567_890_123]
    for bad in ("0000000000012to", "000000000001Xtok", "000000000001xyz0"):
        with pytest.raises(ChunkError):
            read_stamps(bad)


def test_percentile_and_scaling() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    small = Workload("b", 500, 200, 50.0, 1, False).scaled(0.01)
    assert (small.streams, small.chunks, small.ideal_s) == (5, 2, 2 / 50)
    with pytest.raises(ValueError, match="scale"):
        Workload("a", 1, 1, None, 1, False).scaled(1.5)
