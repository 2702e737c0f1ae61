"""/openapi.json cannot drift from the routes: every route and method is documented, and
every status a handler can answer (read from its code and the functions it calls) is too."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from chatscale.config import Settings, load_settings
from chatscale.durable import (
    auth,
    chat_view,
    content,
    forks,
    limits,
    memory,
    offsets,
    redis_store,
    rules,
)
from chatscale.durable import headers as durable_headers
from chatscale.durable import http as durable_http
from chatscale.durable.errors import ProtocolError
from chatscale.ratelimit.responses import BANNED, RATE_LIMITED
from chatscale.server.app import create_app
from chatscale.server.openapi import build_openapi
from chatscale.server.openapi_durable import OFFSET_QUERY_PATTERN, PATH
from chatscale.server.openapi_protocol import OFFSET_PATTERN, SCHEME
from chatscale.server.shortcut import ShortcutStarlette
from chatscale.server.sse import EVENT_ID_PATTERN

#: Calls that answer with the status given as their first argument (a ProtocolError of the
#: Durable Streams chat view becomes the ApiError of the same status).
_ERRORS = {"ApiError", "error_response", "ProtocolError"}
#: Responses whose status is their ``status_code`` argument (200 when absent).
_RESPONSES = {"JSONResponse", "Response", "PlainTextResponse", "FileResponse"}
#: Statuses held in variables: what each expression can be. ``exc.status`` re-raises a
#: caught ProtocolError (chat_view.read_answer): its raise sites are walked themselves.
_DYNAMIC: dict[str, set[int]] = {"refusal.status": {RATE_LIMITED, BANNED}, "exc.status": set()}
#: Every /api route loads the session (Redis) first; CatchAllMiddleware answers 503 when
#: storage fails, whatever the handler.
_API_MIDDLEWARE_STATUSES = {503}


def _status(where: str, expr: ast.expr) -> set[int]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, int):
        return {expr.value}
    text = ast.unparse(expr)
    if text in _DYNAMIC:
        return _DYNAMIC[text]
    raise AssertionError(f"{where}: which statuses can {text!r} be? Add it to _DYNAMIC")


def statuses_of(func: Callable[..., Any] | type, seen: set[Any] | None = None) -> set[int]:
    """Every status ``func`` and the chatscale functions it calls by name can answer; a
    chatscale class it makes counts with every method of it (``view = _View(request)``,
    then ``await view.tail()``)."""
    seen = set() if seen is None else seen
    if func in seen:
        return set()
    seen.add(func)
    where = f"{func.__module__}.{func.__qualname__}"
    names = vars(sys.modules[func.__module__])
    found: set[int] = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(func)))):
        if not isinstance(node, ast.Call):
            continue
        callee = node.func
        name = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", None)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in _ERRORS:
            found |= _status(where, node.args[0] if node.args else keywords["status"])
        elif name in _RESPONSES:
            given = keywords.get("status_code") or (node.args[1] if len(node.args) > 1 else None)
            found |= _status(where, given) if given is not None else {200}
        if isinstance(callee, ast.Name) and name not in _ERRORS:
            target = names.get(callee.id)
            if not (inspect.isfunction(target) or inspect.isclass(target)):
                continue
            if target.__module__.startswith("chatscale."):
                found |= statuses_of(target, seen)
    return found


def _settings(durable_streams: bool) -> Settings:
    return load_settings(durable_streams=durable_streams, durable_streams_auth="none")


#: Routes whose HEAD answers differently from their GET: an operation of its own (Starlette
#: answers HEAD to every GET route; those are the GET's answer without its body).
_OWN_HEAD = {PATH}


def _routes(durable_streams: bool = True) -> list[Route]:
    app = create_app(_settings(durable_streams))
    routes = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path == "/static", f"a new mount {route.path}: document it"
            continue  # static files of the page, not the API
        assert isinstance(route, Route)
        routes.append(route)
    return routes


def _operations(durable_streams: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    paths = build_openapi(durable_streams=durable_streams)["paths"]
    return {(p, m.upper()): op for p, methods in paths.items() for m, op in methods.items()}


def _protocol_routes(settings: Settings) -> set[tuple[str, str]]:
    """The protocol's methods, served past the router (``app.lanes``) at the base path."""
    app = create_app(settings)
    assert isinstance(app, ShortcutStarlette)
    return {
        (lane.prefix + "{name}", method)
        for lane in app.lanes
        for method in durable_http._ALLOW.split(", ")
    }


