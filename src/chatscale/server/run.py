"""Running the server under uvicorn (``chatscale serve``)."""

from __future__ import annotations

import sys
from typing import Any

import click
import uvicorn
from uvicorn.supervisors import Multiprocess

from chatscale.config import Settings
from chatscale.logs import configure_logging
from chatscale.ratelimit.identity import TrustedProxies
from chatscale.runtime import tune_gc
from chatscale.server import preflight
from chatscale.server.app import create_app
from chatscale.server.lifecycle import DrainingServer
from chatscale.server.protocol import EdgeConfig


def _config(target: object, settings: Settings, **extra: Any) -> uvicorn.Config:
    trusted = TrustedProxies(settings.trusted_proxies)
    return EdgeConfig(
        target,
        max_header_bytes=settings.max_request_header_bytes,
        header_timeout_s=settings.request_header_timeout,
        host=settings.host,
        port=settings.port,
        # chatscale.logs configured logging (LOG_LEVEL, LOG_FORMAT): uvicorn must not.
        log_config=None,
        log_level=None,
        access_log=settings.access_log,
        # uvicorn believes X-Forwarded-For/-Proto from 127.0.0.1 by default: anything local
        # (a sidecar, a port forward) would let a client choose its own address. Only the
        # proxies named in TRUSTED_PROXIES may set them.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=[str(network) for network in trusted.networks],
        # The drain (STREAM_DRAIN_TIMEOUT) happens before uvicorn's own shutdown starts;
        # this only bounds requests still open after it.
        timeout_graceful_shutdown=5,
        # Idle keep-alive connections from a load balancer: longer than its own timeout.
        timeout_keep_alive=settings.http_keep_alive_timeout,
        # uvloop unless SERVER_EVENT_LOOP says otherwise or it is missing (docs/benchmarks.md,
        # h2: less CPU per delivered token than asyncio's loop).
        loop=preflight.event_loop(settings),
        **extra,
    )


def describe(settings: Settings, port: int | None = None) -> str:
    """One line saying where and how the server runs (``port``: the one bound, for PORT=0)."""
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "") else host
    backend = f"Redis ({settings.redis.topology.value})" if settings.redis else "in-memory backends"
    if settings.database is not None:
        backend += f", conversations in {settings.database.dialect}"
    models = "demo model" + (
        " + OpenAI-compatible" if settings.openai_api_key or settings.openai_base_url else ""
    )
    port = settings.port if port is None else port
    loop = preflight.event_loop(settings)
    return f"chatscale: serving on http://{shown}:{port}/ ({backend}, {models}, {loop} event loop)"


def serve(settings: Settings, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT (drained first, see :mod:`chatscale.server.lifecycle`).

    The settings, the port and Redis are checked before "serving on" is printed; a failure
    raises :class:`ChatscaleError` (:class:`ConfigError` for a setting) and nothing runs.
    """
    configure_logging(settings.log_level, settings.log_format, settings.access_log)
    preflight.check_settings(settings)
    app = create_app(settings) if workers == 1 else None
    sock = preflight.listen_socket(settings)
    try:
        preflight.check_redis(settings)
        preflight.check_database(settings)
    except BaseException:
        sock.close()
        raise
    announced = describe(settings, sock.getsockname()[1])
    if app is not None:
        tune_gc(settings.gc_threshold)
        server = DrainingServer(_config(app, settings))
        click.echo(announced, err=True)
        server.run(sockets=[sock])
        if not server.started:
            sys.exit(1)
        return
    create_app(settings)  # validates what the workers will build, before forking
    config = _config("chatscale.server.app:app_from_env", settings, factory=True, workers=workers)
    click.echo(announced + f", {workers} workers", err=True)
    # Each worker is a plain uvicorn server; the app installs its draining signal handler.
    Multiprocess(config, sockets=[sock]).run()
