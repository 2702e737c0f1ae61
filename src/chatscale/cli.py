"""The ``chatscale`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from chatscale import __version__
from chatscale.config import Settings, load_settings
from chatscale.errors import ChatscaleError, ConfigError
from chatscale.masking import mask_text
from chatscale.numbers import parse_whole

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, status: int) -> None:
    # Errors can quote driver messages (URLs included): never print credentials in them.
    click.echo(f"chatscale: {mask_text(message)}", err=True)
    sys.exit(status)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print configuration and start-up errors on one line (exit 2 / 1), no traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(f"configuration error: {exc}", 2)
        except ChatscaleError as exc:
            _fail(str(exc), 1)
        raise AssertionError("unreachable")

    return wrapper


def settings_or_exit() -> Settings:
    """Load the settings; on a bad value print it on one line and exit with status 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(f"configuration error: {exc}", 2)
        raise


@click.group()
@click.version_option(__version__, prog_name="chatscale")
def cli() -> None:
    """chatscale: an AI chat backend that scales out on Redis."""


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of aligned lines.")
def config_command(as_json: bool) -> None:
    """Print the effective settings (secrets masked)."""
    shown = settings_or_exit().describe()
    if as_json:
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    width = max(len(k) for k in shown)
    for name, value in shown.items():
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else value
        click.echo(f"{name:<{width}}  {text}")


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_command(as_json: bool) -> None:
    """Check what ``serve`` checks, connect to Redis and the model upstream, and report.

    Exit status 2 for a bad setting, 1 when Redis cannot be reached or is unhealthy; warnings
    (a password Redis does not ask for, an unreachable upstream) leave it 0.
    """
    settings = settings_or_exit()
    try:
        _check_like_serve(settings)
        report = asyncio.run(_doctor(settings))
    except ConfigError as exc:
        _fail(f"configuration error: {exc}", 2)
        return
    except ChatscaleError as exc:
        _fail(f"doctor: {exc}", 1)
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            click.echo(f"{key:<16} {_shown(value)}")
    problems = report.get("problems") or []
    if problems:
        _fail("doctor: " + "; ".join(problems), 1)


def _check_like_serve(settings: Settings) -> None:
    try:
        from chatscale.server.preflight import check_settings
    except ImportError:
        # Without the server extra there is no server to check for; the library needs no
        # session secret.
        return
    check_settings(settings)


def _shown(value: Any) -> str:
    """A report value as text for people: words, not Python reprs."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_shown(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


async def _doctor(settings: Settings) -> dict[str, Any]:
    if settings.redis is None:
        report: dict[str, Any] = {
            "status": "ok",
            "backend": "memory",
            "detail": "USE_REDIS is off: caches, limits and streams live in memory, sessions "
            + ("in the database" if settings.database is not None else "in memory"),
            "key_prefix": settings.key_prefix,
        }
    else:
        report = await _doctor_redis(settings)
    warnings: list[str] = list(report.pop("warnings", []))
    if settings.database is not None:
        database = await _doctor_database(settings)
        report["database"] = database
        if "error" in database:
            report["status"] = "error"
            report.setdefault("problems", []).append(f"database: {database['error']}")
        elif database["revision"] != database["needed"]:
            if not settings.database_migrate:
                report["status"] = "error"
                report.setdefault("problems", []).append(
                    f"the database is at schema revision {database['revision'] or '(none)'} "
                    "and DATABASE_MIGRATE is off: run chatscale db upgrade"
                )
            elif database["revision"] is not None:
                warnings.append(
                    f"the database is at schema revision {database['revision']}: serve will "
                    f"migrate it to {database['needed']}"
                )
            # else: a new, empty database: serve creates the schema (the first run).
    upstream = await _doctor_upstream(settings)
    if upstream is not None:
        report["upstream"] = upstream
        if not upstream["reachable"]:
            warnings.append(f"the model upstream is unreachable: {upstream.get('error')}")
    if warnings:
        if report["status"] == "ok":
            report["status"] = "warning"
        report["warnings"] = warnings
    return report


async def _doctor_database(settings: Settings) -> dict[str, Any]:
    """The database's URL (masked), schema revision and the one needed; never migrates."""
    assert settings.database is not None
    found: dict[str, Any] = {"url": settings.database.shown}
    try:
        from chatscale.db.migrate import head_revision
    except ImportError as exc:
        return {**found, "error": f"needs the 'server' extra: {exc}"}
    found["needed"] = head_revision()
    path = settings.database.path
    if path is not None and not path.exists():
        # Connecting would create the file: doctor leaves no trace.
        return {**found, "revision": None, "note": "the file does not exist yet: serve creates it"}
    try:
        found["revision"] = await _db_current(settings.database)
    except ChatscaleError as exc:
        return {**found, "error": str(exc)}
    return found