@pytest.mark.parametrize("durable_streams", [False, True], ids=["plain", "durable"])
def test_every_route_and_method_is_documented_and_nothing_else(durable_streams: bool) -> None:
    served = {
        (r.path, m)
        for r in _routes(durable_streams)
        for m in (r.methods or ())
        if m != "HEAD" or r.path in _OWN_HEAD
    }
    served |= _protocol_routes(_settings(durable_streams))
    assert served == set(_operations(durable_streams))


def test_the_document_served_is_the_one_of_the_settings() -> None:
    """/openapi.json holds the chat view exactly when the server serves it."""
    for durable_streams in (False, True):
        with TestClient(create_app(_settings(durable_streams))) as client:
            document = client.get("/openapi.json").json()
        assert (PATH in document["paths"]) is durable_streams
        links = document["paths"]["/api/chat"]["post"]["responses"]["202"]["links"]
        assert ("ReadStreamDurable" in links) is durable_streams
        # _settings opens the protocol's routes (DURABLE_STREAMS_AUTH=none).
        assert document == build_openapi(durable_streams=durable_streams, durable_streams_open=True)
        assert ("/v1/stream/{name}" in document["paths"]) is durable_streams


@pytest.mark.parametrize("route", _routes(), ids=lambda r: r.path)
def test_every_status_a_handler_can_answer_is_documented(route: Route) -> None:
    operations = _operations()
    for method in sorted((route.methods or set()) - {"HEAD"}):
        documented = {int(code) for code in operations[(route.path, method)]["responses"]}
        possible = statuses_of(route.endpoint)
        if route.path.startswith("/api/"):
            possible |= _API_MIDDLEWARE_STATUSES
        missing = possible - documented
        assert not missing, f"{method} {route.path} can answer {sorted(missing)} undocumented"
        assert any(200 <= code < 300 for code in documented)


def test_the_walker_finds_statuses_through_helpers() -> None:
    """The check above can fail: POST /api/chat answers the ban (through ``_admit``), the
    idempotency conflict and the body checks (through ``read_chat_request``)."""
    start = next(r for r in _routes() if r.path == "/api/chat")
    assert {202, 400, 403, 409, 413, 415, 422, 429, 503} <= statuses_of(start.endpoint)


def test_resume_positions_are_documented_with_the_pattern_the_server_applies() -> None:
    operation = _operations()[("/api/chat/stream/{stream_id}", "GET")]
    schemas = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert (
        schemas["after"]
        == schemas["Last-Event-ID"]
        == {
            "type": "string",
            "pattern": EVENT_ID_PATTERN,
        }
    )
    pattern = re.compile(EVENT_ID_PATTERN)
    for good in ["", "0", "1", "42", "9" * 18]:
        assert pattern.fullmatch(good)
    for bad in ["01", "-1", "1.5", " 1", "x", "9" * 19, "1\n"]:
        assert not pattern.fullmatch(bad)


def test_the_walker_finds_the_chat_views_statuses_through_its_class() -> None:
    """The chat view's statuses are raised in ``_View``'s methods and as ProtocolError."""
    assert statuses_of(chat_view.read_answer) == {200, 204, 400, 403, 404, 429, 503}


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        ("-1", True),
        ("now", True),
        ("0000000000000000_0000000000000000", True),
        ("0000000000000042_0000000000000000", True),
        ("0000000000000001_0000000000000005", False),  # a byte part: not a chat answer's
        ("42", False),
        ("", False),
        ("NOW", False),
        ("-2", False),
        ("000000000000001_0000000000000000", False),
        ("0000000000000001-0000000000000000", False),
    ],
)
def test_the_chat_views_offset_pattern_is_what_it_accepts(offset: str, accepted: bool) -> None:
    parameters = _operations()[(PATH, "GET")]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == "offset")
    assert schema == {"type": "string", "pattern": OFFSET_QUERY_PATTERN}
    assert bool(re.fullmatch(OFFSET_QUERY_PATTERN, offset)) is accepted
    request = _request({"offset": offset})
    if accepted:
        chat_view._start(request)
    else:
        with pytest.raises(ProtocolError) as refused:
            chat_view._start(request)
        assert refused.value.status == 400


