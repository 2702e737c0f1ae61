"""A tiny OpenAI-compatible server for tests: /v1/models and streaming /v1/chat/completions.

It runs uvicorn in a thread of its own on a free loopback port and records every chat request,
including whether the client closed the connection before the answer was complete.

Models: ``fake-1`` streams ``tokens`` tokens ``tok0 tok1 ...`` every ``delay`` seconds;
``fake-500`` answers HTTP 500; ``fake-401`` answers HTTP 401 quoting part of the key (as
OpenAI does); ``fake-midfail`` sends two tokens then an error payload;
``fake-hang`` sends one token then nothing until the client leaves; ``fake-cut`` sends two
tokens then ends the response cleanly without a ``finish_reason`` or ``[DONE]`` (an upstream
that stops mid-answer); ``fake-reset`` sends two tokens then breaks the connection;
``fake-tools`` sends a token, a second choice's token (``index`` 1), a tool call in two
deltas and ends with ``finish_reason`` ``tool_calls``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = (
    "fake-1",
    "fake-500",
    "fake-401",
    "fake-midfail",
    "fake-hang",
    "fake-cut",
    "fake-reset",
    "fake-tools",
)


@dataclass
class Recorded:
    """One chat request as the server saw it."""

    body: dict[str, Any]
    sent: int = 0
    completed: bool = False
    closed_early: bool = False
    ended: threading.Event = field(default_factory=threading.Event)


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, tokens: int = 5, delay: float = 0.0) -> None:
        self.tokens = tokens
        self.delay = delay
        self.requests: list[Recorded] = []
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def _models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "tests"} for m in MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        record = Recorded(body=body)
        self.requests.append(record)
        model = body.get("model")
        if model == "fake-500":
            record.ended.set()
            return JSONResponse(
                {"error": {"message": "upstream exploded", "type": "server_error"}},
                status_code=500,
            )
        if model == "fake-401":
            record.ended.set()
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            shown = f"{key[:3]}****{key[-4:]}"
            return JSONResponse(
                {"error": {"message": f"Incorrect API key provided: {shown}", "type": "auth"}},
                status_code=401,
            )
        return StreamingResponse(self._events(record, model), media_type="text/event-stream")

    async def _events(self, record: Recorded, model: str) -> AsyncIterator[bytes]:
        try:
            if model == "fake-tools":
                for chunk in _tool_chunks(model):
                    yield chunk
                record.completed = True
                return
            count = {"fake-midfail": 2, "fake-hang": 1, "fake-cut": 2, "fake-reset": 2}.get(
                model, self.tokens
            )
            for i in range(count):
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield _chunk(model, {"content": f"tok{i} "})
                record.sent += 1
            if model == "fake-midfail":
                yield b'data: {"error": {"message": "model crashed mid-answer"}}\n\n'
                return
            if model == "fake-cut":
                return
            if model == "fake-reset":
                raise ConnectionAbortedError("fake-reset: the connection breaks mid-answer")
            if model == "fake-hang":
                await asyncio.sleep(3600)
            yield _chunk(model, {}, finish="stop")
            yield b"data: [DONE]\n\n"
            record.completed = True
        finally:
            record.closed_early = not record.completed
            record.ended.set()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    payload = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _tool_chunks(model: str) -> list[bytes]:
    call = {"index": 0, "id": "call_1", "type": "function"}
    return [
        _chunk(model, {"role": "assistant", "content": "tok0 "}),
        _chunk(model, {"content": "other choice "}, index=1),
        _chunk(model, {"tool_calls": [{**call, "function": {"name": "f", "arguments": ""}}]}),
        _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}),
        _chunk(model, {}, finish="tool_calls"),
        b"data: [DONE]\n\n",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
