"""Reading a request's input: a JSON object body, validated by a pydantic model, and the
idempotency key; every refusal a 4xx naming what was wrong (``fields`` for a 422)."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from chatscale.server.errors import ApiError, FieldError
from chatscale.server.schemas import REQUEST_ID_PATTERN

_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_Model = TypeVar("_Model", bound=BaseModel)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body (400/415 with a reason otherwise)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "expected a JSON body (Content-Type: application/json)")
    raw = await request.body()  # bounded by BodyLimitMiddleware
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


def validate(model: type[_Model], payload: dict[str, Any]) -> _Model:
    """``payload`` as ``model``; a 422 naming every invalid field otherwise."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields: list[FieldError] = [
            {"loc": ["body", *error["loc"]], "msg": error["msg"]} for error in exc.errors()
        ]
        raise ApiError(422, describe(fields), fields=fields) from None


def invalid(loc: list[str | int], msg: str) -> ApiError:
    """A 422 for one invalid input at ``loc``."""
    fields: list[FieldError] = [{"loc": loc, "msg": msg}]
    return ApiError(422, describe(fields), fields=fields)


def check_length(name: str, value: str | None, max_chars: int) -> None:
    """413 for a text longer than MAX_MESSAGE_CHARS."""
    if isinstance(value, str) and len(value) > max_chars:
        raise ApiError(
            413,
            f"{name} too long: {len(value)} characters, at most {max_chars} (MAX_MESSAGE_CHARS)",
        )


def describe(fields: list[FieldError]) -> str:
    """The readable ``error`` of a refusal: the first five fields and what is wrong."""
    problems = []
    for error in fields[:5]:
        where = ".".join(str(p) for p in error["loc"][1:] or error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
    return "; ".join(problems) + more


def request_id_of(request: Request, in_body: str | None) -> str | None:
    """The idempotency key: ``client_request_id`` or the ``Idempotency-Key`` header (the
    same semantics; both present must agree)."""
    header = request.headers.get("idempotency-key")
    if header is None:
        return in_body
    if not _REQUEST_ID.fullmatch(header):
        raise invalid(["header", "Idempotency-Key"], f"must match {REQUEST_ID_PATTERN}")
    if in_body is not None and in_body != header:
        # Each is valid alone: a 400 for the request (422 would say a field is malformed).
        fields: list[FieldError] = [
            {
                "loc": ["header", "Idempotency-Key"],
                "msg": "differs from client_request_id (send one of them)",
            }
        ]
        raise ApiError(400, describe(fields), fields=fields)
    return header