def test_the_chat_views_live_modes_are_the_documented_ones() -> None:
    parameters = _operations()[(PATH, "GET")]["parameters"]
    modes = next(p["schema"]["enum"] for p in parameters if p["name"] == "live")
    for mode in modes:
        assert chat_view._start(_request({"offset": "-1", "live": mode}))[1] == mode
    with pytest.raises(ProtocolError):
        chat_view._start(_request({"offset": "-1", "live": "poll"}))


def _request(query: dict[str, str]) -> Request:
    scope = {"type": "http", "method": "GET", "query_string": urlencode(query).encode()}
    return Request(scope)


# --- the protocol's own routes (DURABLE_STREAMS_PATH) -----------------------------------

#: The protocol's code: every status it answers is raised (ProtocolError) or built
#: (Answer, WriteResult) in these modules; chat_view is the chat API's and walked above.
_PROTOCOL_MODULES = (
    durable_http,
    durable_headers,
    offsets,
    auth,
    content,
    limits,
    rules,
    forks,
    memory,
    redis_store,
)
#: What the middleware in front of the protocol answers (chatscale.server.app's chain):
#: the body limit and timeout, the Origin check of unsafe methods, the catch-all's 503.
_CHAIN_STATUSES = {408, 413, 403, 503}


def _protocol_statuses() -> set[int]:
    found: set[int] = set()
    for module in _PROTOCOL_MODULES:
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            given: ast.expr | None = None
            if node.func.id == "ProtocolError":
                given = node.args[0]
            elif node.func.id in ("Answer", "WriteResult"):
                given = keywords.get("status") or (node.args[1] if len(node.args) > 1 else None)
                if given is None and node.func.id == "Answer":
                    found.add(200)
            if given is None:
                continue
            if isinstance(given, ast.Constant) and isinstance(given.value, int):
                found.add(given.value)
            # The rest pass a status through (``exc.status``, the Redis scripts' codes,
            # which redis_store turns into the ProtocolErrors and WriteResults found here).
    return found


def _protocol_path(document: dict[str, Any], base: str = "/v1/stream") -> dict[str, Any]:
    item: dict[str, Any] = document["paths"][f"{base}/{{name}}"]
    return item


def test_every_status_of_the_protocols_code_is_documented_and_no_other() -> None:
    """What the code answers (and the middleware before it) is what the document says,
    per status over the routes: each operation's own are held by
    tests/durable/test_protocol_openapi.py."""
    documented = {
        int(code)
        for operation in _protocol_path(build_openapi(durable_streams=True)).values()
        for code in operation["responses"]
    }
    possible = _protocol_statuses() | _CHAIN_STATUSES
    assert {200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 410, 429} <= possible
    # 405 answers methods that are not the protocol's: no operation to document it on.
    assert documented == possible - {405}


