"""Workload h3: h2 on three ``chatscale serve`` instances with Redis behind HAProxy, every
client reconnecting (through the load balancer, ``balance random``) every 2 seconds.

    .venv/bin/python bench/http_h3.py [--chats 1000] [--tokens 200] [--rate 50] [--every 2]

Needs ``haproxy`` and ``redis-server`` (a private Redis is started on a free loopback port).
Each client resumes with ``Last-Event-ID`` and checks that event ids advance by exactly one
and that its text equals the final ``done`` text and has every token: duplicated or missing
text is counted (must be 0). Latency as in h2 (the demo model's fixed schedule). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import PrivateRedis  # noqa: E402
from bench.http_client import (  # noqa: E402
    add_out_option,
    keep_result,
    open_sse,
    percentile,
    raise_nofile,
    request,
)
from tests.server.rig import Rig  # noqa: E402


@dataclass
class Chat:
    """What one client measured and checked."""

    latencies_ms: list[float] = field(default_factory=list)
    replayed: int = 0
    tokens: int = 0
    text: str = ""
    final_text: str = ""
    final: str = ""
    bad_ids: int = 0
    reconnects: int = 0
    error: str = ""
    stream_id: str = ""
    resumed_at: list[int] = field(default_factory=list)


async def one_chat(
    port: int, index: int, delay: float, rate: float, every: float, deadline: float
) -> Chat:
    chat = Chat()
    rng = random.Random(index)
    await asyncio.sleep(delay)
    body = {"message": f"benchmark chat {index}", "client_request_id": f"bench-{index}"}
    cookie: dict[str, str] = {}
    while True:  # retried with the same client_request_id: idempotent
        try:
            if not cookie:  # a session first, as the web page has
                _, _, cookies = await request("127.0.0.1", port, "GET", "/api/chat/active")
                cookie = {"Cookie": "; ".join(cookies)}
            status, started, _ = await request("127.0.0.1", port, "POST", "/api/chat", body, cookie)
            if status == 202:
                break
        except (OSError, asyncio.IncompleteReadError):
            pass
        if time.monotonic() > deadline:
            chat.error = "could not start"
            return chat
        await asyncio.sleep(0.2)
    stream_id = started["stream_id"]
    chat.stream_id = stream_id
    created: float | None = None
    last = 0
    connected = time.time()
    while not chat.final and time.monotonic() < deadline:
        try:
            if created is None:
                status, info, _ = await request(
                    "127.0.0.1", port, "GET", f"/api/chat/stream/{stream_id}/status", headers=cookie
                )
                if status != 200:
                    await asyncio.sleep(0.1)
                    continue
                created = float(info["created_at"])
            headers = {**cookie, **({"Last-Event-ID": str(last)} if last else {})}
            sse = await open_sse("127.0.0.1", port, f"/api/chat/stream/{stream_id}", headers)
            chat.reconnects += 1
            chat.resumed_at.append(last if sse.status == 200 else -last)
            cut = time.monotonic() + every * rng.uniform(0.75, 1.25)
            if sse.status != 200:
                sse.close()
                await asyncio.sleep(0.1)
                continue
            try:
                async for event_id, kind, data in sse.events():
                    if kind == "reconnect":
                        break
                    now = time.time()
                    number = int(event_id)
                    if number != last + 1:
                        chat.bad_ids += 1
                    last = number
                    if kind == "delta":
                        text = json.loads(data)["text"]
                        count = text.count(" ")
                        for n in range(chat.tokens + 1, chat.tokens + count + 1):
                            produced = created + n / rate
                            if produced < connected:
                                chat.replayed += 1
                            else:
                                chat.latencies_ms.append((now - produced) * 1000)
                        chat.tokens += count
                        chat.text += text
                    elif kind in ("done", "aborted", "error"):
                        chat.final = kind
                        chat.final_text = json.loads(data).get("text", "")
                        break
                    if time.monotonic() >= cut:
                        break
            finally:
                sse.close()
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
            pass
    if not chat.final:
        chat.error = "no final event before the deadline"
    return chat


async def run(
    chats: int, tokens: int, rate: float, ramp: float, every: float, logs: str | None = None
) -> dict[str, object]:
    raise_nofile(chats * 8 + 4096)
    env = {
        "DEMO_TOKENS_PER_SECOND": str(rate),
        "DEMO_RESPONSE_TOKENS": str(tokens),
        "CHAT_RATE_LIMIT": "1000/second",
        "REDIS_MAX_CONNECTIONS": "1000",
    }
    with tempfile.TemporaryDirectory() as tmp, PrivateRedis() as redis_server:
        workdir = Path(logs) if logs else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rig = Rig(redis_server.url, workdir, env, balance="random")
        rig.start()
        try:
            procs = [s.proc for s in rig.servers]
            cpu_before = [_cpu(p.pid) for p in procs if p is not None]
            began = time.monotonic()
            deadline = began + ramp + tokens / rate + 60
            rng = random.Random(1)
            results = await asyncio.gather(
                *(
                    one_chat(rig.port, i, rng.uniform(0, ramp), rate, every, deadline)
                    for i in range(chats)
                )
            )
            wall = time.monotonic() - began
            cpu = sum(_cpu(p.pid) for p in procs if p is not None) - sum(cpu_before)
        finally:
            rig.stop()
    latencies = [x for r in results for x in r.latencies_ms]
    complete = [r for r in results if r.final == "done"]
    wrong = [r for r in complete if r.text != r.final_text or r.tokens != tokens or r.bad_ids]
    return {
        "workload": "h3",
        "instances": 3,
        "chats": chats,
        "tokens_per_chat": tokens,
        "rate_tokens_per_s": rate,
        "reconnect_every_s": every,
        "completed": len(complete),
        "errors": [r.error for r in results if r.error][:5],
        "chats_with_duplicated_or_missing_text": len(wrong),
        "wrong_examples": [_difference(r) for r in wrong[:3]],
        "out_of_order_or_repeated_event_ids": sum(r.bad_ids for r in results),
        "reconnects": sum(r.reconnects for r in results),
        "tokens_measured": len(latencies),
        "tokens_replayed": sum(r.replayed for r in results),
        "latency_ms_p50": round(percentile(latencies, 50), 2) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 2) if latencies else None,
        "wall_s": round(wall, 2),
        "ideal_wall_s": round(ramp + tokens / rate, 2),
        "servers_cpu_pct": round(100 * cpu / wall, 1),
    }


def _difference(chat: Chat) -> dict[str, object]:
    """Where a chat's streamed text and its final text part."""
    at = next(
        (i for i, (x, y) in enumerate(zip(chat.text, chat.final_text, strict=False)) if x != y),
        min(len(chat.text), len(chat.final_text)),
    )
    return {
        "tokens": chat.tokens,
        "streamed_chars": len(chat.text),
        "final_chars": len(chat.final_text),
        "first_difference_at": at,
        "streamed_there": chat.text[max(0, at - 40) : at + 40],
        "final_there": chat.final_text[max(0, at - 40) : at + 40],
        "reconnects": chat.reconnects,
        "stream_id": chat.stream_id,
        "resumed_at": chat.resumed_at,
    }


def _cpu(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--ramp", type=float, default=2.0)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--logs", help="keep the servers' and HAProxy's logs in this directory")
    add_out_option(parser)
    args = parser.parse_args()
    if min(args.chats, args.tokens) < 1 or args.rate <= 0 or args.every <= 0 or args.ramp < 0:
        parser.error("counts, --rate and --every must be positive, --ramp not negative")
    result = asyncio.run(run(args.chats, args.tokens, args.rate, args.ramp, args.every, args.logs))
    options = {
        "chats": args.chats,
        "tokens": args.tokens,
        "rate": args.rate,
        "ramp": args.ramp,
        "every": args.every,
    }
    print(json.dumps(result, indent=2))
    print(f"kept in {keep_result('http-h3', options, result, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
