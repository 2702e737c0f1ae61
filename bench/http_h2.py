"""Workload h2: 1,000 concurrent chats through the HTTP API, demo model at 50 tokens/s,
200 tokens each, on one ``chatscale serve`` (memory backends).

    .venv/bin/python bench/http_h2.py [--chats 1000] [--tokens 200] [--rate 50] [--ramp 2]

Each client: ``POST /api/chat`` (its own session), ``GET .../status`` for the job's start
time, then the event stream. The demo model emits token n of a job at ``created_at + n/rate``
(a fixed schedule), so a token's latency is the client's wall clock when it arrives minus
that instant; it includes the model task's start, coalescing, the event log, fan-out,
encoding and the socket. Tokens produced before the client's stream was open are replays,
counted apart. Each client first gets a session (``GET /api/chat/active``),
as the web page does. Chats start uniformly over ``--ramp`` seconds. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_client import (  # noqa: E402
    add_out_option,
    keep_result,
    open_sse,
    percentile,
    raise_nofile,
    request,
    start_server,
)


@dataclass
class Chat:
    """What one client measured."""

    latencies_ms: list[float] = field(default_factory=list)
    replayed: int = 0
    tokens: int = 0
    final: str = ""
    error: str = ""
    #: From the first request to the stream's response head.
    setup_ms: float = 0.0


async def one_chat(port: int, index: int, delay: float, rate: float, tokens: int) -> Chat:
    chat = Chat()
    await asyncio.sleep(delay)
    t0 = time.monotonic()
    try:
        # A session first, as the web page has: brand-new sessions are limited by address.
        _, _, cookies = await request("127.0.0.1", port, "GET", "/api/chat/active")
        cookie = {"Cookie": "; ".join(cookies)}
        status, started, _ = await request(
            "127.0.0.1",
            port,
            "POST",
            "/api/chat",
            {"message": f"benchmark chat {index}"},
            cookie,
        )
        if status != 202:
            chat.error = f"POST {status}: {started}"
            return chat
        stream_id = started["stream_id"]
        status, info, _ = await request(
            "127.0.0.1", port, "GET", f"/api/chat/stream/{stream_id}/status", headers=cookie
        )
        created = float(info["created_at"])
        sse = await open_sse("127.0.0.1", port, f"/api/chat/stream/{stream_id}", cookie)
        connected = time.time()
        chat.setup_ms = (time.monotonic() - t0) * 1000
        try:
            async for _, kind, data in sse.events():
                now = time.time()
                if kind == "delta":
                    count = json.loads(data)["text"].count(" ")
                    for n in range(chat.tokens + 1, chat.tokens + count + 1):
                        produced = created + n / rate
                        if produced < connected:
                            chat.replayed += 1
                        else:
                            chat.latencies_ms.append((now - produced) * 1000)
                    chat.tokens += count
                elif kind in ("done", "aborted", "error"):
                    chat.final = kind
                    break
        finally:
            sse.close()
    except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
        chat.error = repr(exc)
    if chat.final == "done" and chat.tokens != tokens:
        chat.error = f"{chat.tokens} tokens instead of {tokens}"
    return chat


async def run(chats: int, tokens: int, rate: float, ramp: float) -> dict[str, object]:
    raise_nofile(chats * 4 + 1024)
    env = {
        "DEMO_TOKENS_PER_SECOND": str(rate),
        "DEMO_RESPONSE_TOKENS": str(tokens),
        "CHAT_RATE_LIMIT": "1000/second",
        # Every chat is a new visitor from 127.0.0.1, and anonymous visitors share the
        # limits of their address.
        "CHAT_CONCURRENCY_LIMIT": "0",
        "SESSION_CREATE_LIMIT": "100000/minute",
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(env, Path(tmp) / "serve.log")
        try:
            rng = random.Random(1)
            client_cpu = resource.getrusage(resource.RUSAGE_SELF)
            cpu_before, began = server.cpu_s(), time.monotonic()
            results = await asyncio.gather(
                *(
                    one_chat(server.port, i, rng.uniform(0, ramp), rate, tokens)
                    for i in range(chats)
                )
            )
            wall = time.monotonic() - began
            cpu = server.cpu_s() - cpu_before
            used = resource.getrusage(resource.RUSAGE_SELF)
            client_s = used.ru_utime - client_cpu.ru_utime + used.ru_stime - client_cpu.ru_stime
        finally:
            server.stop()
    latencies = [x for r in results for x in r.latencies_ms]
    errors = [r.error for r in results if r.error]
    return {
        "workload": "h2",
        "chats": chats,
        "tokens_per_chat": tokens,
        "rate_tokens_per_s": rate,
        "ramp_s": ramp,
        "completed": sum(1 for r in results if r.final == "done" and not r.error),
        "errors": errors[:5],
        "tokens_measured": len(latencies),
        "tokens_replayed": sum(r.replayed for r in results),
        "latency_ms_p50": round(percentile(latencies, 50), 2) if latencies else None,
        "latency_ms_p90": round(percentile(latencies, 90), 2) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 2) if latencies else None,
        "latency_ms_max": round(max(latencies), 2) if latencies else None,
        "setup_ms_p50": round(percentile([r.setup_ms for r in results], 50), 1),
        "setup_ms_p99": round(percentile([r.setup_ms for r in results], 99), 1),
        "wall_s": round(wall, 2),
        "ideal_wall_s": round(ramp + tokens / rate, 2),
        "server_cpu_pct": round(100 * cpu / wall, 1),
        # Robust against a busy machine: CPU the server spent per token it delivered.
        "server_cpu_us_per_token": round(1e6 * cpu / max(1, sum(r.tokens for r in results)), 1),
        "client_cpu_pct": round(100 * client_s / wall, 1),
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--ramp", type=float, default=2.0)
    add_out_option(parser)
    args = parser.parse_args()
    if args.chats < 1 or args.tokens < 1 or args.rate <= 0 or args.ramp < 0:
        parser.error("--chats, --tokens and --rate must be positive, --ramp not negative")
    result = asyncio.run(run(args.chats, args.tokens, args.rate, args.ramp))
    options = {"chats": args.chats, "tokens": args.tokens, "rate": args.rate, "ramp": args.ramp}
    print(json.dumps(result, indent=2))
    print(f"kept in {keep_result('http-h2', options, result, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
