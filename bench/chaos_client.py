"""A chat client of the fault checker: starts one answer and checks it end to end.

It talks to a random instance for every request (as a load balancer that knows nothing
would), cuts its event stream at random moments and resumes with ``Last-Event-ID`` on
another random instance, and records every deviation from the guarantees as an *anomaly*
``(kind, detail)``:

==================  =========================================================================
``ids_gap``         an event id skipped (``N`` after ``M`` with ``N > M + 1``)
``ids_repeat``      an event id delivered again (``N <= M``)
``id_missing``      an event (other than ``reconnect``) without a numeric id
``no_final``        no final event before the chat's deadline (a job that never ends)
``final_missed``    a resume answered 204 (the answer ended, nothing after the client's last
                    event) although the client never received the final event
``final_not_done``  the answer ended with ``error`` or ``aborted`` although nobody aborted it
``text_diverged``   the deltas received do not add up to the answer's text in
                    ``GET /api/chat/stream/{id}/status`` (final events carry no text)
``status_*``        ``GET /api/chat/stream/{id}/status`` missing, or not the same status
                    and last event id
``stored_*``        the conversation's stored answer missing, different, or stored twice
``not_found``       the stream answered 404 while the client followed it
``resume_refused``  a resume after an id the client had received answered 400
``http_500``        an unexpected server error
``start_failed``    ``POST /api/chat`` was never accepted before the deadline
==================  =========================================================================
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from tests.server.helpers import SSEvent, parse

from chatscale.llm.chaos import CHAOS_MODEL, tokens_in

_RETRY_STATUS = {409, 429, 502, 503, 504}
#: The final events; ``/status`` names an ended answer by its final event (one vocabulary).
_FINALS = {"done", "aborted", "error"}
#: How long a 404 or 400 may persist before the client gives up following.
_GIVE_UP_404_S = 5.0
_GIVE_UP_400_S = 10.0
_CHECK_WAIT_S = 10.0
_PAUSE_S = 0.1
_DETAILS_PER_KIND = 3


@dataclass
class ChatResult:
    """What one chat saw, and what was wrong with it."""

    index: int
    stream_id: str = ""
    conversation_id: str = ""
    ids: list[int] = field(default_factory=list)
    text: str = ""
    final: str = ""
    final_data: dict[str, Any] = field(default_factory=dict)
    anomalies: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 0
    instances: set[str] = field(default_factory=set)
    started_at: float = 0.0
    ended_at: float = 0.0
    max_gap_s: float = 0.0
    #: Anomalies beyond the first few of a kind, counted.
    suppressed: dict[str, int] = field(default_factory=dict)
    _last_arrival: float = 0.0

    def flag(self, kind: str, detail: str) -> None:
        """Record an anomaly; past the first few of one kind only a count is kept."""
        shown = sum(1 for k, _ in self.anomalies if k == kind)
        if shown < _DETAILS_PER_KIND:
            self.anomalies.append((kind, detail))
        else:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1

    def kinds(self) -> set[str]:
        """Kinds of anomaly seen."""
        return {kind for kind, _ in self.anomalies}

    @property
    def answer_tokens(self) -> int:
        """Tokens in the final answer (0 when it never ended)."""
        return tokens_in(self.text) if self.final else 0

    def arrived(self) -> None:
        """Note an event's arrival (for the longest stall)."""
        now = time.monotonic()
        if self._last_arrival:
            self.max_gap_s = max(self.max_gap_s, now - self._last_arrival)
        self._last_arrival = now

    def as_json(self) -> dict[str, Any]:
        """A summary for the JSON report."""
        return {
            "index": self.index,
            "stream_id": self.stream_id,
            "final": self.final,
            "events": len(self.ids),
            "answer_tokens": self.answer_tokens,
            "connections": self.connections,
            "instances": sorted(self.instances),
            "duration_s": round(self.ended_at - self.started_at, 2),
            "max_gap_s": round(self.max_gap_s, 2),
            "anomalies": [{"kind": k, "detail": d} for k, d in self.anomalies],
            "more_anomalies": self.suppressed,
        }


