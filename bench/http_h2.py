"""Workload h2: 1,000 concurrent chats through the HTTP API, demo model at 50 tokens/s,
200 tokens each, on one ``chatscale serve`` (memory backends).

    .venv/bin/python bench/http_h2.py [--chats 1000] [--tokens 200] [--rate 50] [--ramp 2]
        [--provider demo|openai] [--store memory|sqlite] [--loop auto|asyncio|uvloop]
        [--keep-alive] [--profile FILE]

``--provider openai`` serves the chats with the OpenAI-compatible provider streaming from
``bench/fake_openai.py`` (its own process, same pace and length, words varying per request),
so the SDK's per-chunk work is part of the server's cost; the upstream's CPU is reported
apart (``upstream_cpu_s``), never as the server's. Its token *n* is sent at the upstream
request's arrival + *n*/rate, so the latency also holds the job's way to the upstream.
``--store memory`` (the default) keeps conversations and sessions in memory, as the other
backends; ``--store sqlite`` uses ``serve``'s default SQLite file (in a temporary directory).
``--loop`` sets SERVER_EVENT_LOOP; ``--profile FILE`` records the server with py-spy (raw
collapsed stacks, 250 Hz, GIL holders only) while the chats run.

``--keep-alive`` sends a client's JSON requests on one kept-alive connection, as a browser
does, instead of a connection each (``Connection: close``, the default). Each client: ``POST
/api/chat`` (its own session), ``GET .../status`` for the job's start
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
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_client import (  # noqa: E402
    KeptAlive,
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


async def one_chat(
    port: int,
    index: int,
    delay: float,
    rate: float,
    tokens: int,
    model: str | None = None,
    keep_alive: bool = False,
) -> Chat:
    chat = Chat()
    await asyncio.sleep(delay)
    t0 = time.monotonic()
    kept = KeptAlive("127.0.0.1", port) if keep_alive else None

    async def ask(
        method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, list[str]]:
        if kept is not None:
            return await kept.request(method, path, payload, headers)
        return await request("127.0.0.1", port, method, path, payload, headers)

    try:
        # A session first, as the web page has: brand-new sessions are limited by address.
        _, _, cookies = await ask("GET", "/api/chat/active")
        cookie = {"Cookie": "; ".join(cookies)}
        status, started, _ = await ask(
            "POST",
            "/api/chat",
            {"message": f"benchmark chat {index}", **({"model": model} if model else {})},
            cookie,
        )
        if status != 202:
            chat.error = f"POST {status}: {started}"
            return chat
        stream_id = started["stream_id"]
        status, info, _ = await ask("GET", f"/api/chat/stream/{stream_id}/status", headers=cookie)
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
    finally:
        if kept is not None:
            kept.close()
    if chat.final == "done" and chat.tokens != tokens:
        chat.error = f"{chat.tokens} tokens instead of {tokens}"
    return chat


@dataclass
class Setup:
    """How the server runs: its model's provider, where it stores, its event loop."""

    provider: str = "demo"
    store: str = "memory"
    loop: str | None = None
    profile: Path | None = None
    #: The client's JSON requests on one kept-alive connection (as a browser's), not one
    #: connection each.
    keep_alive: bool = False


def server_env(setup: Setup, tokens: int, rate: float, tmp: Path) -> dict[str, str]:
    """The server's environment for ``setup``."""
    env = {
        "DEMO_TOKENS_PER_SECOND": str(rate),
        "DEMO_RESPONSE_TOKENS": str(tokens),
        "CHAT_RATE_LIMIT": "1000/second",
        # Every chat is a new visitor from 127.0.0.1, and anonymous visitors share the
        # limits of their address.
        "CHAT_CONCURRENCY_LIMIT": "0",
        "SESSION_CREATE_LIMIT": "100000/minute",
    }
    if setup.store == "memory":
        env["FORCED_IN_MEMORY_CACHE_NAMESPACES"] = "CONFIG_STORE,APP_CONFIG,CONVERSATIONS"
    else:
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp / 'h2.db'}"
    if setup.loop is not None:
        env["SERVER_EVENT_LOOP"] = setup.loop
    return env


