"""/openapi.json cannot drift from the routes: every route and method is documented, and
every status a handler can answer (read from its code and the functions it calls) is too."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from starlette.routing import Mount, Route

from chatscale.config import load_settings
from chatscale.ratelimit.responses import BANNED, RATE_LIMITED
from chatscale.server.app import create_app
from chatscale.server.openapi import build_openapi
from chatscale.server.sse import EVENT_ID_PATTERN

#: Calls that answer with the status given as their first argument.
_ERRORS = {"ApiError", "error_response"}
#: Responses whose status is their ``status_code`` argument (200 when absent).
_RESPONSES = {"JSONResponse", "Response", "PlainTextResponse", "FileResponse"}
#: Statuses held in variables: what each expression can be.
_DYNAMIC = {"refusal.status": {RATE_LIMITED, BANNED}}
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


def statuses_of(func: Callable[..., Any], seen: set[Any] | None = None) -> set[int]:
    """Every status ``func`` and the chatscale functions it calls by name can answer."""
    seen = set() if seen is None else seen
    if func in seen:
        return set()
    seen.add(func)
    where = f"{func.__module__}.{func.__qualname__}"
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
        if isinstance(callee, ast.Name):
            target = func.__globals__.get(callee.id)
            if inspect.isfunction(target) and target.__module__.startswith("chatscale."):
                found |= statuses_of(target, seen)
    return found


def _routes() -> list[Route]:
    app = create_app(load_settings())
    routes = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path == "/static", f"a new mount {route.path}: document it"
            continue  # static files of the page, not the API
        assert isinstance(route, Route)
        routes.append(route)
    return routes


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    paths = build_openapi()["paths"]
    return {(p, m.upper()): op for p, methods in paths.items() for m, op in methods.items()}


def test_every_route_and_method_is_documented_and_nothing_else() -> None:
    served = {(r.path, m) for r in _routes() for m in (r.methods or ()) if m != "HEAD"}
    assert served == set(_operations())


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