async def _doctor_upstream(settings: Settings) -> dict[str, Any] | None:
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return None
    try:
        from chatscale.llm import build_registry
    except ImportError as exc:
        return {"reachable": False, "error": f"needs the 'server' extra: {exc}"}
    registry = build_registry(settings)
    try:
        states = [await p.check() for p in registry.upstreams()]
    finally:
        await registry.aclose()
    state = states[0]
    return {
        "reachable": state["reachable"],
        "models": state["models"],
        **({"error": state["error"]} if "error" in state else {}),
    }


async def _doctor_redis(settings: Settings) -> dict[str, Any]:
    from chatscale.redis import connect_or_refused, describe
    from chatscale.redis.passwords import unused_password

    assert settings.redis is not None
    connection = await connect_or_refused(settings.redis)
    try:
        found = await describe(connection)
        unused = await unused_password(connection)
    finally:
        await connection.close()
    problems = []
    if found.slots_covered is not None and found.slots_covered != 16384:
        problems.append(f"cluster covers {found.slots_covered} of 16384 slots")
    if any("(fail)" in m for m in found.masters):
        problems.append("a cluster master is failing")
    report: dict[str, Any] = {
        "status": "ok" if not problems else "degraded",
        "backend": "redis",
        "topology": found.topology,
        "server_version": found.server_version,
        "tls": "on (certificate verified)" if found.tls else "off",
        "key_prefix": found.prefix or "(none)",
        "rtt_ms": found.rtt_ms,
        "masters": found.masters,
        "replicas": found.replicas,
    }
    if found.slots_covered is not None:
        report["slots_covered"] = found.slots_covered
    if found.sentinel_master:
        report["sentinel_master"] = found.sentinel_master
    if unused:
        report["warnings"] = [unused]
    if problems:
        report["problems"] = problems
    return report


@cli.group("cache")
def cache_group() -> None:
    """Inspect and clear caches."""


@cache_group.command("clear")
@click.argument("namespace", required=False)
@click.option("--all", "clear_all", is_flag=True, help="Every namespace of this key prefix.")
def cache_clear_command(namespace: str | None, clear_all: bool) -> None:
    """Remove one NAMESPACE (or --all namespaces) of this deployment's prefix from Redis.

    Only keys ``<prefix>::<NAMESPACE>:*`` are removed (SCAN + UNLINK, never FLUSHDB), and
    every running instance is told to drop its near caches. Namespaces kept in process
    memory live in each server process and are cleared by restarting it.
    """
    from chatscale.cache import CacheError, CacheKeys, namespace_of

    if clear_all == (namespace is not None):
        _fail("cache clear: give exactly one of NAMESPACE or --all", 2)
    settings = settings_or_exit()
    try:
        targets = list(CacheKeys) if clear_all else [namespace_of(namespace)]
    except CacheError as exc:
        _fail(f"cache clear: {exc}", 2)
        return
    if settings.redis is None:
        _fail(
            "cache clear: USE_REDIS is off, so caches live in each server process's memory; "
            "restart the processes to clear them",
            1,
        )
        return
    try:
        removed = asyncio.run(_cache_clear(settings, targets))
    except ChatscaleError as exc:
        _fail(f"cache clear: {exc}", 1)
        return
    names = "all namespaces" if clear_all else targets[0].value
    prefix = settings.key_prefix or "(none)"
    click.echo(f"cleared {removed} keys of {names} under key prefix {prefix}")
    in_memory = sorted(
        ns.value for ns in targets if ns in settings.forced_in_memory_cache_namespaces
    )
    if in_memory:
        click.echo(
            f"note: {', '.join(in_memory)} are kept in process memory "
            "(FORCED_IN_MEMORY_CACHE_NAMESPACES); restart the servers to clear them there"
        )


