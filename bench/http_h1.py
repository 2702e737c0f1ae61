"""Workload h1: 10,000 concurrent idle SSE connections held on one ``chatscale serve``.

    .venv/bin/python bench/http_h1.py [--connections 10000] [--hold 60]

Opens ``--connections`` event streams (``GET /api/events``, each its own session) in batches,
holds them ``--hold`` seconds, then checks that every one is still open and received its
heartbeats (one every 15 s). Reports the server's peak RSS (VmHWM), its RSS per connection
over the idle baseline, and its CPU use while holding. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_client import (  # noqa: E402
    SSE,
    add_out_option,
    keep_result,
    open_sse,
    raise_nofile,
    start_server,
)

HEARTBEAT_S = 15


async def _hold(sse: SSE, state: dict[str, int]) -> None:
    try:
        async for _ in sse.events():
            pass
    except (OSError, asyncio.IncompleteReadError):
        pass
    state["closed"] += 1


async def run(connections: int, hold_s: float, batch: int) -> dict[str, object]:
    limit = raise_nofile(connections + 2048)
    if limit < connections + 100:
        raise SystemExit(f"open-files limit {limit} is too low for {connections} connections")
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server({}, Path(tmp) / "serve.log")
        try:
            idle_rss = server.rss_mb(peak=False)
            streams: list[SSE] = []
            state = {"closed": 0}
            tasks: list[asyncio.Task[None]] = []
            began = time.monotonic()
            for start in range(0, connections, batch):
                opened = await asyncio.gather(
                    *(
                        open_sse("127.0.0.1", server.port, "/api/events")
                        for _ in range(min(batch, connections - start))
                    )
                )
                for sse in opened:
                    if sse.status != 200:
                        raise SystemExit(f"event stream refused: HTTP {sse.status}")
                    streams.append(sse)
                    tasks.append(asyncio.create_task(_hold(sse, state)))
            opened_s = time.monotonic() - began
            cpu_before = server.cpu_s()
            await asyncio.sleep(hold_s)
            cpu_hold = server.cpu_s() - cpu_before
            alive = connections - state["closed"]
            beats = [s.heartbeats for s in streams]
            result: dict[str, object] = {
                "workload": "h1",
                "connections": connections,
                "open_s": round(opened_s, 2),
                "hold_s": hold_s,
                "alive_after_hold": alive,
                "heartbeats_min": min(beats),
                "heartbeats_expected": int(hold_s // HEARTBEAT_S),
                "server_rss_idle_mb": round(idle_rss, 1),
                "server_rss_peak_mb": round(server.rss_mb(), 1),
                "server_rss_now_mb": round(server.rss_mb(peak=False), 1),
                "kb_per_connection": round(
                    (server.rss_mb(peak=False) - idle_rss) * 1024 / connections, 1
                ),
                "server_cpu_pct_while_idle": round(100 * cpu_hold / hold_s, 1),
                "all_connected": alive == connections and min(beats) >= int(hold_s // HEARTBEAT_S),
            }
            for sse in streams:
                sse.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return result
        finally:
            server.stop()


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=500)
    add_out_option(parser)
    args = parser.parse_args()
    if args.connections < 1 or args.hold <= 0 or args.batch < 1:
        parser.error("--connections, --hold and --batch must be positive")
    result = asyncio.run(run(args.connections, args.hold, args.batch))
    options = {"connections": args.connections, "hold": args.hold, "batch": args.batch}
    print(json.dumps(result, indent=2))
    print(f"kept in {keep_result('http-h1', options, result, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
