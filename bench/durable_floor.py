"""Where an append's CPU goes: the ``append1000`` workload of bench/durable_streams.py
against the layers of ``chatscale serve``, from a bare uvicorn up.

    .venv/bin/python bench/durable_floor.py [--seconds 8] [--writers 50] [--runs 2]

Each variant is one server process on a free loopback port, met by the same client
(bench/durable_streams.py's ``append_closed``: ``--writers`` keep-alive connections
appending 256-byte messages over 1,000 streams as fast as answers come):

* ``raw``: no ASGI server at all: an asyncio protocol on uvloop that parses with httptools
  and answers each whole request from the parser's callback, with chatscale's ten headers
  (the floor of a request path without a task, a scope or an ASGI message per request);
* ``bare``: a minimal ASGI application (reads the body, answers 204 with a
  ``Stream-Next-Offset``) on plain uvicorn with httptools and uvloop;
* ``edge``: the same application under ``chatscale serve``'s uvicorn configuration (its
  protocol with the header timeout and the head written with the body);
* ``edge_headers``: the same, answering with the ten headers chatscale's answer to an
  append carries (CORS, security headers, instance and request id);
* ``protocol``: chatscale's application, the Durable Streams lane served by the protocol's
  application alone, without the middleware every request passes (request id, security
  headers and request metrics; body bound; catch-all; origin check);
* ``chatscale``: the application as ``chatscale serve`` builds it.

Variants alternate, ``--runs`` times. Reported per variant: the median server CPU per
append (``/proc/<pid>/stat``) and appends per second; one JSON object, kept in
bench/results. Memory backends only (no Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import median  # noqa: E402
from bench.durable_streams import Command, Server, System, append_closed  # noqa: E402
from bench.http_client import add_out_option, keep_result  # noqa: E402

VARIANTS = ("raw", "bare", "edge", "edge_headers", "protocol", "chatscale")
_OFFSET = b"0000000000000001_0000000000000005"
#: The headers of chatscale's answer to an append, besides the date and server.
_CHATSCALE_HEADERS = [
    (b"stream-next-offset", _OFFSET),
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"access-control-allow-origin", b"*"),
    (
        b"access-control-expose-headers",
        b"Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
        b"Stream-Expires-At, Stream-Seq, Stream-SSE-Data-Encoding, Producer-Epoch, "
        b"Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, ETag, Location",
    ),
    (b"x-chatscale-instance", b"f85b96fd871c"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-request-id", b"10bc5b1cbe921784f918061d1e333c9e"),
]
_ENV = {
    "DURABLE_STREAMS": "true",
    "DURABLE_STREAMS_AUTH": "none",
    "SESSION_SECRET": "durable-floor-secret-0123456789abcdef0123",
    "LOG_LEVEL": "WARNING",
}


def _bare_app(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        status = {"PUT": 201, "HEAD": 200}.get(scope["method"], 204)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


def _serve_raw(port: int) -> None:
    import httptools
    import uvloop

    head = [b"HTTP/1.1 204 No Content\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in _CHATSCALE_HEADERS]
    answer = b"".join([*head, b"\r\n"])

    class Raw(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.body.clear()
            self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Raw, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def serve(variant: str, port: int) -> None:
    """Run one variant's server (in the child process) until terminated."""
    import uvicorn

    if variant == "raw":
        _serve_raw(port)
        return

    from chatscale.config import load_settings
    from chatscale.logs import configure_logging
    from chatscale.runtime import tune_gc
    from chatscale.server.app import create_app
    from chatscale.server.lifecycle import DrainingServer
    from chatscale.server.run import _config
    from chatscale.server.shortcut import Lane, ShortcutStarlette

    if variant == "bare":
        app = _bare_app([(b"stream-next-offset", _OFFSET)])
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
        return
    os.environ.update(_ENV)
    settings = load_settings(host="127.0.0.1", port=port)
    configure_logging(settings.log_level, settings.log_format, settings.access_log)
    if variant in ("edge", "edge_headers"):
        headers = _CHATSCALE_HEADERS if variant == "edge_headers" else _CHATSCALE_HEADERS[:1]
        uvicorn.Server(_config(_bare_app(headers), settings)).run()
        return
    full = create_app(settings)
    assert isinstance(full, ShortcutStarlette)
    if variant == "protocol":
        lane = full.lanes[0]
        full.lanes = (Lane(lane.prefix, lane.label, full.state.durable.app),)
    tune_gc(settings.gc_threshold)
    DrainingServer(_config(full, settings)).run()


def _variant(variant: str) -> Command:
    """The command of one variant's server: this script in ``--serve`` mode."""

    def command(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, str(SCRIPT), "--serve", variant, str(port)]
        return argv, {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    add_out_option(parser)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(args.runs):
        for variant in variants:
            system = System(variant, servers=[Server(variant, _variant(variant))])
            try:
                result = asyncio.run(append_closed(system, args.writers, args.seconds))
            finally:
                system.stop()
            runs[variant].append(result)
            print(
                f"{variant}: {result['ops_per_s']:,.0f} appends/s, "
                f"{result['server_cpu_us_per_op']} us CPU per append",
                file=sys.stderr,
            )
    summary = {
        v: {
            "server_cpu_us_per_op": median([r["server_cpu_us_per_op"] for r in rs]),
            "ops_per_s": median([r["ops_per_s"] for r in rs]),
        }
        for v, rs in runs.items()
    }
    result = {"summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    options = {"seconds": args.seconds, "writers": args.writers, "runs": args.runs}
    print("kept in", keep_result("durable-floor", options, result, args.out))


if __name__ == "__main__":
    main()