async def _cache_clear(settings: Settings, namespaces: list[Any]) -> int:
    from chatscale.cache import clear_namespaces
    from chatscale.cache.factory import clear_options
    from chatscale.cache.invalidation import Invalidator
    from chatscale.redis import connect

    assert settings.redis is not None
    connection = await connect(settings.redis)
    try:
        try:
            return await clear_namespaces(connection, namespaces, clear_options(settings))
        finally:
            name = namespaces[0].value if len(namespaces) == 1 else None
            await Invalidator(connection).publish(name)
    finally:
        await connection.close()


@cli.group("db")
def db_group() -> None:
    """The database of conversations (DATABASE_URL): schema migrations."""


@db_group.command("upgrade")
@friendly_errors
def db_upgrade_command() -> None:
    """Bring the database's schema to this version's (Alembic ``upgrade head``).

    Safe while other instances run or start: on PostgreSQL the migration holds an advisory
    lock and runs in one transaction. ``chatscale serve`` does the same at start-up unless
    DATABASE_MIGRATE=false.
    """
    database = _database_or_exit()
    revision = asyncio.run(_db_upgrade(database))
    click.echo(f"database {database.shown} is at schema revision {revision}")


@db_group.command("status")
@friendly_errors
def db_status_command() -> None:
    """Print the schema revision of the database and the one this version needs (exit 1
    when they differ)."""
    from chatscale.db.migrate import head_revision

    database = _database_or_exit()
    current = asyncio.run(_db_current(database))
    head = head_revision()
    click.echo(f"database {database.shown}: revision {current or '(none)'}, needed {head}")
    if current != head:
        sys.exit(1)


def _database_or_exit() -> Any:
    settings = settings_or_exit()
    if settings.database is None:
        _fail(
            "db: no database is used (USE_REDIS without DATABASE_URL keeps conversations on "
            "Redis, or FORCED_IN_MEMORY_CACHE_NAMESPACES has CONVERSATIONS)",
            2,
        )
    return settings.database


async def _db_upgrade(target: Any) -> str | None:
    from chatscale.db.database import Database, DatabaseError
    from chatscale.db.migrate import upgrade

    database = Database(target)
    try:
        return await upgrade(database.engine, target)
    except Exception as exc:
        raise DatabaseError(f"database {target.shown}: {type(exc).__name__}: {exc}") from exc
    finally:
        await database.close()


async def _db_current(target: Any) -> str | None:
    from chatscale.db.database import Database, DatabaseError
    from chatscale.db.migrate import current_revision

    database = Database(target)
    try:
        return await current_revision(database.engine)
    except Exception as exc:
        raise DatabaseError(f"database {target.shown}: {type(exc).__name__}: {exc}") from exc
    finally:
        await database.close()


@cli.command("serve")
@click.option("--host", default=None, help="Interface to listen on (default: HOST, 127.0.0.1).")
@click.option("--port", default=None, help="TCP port (default: PORT, 3080).")
@click.option(
    "--workers",
    default="1",
    help="Worker processes (default 1); more than one needs USE_REDIS.",
)
def serve_command(host: str | None, port: str | None, workers: str) -> None:
    """Run the chat server: API, event streams and the web page at /."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}", 2)
        return
    count = parse_whole(workers.strip())
    if count is None or not 1 <= count <= 64:
        _fail(f"configuration error: --workers={workers!r}: expected 1 to 64", 2)
        return
    if count > 1 and settings.redis is None:
        # Each worker would have its own memory and its own random session secret: cookies,
        # limits and resumes would break whenever a request lands on another worker.
        _fail(
            f"configuration error: --workers={count} needs USE_REDIS=true "
            "(workers share sessions, limits and streams only through Redis)",
            2,
        )
        return
    try:
        from chatscale.server.run import serve
    except ImportError as exc:
        _fail(f"the server needs the 'server' extra (pip install 'chatscale[server]'): {exc}", 1)
        return
    try:
        serve(settings, count)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}", 2)
    except ChatscaleError as exc:
        _fail(str(exc), 1)


def main() -> None:
    """Entry point of the ``chatscale`` console script."""
    cli()
