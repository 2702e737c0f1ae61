"""Run the streams workloads on every system, alternating, and print a table of medians.

    .venv/bin/python bench/run_all.py [--workloads a,b,b100,c,m] [--runs 3] [--out FILE]

Systems: ``baseline`` (plain redis-py, bench/streams.py), ``resumable-stream`` (npm, Vercel;
bench/node/resumable_stream_bench.mjs) and ``chatscale`` (bench/streams.py --backend redis),
plus ``memory`` (``--with-memory``) and the harness floor ``queue`` (``--with-queue``).
Each run is a fresh process; the systems take turns (run 1 of each, then run 2 of each...)
against one private ``redis-server`` so that a noisy neighbour hurts them alike. Medians
and ratios are printed as markdown; ``--out`` keeps every run as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from bench._common import WORKLOADS, PrivateRedis, median  # noqa: E402

NODE_DIR = ROOT / "bench" / "node"
SYSTEMS = ("baseline", "resumable-stream", "chatscale")


def _ensure_node_modules() -> None:
    if (NODE_DIR / "node_modules" / "resumable-stream").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not on PATH: install Node 20+ for the resumable-stream baseline")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
    )


def _command(
    system: str, workload: str, url: str, scale: float, loop: str, gc: str, extra: list[str]
) -> list[str]:
    if system == "resumable-stream":
        node = shutil.which("node") or "node"
        script = str(NODE_DIR / "resumable_stream_bench.mjs")
        return [node, script, workload, "--redis-url", url, "--scale", str(scale)]
    backend = {"chatscale": "redis"}.get(system, system)
    argv = [sys.executable, str(ROOT / "bench" / "streams.py"), workload, "--backend", backend]
    argv += ["--scale", str(scale), "--loop", loop, "--gc", gc]
    if backend in {"redis", "baseline"}:
        argv += ["--redis-url", url]
    return argv + (extra if system in {"chatscale", "memory"} else [])


def _run(argv: list[str], timeout_s: float) -> dict[str, Any]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    return result


def _flush(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"ok": len(good), "n": len(runs)}
    for name in (
        "chunks_per_s",
        "wall_s",
        "lat_p50_ms",
        "lat_p99_ms",
        "cpu_s",
        "cpu_pct",
        "peak_rss_mb",
        "redis_calls_per_chunk",
        "redis_mem_ratio",
    ):
        values = [r[name] for r in good if isinstance(r.get(name), int | float)]
        out[name] = median(values) if values else None
    kept = [r["kept_up"] for r in good if r.get("kept_up") is not None]
    out["kept_up"] = f"{sum(kept)}/{len(kept)}" if kept else None
    out["errors"] = [r["error"] for r in runs if "error" in r]
    return out


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "–"
    return f"{ours / theirs:.2f}x"


def table(results: dict[str, dict[str, list[dict[str, Any]]]], systems: list[str]) -> str:
    """Markdown: one row of medians per workload and system, then chatscale's ratios."""
    lines = [
        "| workload | system | runs ok | chunks/s | wall s | p50 ms | p99 ms | CPU s | CPU % "
        "| peak RSS MB | Redis cmds/chunk | kept up | Redis mem / text |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, per_system in results.items():
        for system in systems:
            m = _medians(per_system.get(system, []))
            lines.append(
                f"| {workload} | {system} | {m['ok']}/{m['n']} | {_fmt(m['chunks_per_s'], 0)} "
                f"| {_fmt(m['wall_s'], 3)} | {_fmt(m['lat_p50_ms'], 2)} "
                f"| {_fmt(m['lat_p99_ms'], 2)} | {_fmt(m['cpu_s'], 2)} | {_fmt(m['cpu_pct'])} "
                f"| {_fmt(m['peak_rss_mb'])} | {_fmt(m['redis_calls_per_chunk'], 3)} "
                f"| {_fmt(m['kept_up'])} | {_fmt(m['redis_mem_ratio'], 2)} |"
            )
    if "chatscale" in systems:
        lines += [
            "",
            "| workload | vs | chunks/s ratio | p99 ratio | CPU s ratio |",
            "|---|---|---|---|---|",
        ]
        for workload, per_system in results.items():
            ours = _medians(per_system.get("chatscale", []))
            for other in ("baseline", "resumable-stream"):
                if other not in systems:
                    continue
                theirs = _medians(per_system.get(other, []))
                lines.append(
                    f"| {workload} | {other} "
                    f"| {_ratio(ours['chunks_per_s'], theirs['chunks_per_s'])} "
                    f"| {_ratio(ours['lat_p99_ms'], theirs['lat_p99_ms'])} "
                    f"| {_ratio(ours['cpu_s'], theirs['cpu_s'])} |"
                )
    errors = [
        f"- {w} / {s}: {e}"
        for w, per_system in results.items()
        for s, runs in per_system.items()
        for e in _medians(runs)["errors"]
    ]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every workload on every system ``--runs`` times, alternating; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workloads", default="a,b,b100,c,m")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--with-memory", action="store_true", help="also chatscale in memory")
    parser.add_argument(
        "--with-queue", action="store_true", help="also the harness floor (asyncio.Queue)"
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--gc",
        choices=("default", "tuned"),
        default="default",
        help="garbage collector of every Python system (tuned: as chatscale serve sets it)",
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    parser.add_argument("--out", type=Path, help="write every run as JSON here")
    parser.add_argument(
        "--chatscale-arg", action="append", default=[], help="extra argument for streams.py"
    )
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.with_memory:
        systems.append("memory")
    if args.with_queue:
        systems.append("queue")
    bad = [s for s in systems if s not in (*SYSTEMS, "memory", "queue")]
    if unknown or bad or args.runs < 1:
        raise SystemExit(f"unknown workloads {unknown} or systems {bad}, or --runs < 1")
    if "resumable-stream" in systems:
        _ensure_node_modules()
    server: PrivateRedis | None = None
    url = args.redis_url
    if url is None:
        server = PrivateRedis()
        server.start()
        url = server.url
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for workload in workloads:
            ideal = WORKLOADS[workload].ideal_s or 0.0
            per_system = results.setdefault(workload, {})
            for run in range(args.runs):
                for system in systems:
                    if server is not None:
                        _flush(url)  # a private server: every run starts from an empty one
                    argv_ = _command(
                        system, workload, url, args.scale, args.loop, args.gc, args.chatscale_arg
                    )
                    started = time.monotonic()
                    result = _run(argv_, 400 + 5 * ideal)
                    per_system.setdefault(system, []).append(result)
                    print(
                        f"{workload} run {run + 1} {system}: "
                        f"{result.get('chunks_per_s', result.get('error'))} chunks/s "
                        f"p99 {result.get('lat_p99_ms')} ms "
                        f"({time.monotonic() - started:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if server is not None:
            server.stop()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(table(results, systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