@pytest.mark.parametrize("auth", ["token", "none"])
def test_the_protocols_routes_are_at_the_configured_path_with_its_access(auth: str) -> None:
    settings = load_settings(
        durable_streams=True,
        durable_streams_path="/streams/v2",
        durable_streams_auth=auth,
        durable_streams_write_tokens="write-token-0123456789" if auth == "token" else "",
    )
    with TestClient(create_app(settings)) as client:
        document = client.get("/openapi.json").json()
    assert [p for p in document["paths"] if "stream" in p and not p.startswith("/api/")] == [
        "/streams/v2/{name}"
    ]
    item = _protocol_path(document, "/streams/v2")
    required = {method: operation["security"] for method, operation in item.items()}
    if auth == "none":
        assert all(needs == [{}] for needs in required.values())
    else:
        assert required == {
            "put": [{SCHEME: ["write"]}],
            "post": [{SCHEME: ["write"]}],
            "delete": [{SCHEME: ["write"]}],
            "get": [{SCHEME: ["read"]}],
            "head": [{SCHEME: ["read"]}],
            "options": [{}],
        }
    assert document["components"]["securitySchemes"][SCHEME]["scheme"] == "bearer"
    fork_source = next(
        p["schema"]["pattern"]
        for p in item["put"]["parameters"]
        if p["name"] == "Stream-Forked-From"
    )
    assert re.fullmatch(fork_source, "/streams/v2/a")
    assert not re.fullmatch(fork_source, "/streams/v2x/a")
    assert "securitySchemes" not in build_openapi()["components"]


def _parameter(method: str, name: str) -> dict[str, Any]:
    operation = _protocol_path(build_openapi(durable_streams=True))[method]
    schema: dict[str, Any] = next(p["schema"] for p in operation["parameters"] if p["name"] == name)
    return schema


@pytest.mark.parametrize(
    "offset",
    [
        "-1",
        "now",
        "0000000000000000_0000000000000000",
        "0000000000000007_0000000000000042",
        "",
        "42",
        "NOW",
        "-2",
        "000000000000001_0000000000000000",
        "0000000000000001-0000000000000000",
        "0000000000000001_0000000000000000 ",
    ],
)
def test_the_protocols_offset_pattern_is_what_it_accepts(offset: str) -> None:
    pattern = _parameter("get", "offset")["pattern"]
    if re.fullmatch(pattern, offset):
        offsets.parse_offset_query([offset])
    else:
        with pytest.raises(ProtocolError) as refused:
            offsets.parse_offset_query([offset])
        assert refused.value.status == 400
    assert re.fullmatch(OFFSET_PATTERN, str(offsets.Offset(7, 42)))


def test_the_protocols_header_patterns_are_the_ones_it_applies() -> None:
    """The code's own expressions, so the two cannot drift apart."""
    assert _parameter("put", "Stream-TTL")["pattern"] == durable_headers._TTL.pattern
    assert _parameter("put", "Stream-Expires-At")["pattern"] == durable_headers._RFC3339.pattern
    for name in ("Producer-Epoch", "Producer-Seq"):
        assert _parameter("post", name)["pattern"] == durable_headers._UINT.pattern
    assert _parameter("put", "Stream-Fork-Sub-Offset")["pattern"] == durable_headers._UINT.pattern
    flag = _parameter("post", "Stream-Closed")["pattern"]
    for value in ("true", "false", "TRUE", " False ", "yes", "1", "", "truee"):
        headers = durable_headers.RequestHeaders([(b"stream-closed", value.encode())])
        try:
            durable_headers._flag(headers, "Stream-Closed")
            accepted = True
        except ProtocolError:
            accepted = False
        assert bool(re.fullmatch(flag, value)) is accepted, value
    live = _parameter("get", "live")["enum"]
    assert live == ["long-poll", "sse"]


@pytest.mark.parametrize(
    "name", ["a", "a/b", "caf\u00e9", ".a", "a\x00", "a\x1fb", "\x7f", "a\x85", "x" * 1025, ""]
)
def test_a_name_outside_the_documented_schema_is_refused(name: str) -> None:
    """Negative-data rejection: what the name's schema excludes, the server refuses (400);
    it refuses more (other unprintable characters, `.`/`..` segments), as documented."""
    schema = _parameter("get", "name")
    fits = (
        schema["minLength"] <= len(name) <= schema["maxLength"]
        and re.fullmatch(schema["pattern"], name) is not None
    )
    paths = durable_headers.StreamPath("/v1/stream")
    if fits:
        assert paths.name(name) == name
    else:
        with pytest.raises(ProtocolError) as refused:
            paths.name(name)
        assert refused.value.status == 400
