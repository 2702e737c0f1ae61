"""``chatscale cache clear`` against real servers (standalone and Cluster)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from redis.cluster import RedisCluster

from chatscale.cache import CacheFactory, CacheKeys, NearCache
from chatscale.cli import cli
from chatscale.config import Settings, load_settings
from chatscale.redis import RedisConnection
from chatscale.redis.keys import KeySpace
from tests.conftest import unique_prefix


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["cache", "clear", *args], catch_exceptions=False)


def _seed(client: Any, space: KeySpace, other: KeySpace) -> None:
    for i in range(40):
        client.set(space.cache("ROLES", f"k{i}"), b"1")
    for i in range(15):
        client.set(space.cache("TOOLS", f"k{i}"), b"1")
        client.set(other.cache("ROLES", f"k{i}"), b"1")
    client.set(space.session("s"), b"1")


def _count(client: Any, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def _env(monkeypatch: pytest.MonkeyPatch, uri: str, prefix: str) -> None:
    monkeypatch.setenv("USE_REDIS", "true")
    monkeypatch.setenv("REDIS_URI", uri)
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)


def test_clear_one_namespace_then_all(
    redis_standalone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = unique_prefix()
    space, other = KeySpace(prefix), KeySpace(unique_prefix())
    _env(monkeypatch, redis_standalone.url(), prefix)
    with redis_standalone.client() as client:
        _seed(client, space, other)
        result = _invoke("ROLES")
        assert result.exit_code == 0, result.output
        assert f"cleared 40 keys of ROLES under key prefix {prefix}" in result.output
        assert _count(client, space.cache_pattern("ROLES")) == 0
        assert _count(client, space.cache_pattern("TOOLS")) == 15
        result = _invoke("--all")
        assert result.exit_code == 0, result.output
        assert "cleared 15 keys of all namespaces" in result.output
        assert _count(client, space.all_pattern) == 1  # the session is not a cache
        assert _count(client, other.all_pattern) == 15  # another deployment's keys stay


@pytest.mark.cluster
def test_clear_on_cluster(redis_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = unique_prefix()
    space, other = KeySpace(prefix), KeySpace(unique_prefix())
    _env(monkeypatch, ",".join(redis_cluster.urls()), prefix)
    host, port = redis_cluster.startup_nodes()[0]
    with RedisCluster(host=host, port=port) as client:
        _seed(client, space, other)
        result = _invoke("--all")
        assert result.exit_code == 0, result.output
        assert "cleared 55 keys of all namespaces" in result.output
        keys = [
            k
            for node in client.get_primaries()
            for k in client.scan_iter(match=space.all_pattern, target_nodes=node)
        ]
        assert keys == [space.session("s").encode()]
        assert (
            sum(
                1
                for node in client.get_primaries()
                for _ in client.scan_iter(match=other.all_pattern, target_nodes=node)
            )
            == 15
        )


def test_forced_in_memory_namespace_gets_a_note(
    redis_standalone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, redis_standalone.url(), unique_prefix())
    result = _invoke("APP_CONFIG")
    assert result.exit_code == 0, result.output
    assert "cleared 0 keys" in result.output
    assert "kept in process memory" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "exactly one of NAMESPACE or --all"),
        (("ROLES", "--all"), "exactly one of NAMESPACE or --all"),
        (("roles",), "unknown cache namespace 'roles'"),
    ],
)
def test_bad_arguments(
    args: tuple[str, ...], message: str, redis_standalone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, redis_standalone.url(), unique_prefix())
    result = CliRunner().invoke(cli, ["cache", "clear", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_without_redis_nothing_to_clear() -> None:
    result = CliRunner().invoke(cli, ["cache", "clear", "ROLES"])
    assert result.exit_code == 1
    assert "USE_REDIS is off" in result.output


def test_unreachable_redis_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.harness.servers import free_port

    _env(monkeypatch, f"redis://127.0.0.1:{free_port()}", "p")
    monkeypatch.setenv("REDIS_CONNECT_TIMEOUT", "200")
    monkeypatch.setenv("REDIS_RETRY_MAX_ATTEMPTS", "1")
    result = CliRunner().invoke(cli, ["cache", "clear", "ROLES"])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output
    assert "Traceback" not in result.output


def test_bad_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_REDIS", "true")
    monkeypatch.setenv("REDIS_URI", "redis://127.0.0.1:1")
    monkeypatch.setenv("REDIS_SCAN_COUNT", "0")
    result = CliRunner().invoke(cli, ["cache", "clear", "ROLES"])
    assert result.exit_code == 2
    assert "REDIS_SCAN_COUNT" in result.output


async def test_clear_drops_running_near_caches(
    standalone_conn: RedisConnection, redis_standalone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, redis_standalone.url(), standalone_conn.keys.prefix)
    settings = load_settings(
        use_redis=True,
        redis_uri=redis_standalone.url(),
        redis_key_prefix=standalone_conn.keys.prefix,
        near_cache_namespaces="ROLES",
        near_cache_ttl=3_600_000,
    )
    factory = CacheFactory(settings, standalone_conn)
    try:
        cache = factory.cache(CacheKeys.ROLES)
        assert isinstance(cache, NearCache)
        assert await cache.invalidator.wait_ready()
        await cache.set("k", 1)
        assert await cache.get("k") == 1
        assert len(cache) == 1
        result = await asyncio.to_thread(_invoke, "ROLES")
        assert result.exit_code == 0, result.output
        async with asyncio.timeout(2):
            while True:  # the CLI's invalidation reaches this process
                if not len(cache):
                    break
                await asyncio.sleep(0.005)
        assert await cache.get("k") is None
    finally:
        await factory.close()