class ChatClient:
    """Runs one chat against ``urls()`` (the instances' base URLs)."""

    def __init__(
        self,
        index: int,
        urls: Callable[[], list[str]],
        rng: random.Random,
        deadline_s: float,
        reconnect_s: tuple[float, float],
    ) -> None:
        self.result = ChatResult(index)
        self.urls = urls
        self.rng = rng
        self.deadline = time.monotonic() + deadline_s
        self.reconnect_s = reconnect_s
        self.token = ""
        self.last = 0
        self._refused_since: dict[int, float] = {}
        #: When the final event arrived, and which instance answered the last GET.
        self.final_at = 0.0
        self.served_by = ""

    def _url(self, path: str) -> str:
        return self.rng.choice(self.urls()) + path

    async def run(self) -> ChatResult:
        """Start, follow to the end, then check status and the stored answer."""
        result = self.result
        result.started_at = time.monotonic()
        timeout = httpx.Timeout(5.0, connect=2.0)
        async with httpx.AsyncClient(timeout=timeout) as client:
            if await self._start(client):
                await self._follow(client)
                if result.final:
                    await self._check_status(client)
                    await self._check_stored(client)
        result.ended_at = time.monotonic()
        return result

    # -- start --------------------------------------------------------------------------

    async def _start(self, client: httpx.AsyncClient) -> bool:
        body = {
            "message": f"chaos question {self.result.index}",
            "model": CHAOS_MODEL,
            "client_request_id": uuid.uuid4().hex,
        }
        while time.monotonic() < self.deadline:
            try:
                response = await client.post(self._url("/api/chat"), json=body)
            except httpx.HTTPError:
                await asyncio.sleep(_PAUSE_S)
                continue
            if response.status_code == 202:
                started = response.json()
                self.result.stream_id = started["stream_id"]
                self.result.conversation_id = started["conversation_id"]
                # The stream's resume token: it stays valid when Redis loses the sessions.
                self.token = str(started.get("resume_token", ""))
                return True
            self._unexpected(response.status_code, "POST /api/chat", response.text)
            await asyncio.sleep(_PAUSE_S)
        self.result.flag("start_failed", "POST /api/chat never accepted before the deadline")
        return False

    def _unexpected(self, status: int, what: str, body: str) -> None:
        if status >= 500 and status not in _RETRY_STATUS:
            self.result.flag("http_500", f"{what}: {status} {body[:200]}")
        elif status not in _RETRY_STATUS and status >= 400:
            self.result.flag("http_4xx", f"{what}: {status} {body[:200]}")

    # -- follow -------------------------------------------------------------------------

    async def _follow(self, client: httpx.AsyncClient) -> None:
        result = self.result
        while not result.final:
            if time.monotonic() > self.deadline:
                result.flag("no_final", f"no final event by the deadline (last event {self.last})")
                return
            if not await self._connect_once(client):
                return
            if not result.final:
                await asyncio.sleep(0.02)

    async def _connect_once(self, client: httpx.AsyncClient) -> bool:
        """One connection; False when following must stop (a persistent 404 or 400)."""
        path = f"/api/chat/stream/{self.result.stream_id}"
        headers = {"Last-Event-ID": str(self.last)} if self.last else {}
        if self.token:
            headers["X-Resume-Token"] = self.token
        cut_at = time.monotonic() + self.rng.uniform(*self.reconnect_s)
        try:
            async with client.stream("GET", self._url(path), headers=headers) as response:
                self.result.connections += 1
                if "x-chatscale-instance" in response.headers:
                    self.result.instances.add(response.headers["x-chatscale-instance"])
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    return await self._refused(response.status_code, body)
                self._refused_since.clear()
                await self._read(response.aiter_lines(), cut_at)
        except httpx.HTTPError:
            await asyncio.sleep(_PAUSE_S)
        return True

    async def _refused(self, status: int, body: str) -> bool:
        """A non-200 answer to a follow: retry, or flag and give up when it persists."""
        if status == 204:
            # Only sent when nothing follows the client's last event in an ended stream:
            # then that last event was the final one, which this client never saw.
            self.result.flag("final_missed", f"204 after event {self.last}")
            return False
        if status in _RETRY_STATUS:
            await asyncio.sleep(_PAUSE_S)
            return True
        now = time.monotonic()
        since = self._refused_since.setdefault(status, now)
        limit = {404: _GIVE_UP_404_S, 400: _GIVE_UP_400_S}.get(status)
        kind = {404: "not_found", 400: "resume_refused"}.get(status)
        if limit is None or kind is None:
            self._unexpected(status, "GET stream", body)
            await asyncio.sleep(_PAUSE_S)
            return True
        if now - since < limit:
            await asyncio.sleep(0.25)
            return True
        self.result.flag(kind, f"after event {self.last}: {status} {body[:200]} for {limit:g} s")
        return False

    async def _read(self, lines: AsyncIterator[str], cut_at: float) -> None:
        async for event in parse(lines):
            if event.event == "reconnect":
                return
            self._take(event)
            if self.result.final or time.monotonic() >= cut_at:
                return

    def _take(self, event: SSEvent) -> None:
        result = self.result
        if not (event.id and event.id.isdigit()):
            shown = json.dumps(event.data)[:200]
            result.flag("id_missing", f"{event.event} event without id after {self.last}: {shown}")
            if event.event in _FINALS:
                self._final(event)
            return
        number = int(event.id)
        if number <= self.last:
            result.flag("ids_repeat", f"event {number} after {self.last} ({event.event})")
            return
        if number != self.last + 1:
            result.flag("ids_gap", f"event {number} after {self.last} ({event.event})")
        self.last = number
        result.ids.append(number)
        result.arrived()
        if event.event == "delta":
            result.text += str(event.data.get("text", ""))
        if event.event in _FINALS:
            self._final(event)

    def _final(self, event: SSEvent) -> None:
        self.final_at = time.monotonic()
        result = self.result
        result.final, result.final_data = event.event, event.data
        if event.event != "done":
            detail = json.dumps({k: v for k, v in event.data.items() if k != "text"})
            result.flag("final_not_done", f"{event.event} at event {self.last}: {detail}")

    # -- checks after the end -----------------------------------------------------------

    async def _get_json(
        self,
        client: httpx.AsyncClient,
        path: str,
        wait_s: float,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """GET ``path`` on random instances until it answers a non-retryable status."""
        deadline = time.monotonic() + wait_s
        status, body = 0, {}
        self.served_by = ""
        while time.monotonic() < deadline:
            try:
                response = await client.get(self._url(path), headers=headers)
            except httpx.HTTPError:
                await asyncio.sleep(_PAUSE_S)
                continue
            status = response.status_code
            self.served_by = response.headers.get("x-chatscale-instance", "")
            if status not in _RETRY_STATUS:
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                return status, body
            await asyncio.sleep(_PAUSE_S)
        return status, body

    async def _check_status(self, client: httpx.AsyncClient) -> None:
        result = self.result
        path = f"/api/chat/stream/{result.stream_id}/status"
        token = {"X-Resume-Token": self.token} if self.token else None
        code, body = await self._get_json(client, path, _CHECK_WAIT_S, token)
        if code != 200:
            result.flag("status_missing", f"status answered {code}")
            return
        if body.get("text") != result.text:
            result.flag("text_diverged", _divergence(result.text, str(body.get("text"))))
        expected = {
            "status": result.final,
            "last_event_id": str(self.last),
        }
        found = {key: body.get(key) for key in expected}
        if found != expected:
            wrong = [k for k in expected if found[k] != expected[k]]
            details = {k: _short(found[k]) for k in wrong}
            wants = {k: _short(expected[k]) for k in wrong}
            result.flag("status_mismatch", f"status has {details}, expected {wants}")

    async def _check_stored(self, client: httpx.AsyncClient) -> None:
        result = self.result
        path = f"/api/conversations/{result.conversation_id}"
        start = time.monotonic()
        deadline = start + _CHECK_WAIT_S
        answers: list[dict[str, Any]] = []
        # What each read saw, to tell a late write from a read of a node without it.
        reads: list[str] = []
        while time.monotonic() < deadline:
            code, body = await self._get_json(client, path, deadline - time.monotonic())
            messages = body.get("messages", []) if code == 200 else []
            answers = [m for m in messages if m.get("stream_id") == result.stream_id]
            reads.append(
                f"{time.monotonic() - start:.1f}s {self.served_by or '?'} {code} "
                f"{len(messages)} msgs"
            )
            if answers:
                break
            await asyncio.sleep(0.2)
        if not answers:
            since_end = start - self.final_at
            shown = reads if len(reads) <= 6 else [*reads[:3], "…", *reads[-3:]]
            result.flag(
                "stored_missing",
                f"the answer is not in the conversation ({since_end:.1f} s after the final "
                f"event; reads: {'; '.join(shown)})",
            )
            return
        await asyncio.sleep(0.3)  # a second copy would show up now
        code, again = await self._get_json(client, path, _CHECK_WAIT_S)
        if code == 200:  # else judge the first read (the second one is only for duplicates)
            messages = again.get("messages", [])
            answers = [m for m in messages if m.get("stream_id") == result.stream_id]
        else:
            result.flag("stored_missing", f"the conversation answered {code} on a second read")
        if len(answers) > 1:
            result.flag("stored_twice", f"{len(answers)} stored answers for one stream")
        stored = answers[0] if answers else {}
        if stored.get("content") != result.text or stored.get("status") != result.final:
            result.flag(
                "stored_mismatch",
                f"stored status {stored.get('status')!r}, "
                + _divergence(result.text, str(stored.get("content"))),
            )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _divergence(seen: str, other: str) -> str:
    """Where two texts part: the common prefix length and a few words of each after it."""
    if seen == other:
        return "texts equal"
    common = 0
    for a, b in zip(seen, other, strict=False):
        if a != b:
            break
        common += 1
    return (
        f"received {len(seen)} chars ({tokens_in(seen)} tokens), other {len(other)} chars "
        f"({tokens_in(other)} tokens); they part at char {common}: "
        f"received {seen[common : common + 40]!r} vs {other[common : common + 40]!r}"
    )
