"""Chat answers read as Durable Streams: ``GET``/``HEAD /api/chat/stream/{id}/durable``.

Read-only and in JSON mode: each event of the answer is one message ``{"id", "type",
"data"}`` (a final event without ``text``, as on the chat API's event stream), the stream is
closed once the final event is in it, and offsets are ``<event seq>_0000000000000000`` (the
byte part is always zero). Who may read it is decided exactly as on the chat API
(:func:`~chatscale.server.api_chat.owner_of`: the session's user, or a resume token).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from chatscale.durable.errors import ProtocolError
from chatscale.durable.model import Record
from chatscale.durable.offsets import Offset, next_cursor, parse_offset_query
from chatscale.durable.sse import control_event, data_event
from chatscale.server.api_chat import owner_of, services
from chatscale.server.errors import ApiError
from chatscale.server.schemas import ID_PATTERN
from chatscale.streams import Event, InvalidEventId, JobNotFound, TooManyListeners

_ID = re.compile(ID_PATTERN)
_JSON = "application/json"
#: After a long-poll's first event, more events arriving within this window join its answer.
_GATHER_S = 0.01


def _offset(seq: int) -> str:
    return str(Offset(seq, 0))


def _message(event: Event) -> Record:
    data = event.data
    if event.final and "text" in data:
        data = {k: v for k, v in data.items() if k != "text"}
    text = json.dumps({"id": event.id, "type": event.type, "data": data}, separators=(",", ":"))
    return Record(text.encode(), 1)


class _View:
    """One request's view of one job."""

    def __init__(self, request: Request) -> None:
        stream_id = request.path_params["stream_id"]
        if not _ID.fullmatch(stream_id):
            raise ApiError(404, "stream not found")
        self.request = request
        self.stream_id = stream_id
        self.owner = owner_of(request, stream_id)
        svc = services(request)
        if svc.streams is None:
            raise ApiError(503, "starting up", {"Retry-After": "1"})
        self.manager = svc.streams
        self.settings = svc.settings

    async def tail(self) -> tuple[int, bool]:
        """The last event's seq and whether the answer is finished; 404 when unknown."""
        info = await self.manager.status(self.stream_id, owner=self.owner)
        if info is None:
            raise ApiError(404, "stream not found")
        return int(info.last_event_id or 0), not info.active

    @contextlib.asynccontextmanager
    async def events(self, after: int) -> AsyncIterator[AsyncIterator[Event]]:
        """The job's events after seq ``after`` (its errors as API errors)."""
        iterator = self.manager.subscribe(self.stream_id, after=str(after), owner=self.owner)
        try:
            yield iterator
        except JobNotFound:
            raise ApiError(404, "stream not found") from None
        except InvalidEventId as exc:
            raise ApiError(400, f"offset is not in this answer: {exc.problem}") from None
        except TooManyListeners as exc:
            raise ApiError(429, str(exc), {"Retry-After": "5"}) from None
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()


def _start(request: Request) -> tuple[int | None, str | None]:
    """The requested position (``None``: the tail) and the live mode."""
    query = request.query_params
    live = query.get("live")
    if live not in (None, "long-poll", "sse"):
        raise ProtocolError(400, "live must be long-poll or sse")
    offsets = query.getlist("offset")
    if live is not None and not offsets:
        raise ProtocolError(400, f"live={live} needs an offset parameter")
    wanted = parse_offset_query(offsets)
    if wanted.now:
        return None, live
    offset = wanted.offset or Offset(0, 0)
    if offset.byte != 0:
        raise ProtocolError(400, f"offset {offset} is not an offset of a chat answer")
    return offset.record, live


def _answer(records: list[Record], start: int, end: int, done: bool, up_to_date: bool) -> Response:
    headers = {
        "Content-Type": _JSON,
        "Stream-Next-Offset": _offset(end),
        "Cache-Control": "no-store",
        "ETag": f'"{start}:{end}{":c" if done and up_to_date else ""}"',
    }
    if up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if done and up_to_date:
        headers["Stream-Closed"] = "true"
    body = b"[" + b",".join(r.data for r in records) + b"]"
    return Response(body, 200, headers)


async def read_answer(request: Request) -> Response:
    """``GET``/``HEAD``: catch-up, ``live=long-poll`` or ``live=sse``."""
    try:
        return await _read(request)
    except ProtocolError as exc:
        raise ApiError(exc.status, exc.message, exc.headers) from None


async def _read(request: Request) -> Response:
    view = _View(request)
    start, live = _start(request)
    last, done = await view.tail()
    if request.method == "HEAD":
        headers = {
            "Content-Type": _JSON,
            "Stream-Next-Offset": _offset(last),
            "Cache-Control": "no-store",
        }
        if done:
            headers["Stream-Closed"] = "true"
        return Response(status_code=200, headers=headers)
    if start is None:
        start = last
        if live is None:
            return _answer([], last, last, done, True)
    if start > last:
        raise ProtocolError(400, f"offset {_offset(start)} is past the answer's end")
    if live == "sse":
        return StreamingResponse(
            _sse(view, start, request.query_params.get("cursor")),
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
    if live is None:
        records: list[Record] = []
        end = start
        if start < last:
            async with view.events(start) as events:
                async for event in events:
                    records.append(_message(event))
                    end = int(event.id)
                    if end >= last or event.final:
                        break
        return _answer(records, start, end, done, end >= last)
    return await _long_poll(view, start, last, done)


async def _long_poll(view: _View, start: int, last: int, done: bool) -> Response:
    cursor = next_cursor(view.request.query_params.get("cursor"))
    if done and start >= last:
        return Response(
            status_code=204,
            headers={
                "Stream-Next-Offset": _offset(last),
                "Stream-Up-To-Date": "true",
                "Stream-Closed": "true",
            },
        )
    records: list[Record] = []
    end = start
    final = False
    timeout = view.settings.durable_streams_long_poll_timeout
    async with view.events(start) as events:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                first = await anext(events)
                records.append(_message(first))
                end, final = int(first.id), first.final
        while records and not final:
            try:
                async with asyncio.timeout(_GATHER_S):
                    event = await anext(events)
            except (TimeoutError, StopAsyncIteration):
                break
            records.append(_message(event))
            end, final = int(event.id), event.final
    if not records:
        return Response(
            status_code=204,
            headers={
                "Stream-Next-Offset": _offset(start),
                "Stream-Up-To-Date": "true",
                "Stream-Cursor": cursor,
            },
        )
    response = _answer(records, start, end, final, True)
    response.headers["Stream-Cursor"] = cursor
    return response


async def _sse(view: _View, start: int, cursor: str | None) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + view.settings.durable_streams_sse_duration
    position = start
    last, done = await view.tail()
    if done and start >= last:
        yield control_event(_offset(last), None, up_to_date=True, closed=True)
        return
    if start >= last:
        yield control_event(_offset(start), next_cursor(cursor), up_to_date=True, closed=False)
    async with view.events(start) as events:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    event = await anext(events)
            except (TimeoutError, StopAsyncIteration):
                return
            position = int(event.id)
            # From the request's cursor each time (see chatscale.durable.http).
            yield data_event(_JSON, [_message(event)]) + control_event(
                _offset(position),
                next_cursor(cursor),
                up_to_date=position >= last,
                closed=event.final,
            )
            if event.final:
                return


routes = [Route("/api/chat/stream/{stream_id}/durable", read_answer, methods=["GET", "HEAD"])]
