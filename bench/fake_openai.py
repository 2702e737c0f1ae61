"""A fake OpenAI-compatible upstream for the HTTP benchmarks: ``GET /v1/models`` and streaming
``POST /v1/chat/completions`` at a set pace, in a process of its own.

    .venv/bin/python bench/fake_openai.py --port 8900 [--rate 50] [--tokens 200]

Every answer is ``--tokens`` words (each followed by one space, so a client counts tokens by
spaces) streamed as ``chat.completion.chunk`` server-sent events, token *n* at the request's
arrival + *n*/``--rate`` (a fixed schedule), then a chunk with ``finish_reason`` ``stop``
(``length`` when the request's ``max_tokens`` cut it) and ``data: [DONE]``. The words vary
per request. A request without ``"stream": true`` is refused (400): chatscale always streams.

Raw asyncio rather than a web framework, so that the upstream costs the shared machine as
little CPU as possible; it runs as its own process, so the server's CPU time (read from
/proc for the server's pid) never includes it. Prints ``ready <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import string
import sys
import time

MODEL = "fake-bench"


def chunk(completion: str, created: int, delta: dict[str, str], finish: str | None) -> bytes:
    """One ``chat.completion.chunk`` event, shaped like OpenAI's."""
    payload = {
        "id": completion,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class Upstream:
    """The server: one coroutine per connection, keep-alive, chunked SSE answers."""

    def __init__(self, rate: float, tokens: int) -> None:
        self.rate = rate
        self.tokens = tokens
        self.answers = 0
        self._ids = itertools.count(1)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if method == "GET" and path.endswith("/models"):
                    self._json(writer, 200, {"object": "list", "data": [_model()]})
                elif method == "POST" and path.endswith("/chat/completions"):
                    await self._chat(writer, json.loads(body or b"{}"))
                else:
                    self._json(writer, 404, {"error": {"message": "not found"}})
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()

    def _json(self, writer: asyncio.StreamWriter, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def _chat(self, writer: asyncio.StreamWriter, request: dict[str, object]) -> None:
        if request.get("stream") is not True:
            self._json(writer, 400, {"error": {"message": "this fake only streams"}})
            return
        number = next(self._ids)
        completion, created = f"chatcmpl-bench{number}", int(time.time())
        limit = request.get("max_tokens")
        count = min(self.tokens, limit) if isinstance(limit, int) else self.tokens
        rng = random.Random(number)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        interval, began = 1.0 / self.rate, time.monotonic()
        first = chunk(completion, created, {"role": "assistant", "content": ""}, None)
        _send_chunk(writer, first)
        for n in range(1, count + 1):
            delay = began + n * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            _send_chunk(writer, chunk(completion, created, {"content": _word(rng)}, None))
            await writer.drain()
        finish = "length" if count < self.tokens else "stop"
        _send_chunk(writer, chunk(completion, created, {}, finish))
        _send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        self.answers += 1


def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) + " "


def _model() -> dict[str, object]:
    return {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}


async def serve(port: int, rate: float, tokens: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    upstream = Upstream(rate, tokens)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()
    print(f"answers {upstream.answers}", file=sys.stderr)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per answer")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    args = parser.parse_args()
    if args.rate <= 0 or args.tokens < 1:
        parser.error("--rate and --tokens must be positive")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, args.rate, args.tokens))
    else:
        uvloop.run(serve(args.port, args.rate, args.tokens))


if __name__ == "__main__":
    main()