def start_upstream(rate: float, tokens: int) -> tuple[subprocess.Popen[str], int]:
    """``bench/fake_openai.py`` in its own process, and its port."""
    popen = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "fake_openai.py"), "--rate", str(rate),
         "--tokens", str(tokens)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert popen.stdout is not None
    line = popen.stdout.readline()
    if not line.startswith("ready "):
        popen.kill()
        raise RuntimeError(f"the fake upstream did not start: {line!r}")
    return popen, int(line.split()[1])


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` until it is interrupted."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "-r", "250", "-f", "raw", "--gil", "--nonblocking"]
    return subprocess.Popen([*command, "-o", str(out), "--pid", str(pid)])


async def run(
    chats: int, tokens: int, rate: float, ramp: float, setup: Setup | None = None
) -> dict[str, object]:
    setup = setup or Setup()
    raise_nofile(chats * 4 + 1024)
    upstream: subprocess.Popen[str] | None = None
    spy: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(setup, tokens, rate, Path(tmp))
        model = None
        if setup.provider == "openai":
            upstream, upstream_port = start_upstream(rate, tokens)
            model = "fake-bench"
            env.update(
                OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1",
                OPENAI_MODELS=model,
                DEFAULT_MODEL=model,
            )
        try:
            server = start_server(env, Path(tmp) / "serve.log")
        except BaseException:
            if upstream is not None:
                upstream.terminate()
                upstream.wait(10)
            raise
        try:
            if setup.profile is not None:
                spy = start_profile(server.popen.pid, setup.profile)
            rng = random.Random(1)
            client_cpu = resource.getrusage(resource.RUSAGE_SELF)
            upstream_before = process_cpu_s(upstream.pid) if upstream else 0.0
            load_before = os.getloadavg()[0]
            cpu_before, began = server.cpu_s(), time.monotonic()
            results = await asyncio.gather(
                *(
                    one_chat(
                        server.port,
                        i,
                        rng.uniform(0, ramp),
                        rate,
                        tokens,
                        model,
                        setup.keep_alive,
                    )
                    for i in range(chats)
                )
            )
            wall = time.monotonic() - began
            cpu = server.cpu_s() - cpu_before
            upstream_cpu = process_cpu_s(upstream.pid) - upstream_before if upstream else None
            used = resource.getrusage(resource.RUSAGE_SELF)
            client_s = used.ru_utime - client_cpu.ru_utime + used.ru_stime - client_cpu.ru_stime
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            server.stop()
            if upstream is not None:
                upstream.terminate()
                upstream.wait(10)
    latencies = [x for r in results for x in r.latencies_ms]
    errors = [r.error for r in results if r.error]
    return {
        "workload": "h2",
        "provider": setup.provider,
        "store": setup.store,
        "loop": setup.loop or "default",
        "keep_alive": setup.keep_alive,
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
        "server_cpu_s": round(cpu, 2),
        "server_cpu_pct": round(100 * cpu / wall, 1),
        # Robust against a busy machine: CPU the server spent per token it delivered.
        "server_cpu_us_per_token": round(1e6 * cpu / max(1, sum(r.tokens for r in results)), 1),
        "client_cpu_pct": round(100 * client_s / wall, 1),
        "upstream_cpu_s": None if upstream_cpu is None else round(upstream_cpu, 2),
        "load_average_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--ramp", type=float, default=2.0)
    parser.add_argument("--provider", choices=("demo", "openai"), default="demo")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default=None)
    parser.add_argument("--profile", type=Path, help="record the server with py-spy here")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="each client's JSON requests on one kept-alive connection, as a browser's",
    )
    add_out_option(parser)
    args = parser.parse_args()
    if args.chats < 1 or args.tokens < 1 or args.rate <= 0 or args.ramp < 0:
        parser.error("--chats, --tokens and --rate must be positive, --ramp not negative")
    setup = Setup(args.provider, args.store, args.loop, args.profile, args.keep_alive)
    result = asyncio.run(run(args.chats, args.tokens, args.rate, args.ramp, setup))
    options = {
        "chats": args.chats,
        "tokens": args.tokens,
        "rate": args.rate,
        "ramp": args.ramp,
        "keep_alive": args.keep_alive,
        "provider": args.provider,
        "store": args.store,
        "loop": args.loop,
    }
    print(json.dumps(result, indent=2))
    print(f"kept in {keep_result('http-h2', options, result, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
