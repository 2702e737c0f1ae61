"""Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio...).

Built on the official ``openai`` SDK. Closing the stream closes the HTTP response, so an
abort stops the upstream generation instead of letting it run to the end unread.

The answer is requested through the SDK's client (its retries, timeouts, error types, SSE
decoding, ``[DONE]`` and mid-stream ``error`` handling), but each streamed chunk is read as
the plain JSON object the SDK decoded, not built into its typed ``ChatCompletionChunk``:
that model building cost more server CPU per token than everything else on the way to the
client (docs/benchmarks.md, h2).

The SDK's HTTP transport is aiohttp by default (``OPENAI_HTTP_CLIENT``), the SDK's own
``DefaultAioHttpClient``: a streamed chunk arrives in a read of its own, and a read through
httpx's default transport (h11 parsing, an anyio cancel scope per read) cost about a third of
the server's CPU per token more (docs/benchmarks.md, h2). Proxies from the environment,
certificate settings and timeouts are the SDK's either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI, AsyncStream

from chatscale.llm.base import ChatMessage, Chunk, CompletionRequest, ModelInfo, ProviderError

#: The instruction sent after a partial answer when asking the model to continue it.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without "
    "repeating any of it and without any preamble."
)
log = logging.getLogger(__name__)
_MODELS_TTL_S = 60.0
#: Back-off of the model list after a failure: 1 s, doubling to a minute.
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 60.0
#: The error of an answer whose stream ended before the model said it had finished.
CUT_OFF = "the model's answer was cut off"


class AnswerCutOff(ProviderError):
    """The upstream stream ended (or broke) before a ``finish_reason``: the text is partial."""


class OpenAICompatibleProvider:
    """Chat completions from an OpenAI-compatible ``/v1`` API, streamed."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        models: Sequence[str] = (),
        timeout_s: float = 60.0,
        max_retries: int = 1,
        http_client: Literal["aiohttp", "httpx"] = "aiohttp",
    ) -> None:
        self._client = AsyncOpenAI(
            # Local servers (Ollama, llama.cpp, vLLM) accept any key; the SDK needs one.
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=_transport(http_client, base_url),
        )
        self._configured = tuple(models)
        self._listed: tuple[float, list[ModelInfo]] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: str | None = None

    def state(self) -> dict[str, Any]:
        """What is known about the upstream, without asking it: ``reachable`` (None until
        the model list was fetched once), its ``models`` and the last ``error``."""
        if self._configured:
            models = list(self._configured)
        else:
            models = [m.id for m in self._listed[1]] if self._listed else []
        reachable: bool | None = None
        if self._last_error is not None:
            reachable = False
        elif self._listed is not None:
            reachable = True
        shown: dict[str, Any] = {"provider": self.name, "reachable": reachable, "models": models}
        if self._last_error is not None:
            shown["error"] = self._last_error
        return shown

    async def check(self) -> dict[str, Any]:
        """Fetch the upstream's model list now (ignoring the cache and the back-off) and
        return :meth:`state`; ``chatscale doctor`` uses it."""
        self._listed = None
        self._retry_at = 0.0
        configured, self._configured = self._configured, ()
        try:
            await self.models()
        except ProviderError:
            pass
        finally:
            self._configured = configured
        return self.state()

    async def models(self) -> list[ModelInfo]:
        """OPENAI_MODELS when set, else the upstream's ``/models`` list (cached a minute)."""
        if self._configured:
            return [ModelInfo(id=m, provider=self.name, label=m) for m in self._configured]
        now = time.monotonic()
        if self._listed is not None and now - self._listed[0] < _MODELS_TTL_S:
            return self._listed[1]
        if now < self._retry_at:
            # Every request asks for the model list: an unreachable upstream would cost
            # each of them a connection attempt (or a timeout).
            raise ProviderError(f"cannot list the upstream's models: {self._last_error}")
        try:
            ids = sorted({m.id async for m in self._client.models.list()})
        except openai.OpenAIError as exc:
            self._last_error = _public(exc)
            self._failures += 1
            delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            raise ProviderError(f"cannot list the upstream's models: {self._last_error}") from exc
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = None
        found = [ModelInfo(id=m, provider=self.name, label=m) for m in ids]
        self._listed = (now, found)
        return found

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        """Stream one answer; the upstream request is closed when this iterator is closed."""
        messages = _payload(request.messages, request.continue_from)
        extra: dict[str, Any] = {}
        if request.max_tokens is not None:
            extra["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            extra["temperature"] = request.temperature
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            **extra,
        }
        try:
            # The SDK's own request path (retries, timeouts, errors), with chunks left as the
            # decoded JSON objects (cast to ``object``): see the module's docstring.
            upstream = await self._client.post(
                "/chat/completions",
                cast_to=object,
                body=body,
                stream=True,
                stream_cls=AsyncStream[object],
            )
        except openai.OpenAIError as exc:
            raise ProviderError(_public(exc)) from exc
        finish: str | None = None
        try:
            async for data in upstream:
                for choice in _choices(data):
                    delta = choice.get("delta")
                    if isinstance(delta, dict):
                        content = delta.get("content")
                        if content and isinstance(content, str):
                            yield Chunk(text=content)
                        calls = delta.get("tool_calls")
                        if calls and isinstance(calls, list):
                            for call in calls:
                                if isinstance(call, dict):
                                    yield Chunk(event="tool", data=_tool_call(call))
                    reason = choice.get("finish_reason")
                    if reason and isinstance(reason, str):
                        finish = reason
        except openai.APIConnectionError as exc:
            if timed_out(exc):
                raise AnswerCutOff(f"{CUT_OFF}: the model server stopped sending") from exc
            raise AnswerCutOff(f"{CUT_OFF}: the connection to the model server broke") from exc
        except openai.OpenAIError as exc:
            raise ProviderError(_public(exc)) from exc
        finally:
            # Runs on normal end, on error and when the consumer closes or is cancelled.
            await upstream.close()
        if finish is None:
            # Every chat completion stream names why it ended in its last choice; an end
            # without one is a connection closed mid-answer, not a complete answer.
            raise AnswerCutOff(f"{CUT_OFF}: the model server closed the stream before finishing")
        yield Chunk(finish_reason=finish)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


