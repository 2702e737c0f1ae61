"""Reading a JSON request body: 415, 400 and 422 with a reason, never a 500."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from chatscale.server.errors import ApiError

Body = TypeVar("Body", bound=BaseModel)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (bounded by the body-limit middleware)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "expected a JSON body (Content-Type: application/json)")
    raw = await request.body()
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed JSON body") from None
    except RecursionError:
        # json's C scanner stops at the interpreter's recursion limit: a 400, not a 500.
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    return payload


def validate(model: type[Body], payload: dict[str, Any]) -> Body:
    """``payload`` as ``model``; a 422 naming the first few problems otherwise."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error["loc"]) or "body"
            problems.append(f"{where}: {error['msg']}")
        raise ApiError(422, "; ".join(problems)) from None
