"""Cross-site request forgery, defence in depth: unsafe /api/ requests from another origin
are refused with a JSON 403 (Origin, else Sec-Fetch-Site); requests without either pass."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from chatscale.config import load_settings
from chatscale.errors import ConfigError
from chatscale.sessions.csrf import normalize_origin
from tests.server.helpers import ServerThread

CHAT = {"message": "hello"}


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A server whose limits leave room for every request of these tests."""
    settings = load_settings(
        demo_tokens_per_second=1000,
        demo_response_tokens=2,
        chat_concurrency_limit=0,
        chat_rate_limit="1000/minute",
    )
    with ServerThread(settings) as running:
        yield running


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith("cross-origin request refused")
    assert "set-cookie" not in response.headers  # no session minted for it


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1"},  # another port is another origin
        {"Origin": "http://127.0.0.1.evil.example"},
        {"Origin": "not an origin"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_cross_origin_posts_are_refused(
    server: ServerThread, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    started = (await client.post("/api/chat", json=CHAT)).json()  # the session's own answer
    _refused(await client.post("/api/chat", json=CHAT, headers=headers))
    abort = f"/api/chat/stream/{started['stream_id']}/abort"
    _refused(await client.post(abort, headers=headers))
    # Safe methods are not affected.
    assert (await client.get("/api/conversations", headers=headers)).status_code == 200


async def test_same_origin_and_header_less_posts_pass(
    server: ServerThread, client: httpx.AsyncClient
) -> None:
    own = f"http://127.0.0.1:{server.port}"
    for headers in (
        {"Origin": own},
        {"Origin": own + "/"},
        {"Origin": f"https://127.0.0.1:{server.port}"},  # TLS ended by a proxy in front
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},  # curl, server-to-server
    ):
        response = await client.post("/api/chat", json=CHAT, headers=headers)
        assert response.status_code == 202, (headers, response.text)


async def test_two_origin_headers_are_refused(
    server: ServerThread, client: httpx.AsyncClient
) -> None:
    own = f"http://127.0.0.1:{server.port}"
    response = await client.post(
        "/api/chat", json=CHAT, headers=[("origin", own), ("origin", "https://evil.example")]
    )
    _refused(response)


async def test_allowed_origins_are_accepted() -> None:
    settings = load_settings(
        allowed_origins="https://chat.example.com, http://localhost:8080",
        demo_tokens_per_second=1000,
        demo_response_tokens=2,
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for origin in (
                "https://chat.example.com",
                "https://CHAT.example.com:443",
                "http://localhost:8080",
            ):
                response = await client.post("/api/chat", json=CHAT, headers={"Origin": origin})
                assert response.status_code == 202, (origin, response.text)
            _refused(
                await client.post(
                    "/api/chat", json=CHAT, headers={"Origin": "http://chat.example.com"}
                )
            )


def test_origins_are_normalised() -> None:
    assert normalize_origin("HTTPS://Example.COM:443") == "https://example.com"
    assert normalize_origin("http://[::1]:3080") == "http://[::1]:3080"
    for bad in ("null", "https://a/b", "ftp://a", "https://u:p@a", "https://a:99999", "a.com"):
        assert normalize_origin(bad) is None, bad


@pytest.mark.parametrize("value", ["*", "https://a.example/path", "chat.example.com"])
def test_bad_allowed_origins_fail_at_start_up(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(allowed_origins=value)
    assert str(caught.value).startswith("ALLOWED_ORIGINS=")
