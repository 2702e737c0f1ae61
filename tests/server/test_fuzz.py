"""Random bodies, ids and headers never get a 500 (hypothesis against a live server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatscale.config import load_settings
from tests.server.helpers import ServerThread

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "message": JSON_VALUES,
            "conversation_id": JSON_VALUES,
            "model": JSON_VALUES,
            "client_request_id": JSON_VALUES,
        },
    ),
)
IDS = st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    with ServerThread(
        load_settings(
            demo_tokens_per_second=10_000,
            demo_response_tokens=2,
            chat_rate_limit="10000/second",
            # Every example is a new client, so a new session from one address.
            session_create_limit="10000/second",
        )
    ) as server:
        yield server


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
def test_chat_bodies_never_500(live: ServerThread, body: Any) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        response = client.post(
            "/api/chat", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    assert response.status_code in (202, 400, 413, 422, 429), response.text
    if response.status_code != 202:
        assert isinstance(response.json()["error"], str)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stream_id=IDS,
    # httpx itself refuses header values with leading or trailing spaces: not sendable.
    last_event_id=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=25).filter(
        lambda s: s == s.strip()
    ),
)
@example(stream_id=".", last_event_id="")
@example(stream_id="..", last_event_id="")
def test_stream_ids_and_positions_never_500(
    live: ServerThread, stream_id: str, last_event_id: str
) -> None:
    # Dots are encoded too: a client drops a "." or ".." path segment (RFC 3986), and
    # "/api/conversations/." went out as the list of conversations (a 200, in CI).
    quoted = quote(stream_id, safe="").replace(".", "%2E")
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for method, path, headers in (
            ("GET", f"/api/chat/stream/{quoted}", {"Last-Event-ID": last_event_id}),
            ("GET", f"/api/chat/stream/{quoted}/status", {}),
            ("POST", f"/api/chat/stream/{quoted}/abort", {}),
            ("GET", f"/api/conversations/{quoted}", {}),
        ):
            response = client.request(method, path, headers=headers)
            assert response.status_code in (400, 404, 405), (
                path,
                response.status_code,
                response.text,
            )
            assert isinstance(response.json()["error"], str)