def _choices(data: object) -> list[dict[str, Any]]:
    """The first choice (``index`` 0, the only one asked for) of one streamed chunk."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        return []
    return [c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0]


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict):
        function = None
    return {
        "index": call.get("index"),
        "id": call.get("id"),
        "name": function.get("name") if function else None,
        "arguments": function.get("arguments") if function else None,
    }


def _payload(messages: Sequence[ChatMessage], partial: str) -> list[Any]:
    body: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
    if partial:
        body.append({"role": "assistant", "content": partial})
        body.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return body


def _public(exc: openai.OpenAIError) -> str:
    """What an end user may read about ``exc``: its kind and HTTP status, never the
    upstream's own words (a 401 quotes part of the key); those go to the log."""
    if isinstance(exc, openai.APIStatusError):
        log.warning("the model server answered %s: %s", exc.status_code, _detail(exc))
        return f"the model server answered {exc.status_code}; the server log has the details"
    if timed_out(exc):
        return "the model server did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        log.warning("cannot reach the model server: %r", exc.__cause__ or exc)
        return "cannot reach the model server"
    log.warning("the model server failed: %s", exc)
    return "the model server failed; the server log has the details"


def _transport(kind: str, base_url: str | None) -> openai.DefaultAioHttpClient | None:
    """The SDK's own aiohttp client, with its defaults (connection limits, redirects), or
    None for its default (httpx) client. aiohttp refuses credentials in the URL beside the
    API key's ``Authorization`` header, which httpx turns into basic authentication: such
    a base URL keeps httpx."""
    if kind != "aiohttp":
        return None
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.username is not None or parts.password is not None:
            log.info("OPENAI_BASE_URL carries credentials: the model server is asked via httpx")
            return None
    return openai.DefaultAioHttpClient()


def timed_out(exc: openai.OpenAIError) -> bool:
    """Whether ``exc`` is a timeout. The SDK's aiohttp transport reports a refused or failed
    connection as a connect *timeout*; what it wraps (an ``OSError`` that is no
    ``TimeoutError``) tells them apart."""
    if not isinstance(exc, openai.APITimeoutError):
        return False
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return False
        cause = cause.__cause__
    return True


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    detail = body.get("message") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    return exc.response.reason_phrase or "no detail"
