"""Cache workloads k1-k4 (see docs/benchmarks.md, "Caches"), against plain redis-py.

    .venv/bin/python bench/cache_bench.py [--workloads k1,k2,k3,near,k4] [--runs 3]
        [--scale 1.0] [--no-cluster] [--out results.json]

Starts its own ``redis-server`` (``--save '' --appendonly no``) on a free loopback port, and
for k4 a 3-master Cluster the same way (tests.harness.servers). Every system of a workload
runs once per round, rounds alternate (run 1 of each system, then run 2...), and the
median of ``--runs`` rounds is reported, with ratios against plain redis-py measured in
the same session with the same client settings (hiredis, same pool). JSON on stdout (and
in ``--out``).

* k1: 1 task, 100,000 GET of 200-byte JSON values in one namespace. Systems: ``redis-py``
  (raw GET, bytes), ``redis-py+json`` (GET + ``json.loads``: what a user of plain redis-py
  must do to get the value back), ``chatscale`` (``Cache.get``).
* k2: 200 tasks, 1,000,000 operations, 90 % GET / 10 % SET on 1,000 keys; ops/s and p99.
* k3: k1 on a FORCED_IN_MEMORY namespace (memory backend).
* near: k1 on a NEAR_CACHE_NAMESPACES namespace (hot keys served from process memory).
* k4: clear a namespace of 100,000 keys among 1,000,000 others (other namespaces, other
  key kinds and another deployment's prefix), standalone and Cluster; reports seconds,
  the worst PING round trip seen meanwhile (is Redis blocked?) and verifies that exactly
  the namespace's keys are gone and every other key is still there.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from bench._common import PrivateRedis, median, percentile, plain_redis_py  # noqa: E402
from redis.crc import key_slot  # noqa: E402

from chatscale.cache import CacheFactory, CacheKeys, ClearOptions, clear_namespaces  # noqa: E402
from chatscale.config import Settings, load_settings  # noqa: E402
from chatscale.redis import RedisConnection, connect  # noqa: E402

PREFIX = "bench"
NS = CacheKeys.ROLES
KEYS = 1_000
VALUE: dict[str, Any] = {"id": 0, "name": "role", "permissions": ["read", "write"], "pad": ""}


def _value(i: int) -> dict[str, Any]:
    value = dict(VALUE, id=i)
    size = len(json.dumps(value, separators=(",", ":")))
    value["pad"] = "x" * (200 - size - 3)  # 200 bytes of JSON, as k1 says
    return value


def _settings(url: str, **overrides: Any) -> Settings:
    overrides.setdefault("forced_in_memory_cache_namespaces", "")
    return load_settings(use_redis=True, redis_uri=url, redis_key_prefix=PREFIX, **overrides)


# --- k1, k3, near: one task of GETs ----------------------------------------------------------
BLOCK = 2_000


async def _block_of_gets(
    get: Callable[[str], Awaitable[Any]], keys: list[str], start: int, count: int
) -> float:
    n = len(keys)
    began = time.perf_counter()
    for i in range(start, start + count):
        await get(keys[i % n])
    return time.perf_counter() - began


async def _interleaved_gets(
    getters: dict[str, Callable[[str], Awaitable[Any]]], keys: list[str], ops: int
) -> dict[str, float]:
    """ops/s of each getter over ``ops`` GETs, the getters taking turns every block.

    The machines are noisy: alternating in short blocks lets every system see the same
    background load, so the ratios stay meaningful even when absolute figures move.
    """
    for get in getters.values():  # warm pools and caches
        for key in keys:
            await get(key)
    spent = dict.fromkeys(getters, 0.0)
    names = list(getters)
    gc.collect()
    for turn, start in enumerate(range(0, ops, BLOCK)):
        count = min(BLOCK, ops - start)
        rotation = names[turn % len(names) :] + names[: turn % len(names)]
        for name in rotation:
            spent[name] += await _block_of_gets(getters[name], keys, start, count)
    return {name: ops / seconds for name, seconds in spent.items()}


async def k1_like(url: str, ops: int, runs: int, systems: list[str]) -> dict[str, Any]:
    settings = _settings(url, forced_in_memory_cache_namespaces="CONFIG_STORE")
    near_settings = _settings(url, near_cache_namespaces="ROLES", near_cache_ttl=3_600_000)
    assert settings.redis is not None
    connection = await connect(settings.redis)
    plain = plain_redis_py(settings.redis)  # same settings and pool, redis-py's packer
    factory = CacheFactory(settings, connection)
    near_factory = CacheFactory(near_settings, connection)
    try:
        cache = factory.cache(NS)
        memory = factory.cache(CacheKeys.CONFIG_STORE)
        near = near_factory.cache(NS)
        keys = [f"role-{i}" for i in range(KEYS)]
        await cache.set_many({k: _value(i) for i, k in enumerate(keys)}, ttl=None)
        await memory.set_many({k: _value(i) for i, k in enumerate(keys)}, ttl=None)
        redis_keys = {k: connection.keys.cache(NS.value, k) for k in keys}
        invalidator = near_factory.invalidator
        assert invalidator is not None and await invalidator.wait_ready()

        async def raw(key: str) -> Any:
            return await plain.get(redis_keys[key])

        async def raw_json(key: str) -> Any:
            return json.loads(await plain.get(redis_keys[key]))  # type: ignore[arg-type]

        every: dict[str, Callable[[str], Awaitable[Any]]] = {
            "redis-py": raw,
            "redis-py+json": raw_json,
            "chatscale": cache.get,
            "chatscale-memory": memory.get,
            "chatscale-near": near.get,
        }
        assert await cache.get(keys[7]) == await raw_json(keys[7])
        getters = {s: every[s] for s in systems}
        samples: dict[str, list[float]] = {s: [] for s in systems}
        for _ in range(runs):
            for system, rate in (await _interleaved_gets(getters, keys, ops)).items():
                samples[system].append(rate)
        return {s: {"ops_per_s": round(median(v)), "runs": [round(x) for x in v]}
                for s, v in samples.items()}  # fmt: skip
    finally:
        await factory.close()
        await near_factory.close()
        await plain.aclose()
        await connection.close()


# --- k2: 200 tasks, 90 % GET / 10 % SET ---------------------------------------------------
K2_BLOCK = 50_000


async def _mixed(
    get: Callable[[str], Awaitable[Any]],
    put: Callable[[str, int], Awaitable[Any]],
    plan: list[tuple[bool, int]],
    keys: list[str],
    tasks: int,
) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(tasks)]
    per_task = len(plan) // tasks

    async def worker(t: int) -> None:
        clock = time.perf_counter
        mine = latencies[t]
        for is_set, index in plan[t * per_task : (t + 1) * per_task]:
            started = clock()
            if is_set:
                await put(keys[index], index)
            else:
                await get(keys[index])
            mine.append(clock() - started)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "latencies": [x for chunk in latencies for x in chunk]}


def _merge(pieces: list[dict[str, Any]]) -> dict[str, float]:
    done = sorted(x for piece in pieces for x in piece["latencies"])
    elapsed = sum(piece["elapsed"] for piece in pieces)
    return {
        "ops_per_s": len(done) / elapsed,
        "p50_ms": percentile(done, 50) * 1000,
        "p99_ms": percentile(done, 99) * 1000,
    }


async def k2(url: str, ops: int, runs: int, tasks: int) -> dict[str, Any]:
    settings = _settings(url, redis_max_connections=tasks)
    assert settings.redis is not None
    connection = await connect(settings.redis)
    plain = plain_redis_py(settings.redis)
    factory = CacheFactory(settings, connection)
    try:
        cache = factory.cache(NS)
        keys = [f"role-{i}" for i in range(KEYS)]
        values = [_value(i) for i in range(KEYS)]
        encoded = [json.dumps(v, separators=(",", ":")).encode() for v in values]
        await cache.set_many(dict(zip(keys, values, strict=True)), ttl=None)
        redis_keys = [connection.keys.cache(NS.value, k) for k in keys]
        index_of = {k: i for i, k in enumerate(keys)}
        rng = random.Random(42)
        plan = [(rng.random() < 0.10, rng.randrange(KEYS)) for _ in range(ops)]

        async def raw_get(key: str) -> Any:
            return await plain.get(redis_keys[index_of[key]])

        async def raw_set(key: str, i: int) -> Any:
            return await plain.set(redis_keys[i], encoded[i])

        async def json_get(key: str) -> Any:
            return json.loads(await plain.get(redis_keys[index_of[key]]))  # type: ignore[arg-type]

        async def json_set(key: str, i: int) -> Any:
            return await plain.set(redis_keys[i], json.dumps(values[i]))

        async def cs_set(key: str, i: int) -> None:
            await cache.set(key, values[i], ttl=None)

        systems: dict[str, tuple[Any, Any]] = {
            "redis-py": (raw_get, raw_set),
            "redis-py+json": (json_get, json_set),
            "chatscale": (cache.get, cs_set),
        }
        samples: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
        block = max(tasks, K2_BLOCK // tasks * tasks)
        names = list(systems)
        for _ in range(runs):
            parts: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
            for turn, start in enumerate(range(0, len(plan), block)):
                rotation = names[turn % len(names) :] + names[: turn % len(names)]
                for name in rotation:
                    get, put = systems[name]
                    piece = plan[start : start + block]
                    parts[name].append(await _mixed(get, put, piece, keys, tasks))
            for name, pieces in parts.items():
                samples[name].append(_merge(pieces))
        out: dict[str, Any] = {}
        for name, results in samples.items():
            out[name] = {
                metric: round(median([r[metric] for r in results]), 3)
                for metric in ("ops_per_s", "p50_ms", "p99_ms")
            }
            out[name]["runs_ops_per_s"] = [round(r["ops_per_s"]) for r in results]
        return out
    finally:
        await factory.close()
        await plain.aclose()
        await connection.close()


# --- k4: clearing a namespace among a million other keys ---------------------------------
OTHER_NAMESPACES = [ns for ns in CacheKeys if ns is not NS][:9]


def _fill(clients: list[tuple[redis.Redis, set[int] | None]], keys: list[bytes]) -> None:
    """SET every key (8-byte value) through the client that owns its slot, in pipelines."""
    for client, slots in clients:
        mine = keys if slots is None else [k for k in keys if key_slot(k) in slots]
        pipe = client.pipeline(transaction=False)
        if slots is None:
            for i in range(0, len(mine), 1_000):
                pipe.mset(dict.fromkeys(mine[i : i + 1_000], b"v" * 8))
                if len(pipe) >= 50:
                    pipe.execute()
        else:
            by_slot: dict[int, list[bytes]] = {}
            for key in mine:
                by_slot.setdefault(key_slot(key), []).append(key)
            for group in by_slot.values():
                pipe.mset(dict.fromkeys(group, b"v" * 8))
                if len(pipe) >= 500:
                    pipe.execute()
        pipe.execute()


def _count(clients: list[tuple[redis.Redis, set[int] | None]], pattern: str) -> int:
    return sum(sum(1 for _ in c.scan_iter(match=pattern, count=1_000)) for c, _ in clients)


def _dbsize(clients: list[tuple[redis.Redis, set[int] | None]]) -> int:
    return sum(int(c.dbsize()) for c, _ in clients)


def _latency_reset(clients: list[tuple[redis.Redis, set[int] | None]]) -> None:
    for client, _ in clients:
        client.config_set("latency-monitor-threshold", 1)
        client.execute_command("LATENCY", "RESET")


def _latency_max_ms(clients: list[tuple[redis.Redis, set[int] | None]]) -> int:
    """Worst latency event (ms) Redis itself recorded; 0 when none reached 1 ms."""
    worst = 0
    for client, _ in clients:
        for _event, _when, _latest, highest in client.execute_command("LATENCY", "LATEST"):
            worst = max(worst, int(highest))
    return worst


async def k4(
    url: str, clients: list[tuple[redis.Redis, set[int] | None]], target: int, others: int,
    runs: int,
) -> dict[str, Any]:  # fmt: skip
    settings = _settings(url)
    assert settings.redis is not None
    connection: RedisConnection = await connect(settings.redis)
    space = connection.keys
    try:
        per_ns = others // (len(OTHER_NAMESPACES) + 1)
        other_keys = [
            space.cache(ns.value, f"k{i}").encode()
            for ns in OTHER_NAMESPACES
            for i in range(per_ns)
        ]
        # Another deployment sharing the database, and non-cache keys of this one.
        other_keys += [f"{PREFIX}x::{NS.value}:k{i}".encode() for i in range(per_ns // 2)]
        other_keys += [space.session(f"s{i}").encode() for i in range(others - len(other_keys))]
        target_keys = [space.cache(NS.value, f"k{i}").encode() for i in range(target)]
        fill_start = time.perf_counter()
        _fill(clients, other_keys)
        fill_s = time.perf_counter() - fill_start
        options = ClearOptions(
            scan_count=settings.redis_scan_count,
            chunk_size=settings.redis_delete_chunk_size,
            cluster_safe=settings.redis_cluster_safe_delete,
        )
        seconds: list[float] = []
        worst_latency: list[int] = []
        checks: list[bool] = []
        for _ in range(runs):
            _fill(clients, target_keys)
            before = _dbsize(clients)
            _latency_reset(clients)
            started = time.perf_counter()
            removed = await clear_namespaces(connection, [NS], options)
            seconds.append(time.perf_counter() - started)
            worst_latency.append(_latency_max_ms(clients))
            after = _dbsize(clients)
            left = _count(clients, space.cache_pattern(NS.value))
            checks.append(
                removed == target and after == before - target == len(other_keys) and left == 0
            )
        return {
            "keys_cleared": target,
            "other_keys": len(other_keys),
            "seconds": round(median(seconds), 3),
            "runs_s": [round(s, 3) for s in seconds],
            # Redis's own latency monitor (threshold 1 ms): did any command block it?
            "redis_worst_event_ms_during_clear": max(worst_latency),
            "others_untouched_and_namespace_empty": all(checks),
            "fill_s": round(fill_s, 1),
        }
    finally:
        await connection.close()


def _cluster_clients(handle: Any) -> list[tuple[redis.Redis, set[int] | None]]:
    out: list[tuple[redis.Redis, set[int] | None]] = []
    probe = handle.masters()[0].client()
    try:
        slots_reply = probe.cluster("SLOTS")
    finally:
        probe.close()
    by_port: dict[int, set[int]] = {}
    for low, high, primary, *_ in slots_reply:
        by_port.setdefault(int(primary[1]), set()).update(range(int(low), int(high) + 1))
    for server in handle.masters():
        out.append((server.client(), by_port[server.port]))
    return out


# --- driver --------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> dict[str, Any]:
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(chosen) - {"k1", "k2", "k3", "near", "k4"}
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    report: dict[str, Any] = {
        "redis_py": redis.__version__,
        "python": sys.version.split()[0],
        "runs": args.runs,
        "scale": args.scale,
    }
    scale = args.scale
    with PrivateRedis() as server:
        report["redis_server"] = redis.Redis.from_url(server.url).info("server")["redis_version"]
        gets = max(1_000, int(100_000 * scale))
        k1_systems = {
            "k1": ["redis-py", "redis-py+json", "chatscale"],
            "k3": ["chatscale-memory"],
            "near": ["chatscale-near"],
        }
        systems = [s for w in ("k1", "k3", "near") if w in chosen for s in k1_systems[w]]
        if "near" in chosen and "chatscale" not in systems:
            systems.append("chatscale")
        if systems:
            single = await k1_like(server.url, gets, args.runs, systems)
            base = single.get("redis-py", {}).get("ops_per_s")
            base_json = single.get("redis-py+json", {}).get("ops_per_s")
            for result in single.values():
                if base:
                    result["vs_redis_py"] = round(result["ops_per_s"] / base, 3)
                if base_json:
                    result["vs_redis_py_json"] = round(result["ops_per_s"] / base_json, 3)
            if "chatscale-near" in single:
                single["chatscale-near"]["vs_chatscale_redis"] = round(
                    single["chatscale-near"]["ops_per_s"] / single["chatscale"]["ops_per_s"], 1
                )
            report["k1_k3_near"] = single
        if "k2" in chosen:
            ops = args.k2_ops or max(2_000, int(1_000_000 * scale))
            result = await k2(server.url, ops, args.runs, 200)
            result["ops_per_run"] = ops
            base = result["redis-py"]["ops_per_s"]
            for name in ("redis-py", "redis-py+json", "chatscale"):
                entry = result[name]
                entry["vs_redis_py"] = round(entry["ops_per_s"] / base, 3)
            report["k2"] = result
        if "k4" in chosen:
            target, others = max(1_000, int(100_000 * scale)), max(10_000, int(1_000_000 * scale))
            client = redis.Redis.from_url(server.url)
            try:
                client.flushdb()  # our own private server, never a shared one
                report["k4_standalone"] = await k4(
                    server.url, [(client, None)], target, others, args.runs
                )
            finally:
                client.close()
    if "k4" in chosen and not args.no_cluster:
        from tests.harness.servers import start_cluster

        with tempfile.TemporaryDirectory(prefix="chatscale-bench-cluster-") as tmp:
            handle = start_cluster(Path(tmp), masters=3, replicas_per_master=0)
            try:
                clients = _cluster_clients(handle)
                try:
                    report["k4_cluster"] = await k4(
                        ",".join(handle.urls()), clients, target, others, args.runs
                    )
                finally:
                    for c, _ in clients:
                        c.close()
            finally:
                handle.stop()
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="k1,k2,k3,near,k4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every size (smoke)")
    parser.add_argument("--k2-ops", type=int, default=0, help="k2 operations per run")
    parser.add_argument("--no-cluster", action="store_true", help="skip k4 on Cluster")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 0 < args.scale <= 1:
        parser.error("--runs must be >= 1 and --scale in (0, 1]")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.out:
        arguments.out.write_text(text + "\n")
