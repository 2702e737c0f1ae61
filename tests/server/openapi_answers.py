"""Real answers held to the served /openapi.json: every status is documented, required
headers are there, every documented header's value fits its schema, the content type is a
documented one (or the answer has no body when none is) and a JSON body fits its schema."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema_rs


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of an event stream's body as a client (EventSource) parses them: blocks
    with data, ``event`` defaulting to ``message``; comments and data-less blocks are not
    events."""
    events: list[dict[str, Any]] = []
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", text):
        fields: dict[str, Any] = {}
        data: list[str] = []
        for line in re.split(r"\r\n|\r|\n", block):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name in ("event", "id"):
                fields[name] = value
            elif name == "retry" and value.isdigit():
                fields[name] = int(value)
        if data:
            events.append({"event": "message", **fields, "data": "\n".join(data)})
    return events


class Document:
    """The served /openapi.json, and checks of answers of one path against it."""

    def __init__(self, document: dict[str, Any], path: str) -> None:
        self.document = document
        self.path = path
        self.seen: set[tuple[str, int, str]] = set()

    def valid(self, schema: dict[str, Any], value: Any) -> bool:
        """Whether ``value`` fits ``schema`` ($refs point into the document's components)."""
        return jsonschema_rs.validator_for(
            {**schema, "components": self.document["components"]}
        ).is_valid(value)

    def check(self, response: httpx.Response) -> httpx.Response:
        """Assert ``response`` is as the document says; returns it."""
        method = response.request.method
        operation = self.document["paths"][self.path][method.lower()]
        status = response.status_code
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} answered {status}: not documented"
        for name, header in documented.get("headers", {}).items():
            value = response.headers.get(name)
            if value is None:
                assert not header.get("required"), f"{method} {status} lacks {name}"
            else:
                assert self.valid(header["schema"], value), f"{name}: {value!r}"
        content = documented.get("content", {})
        kind = response.headers.get("content-type", "").split(";")[0]
        if method == "HEAD" or status in (204, 304) or not content:
            assert response.content == b"", f"{method} {status} has an undocumented body"
        else:
            assert kind in content or "*/*" in content, f"{method} {status} answered {kind}"
        if kind == "application/json" and response.content and kind in content:
            assert self.valid(content[kind]["schema"], response.json()), response.text
        if kind == "text/event-stream" and kind in content and response.is_stream_consumed:
            # OpenAPI 3.1: the schema describes each event, as a client parses it (checked
            # once the body was read).
            events = sse_events(response.text)
            assert events, "an event stream without events"
            for event in events:
                assert self.valid(content[kind]["schema"], event), event
        self.seen.add((method, status, kind))
        return response
