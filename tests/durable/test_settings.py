"""DURABLE_STREAMS_* settings: checked at start-up with errors naming the variable."""

from __future__ import annotations

from typing import Any

import pytest

from chatscale.config import load_settings
from chatscale.errors import ConfigError

TOKEN = "write-token-0123456789"


def error(**values: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**values)
    return str(info.value)


def test_off_by_default_and_needs_no_token() -> None:
    settings = load_settings()
    assert settings.durable_streams is False
    assert settings.durable_streams_path == "/v1/stream"
    assert settings.durable_streams_auth == "token"


def test_on_needs_a_token_unless_auth_is_none() -> None:
    message = error(durable_streams="true")
    assert "DURABLE_STREAMS_WRITE_TOKENS" in message
    assert "DURABLE_STREAMS_AUTH=none" in message
    assert load_settings(durable_streams="true", durable_streams_auth="NONE").durable_streams
    settings = load_settings(
        durable_streams="true", durable_streams_write_tokens=f"{TOKEN}, {TOKEN}x"
    )
    assert settings.durable_streams_write_tokens == (TOKEN, TOKEN + "x")


def test_tokens_are_masked_when_described() -> None:
    settings = load_settings(durable_streams="true", durable_streams_read_tokens=TOKEN)
    assert settings.describe()["DURABLE_STREAMS_READ_TOKENS"] == "***"
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"durable_streams_write_tokens": "short"}, "DURABLE_STREAMS_WRITE_TOKENS"),
        ({"durable_streams_read_tokens": "has a space in it 0123"}, "DURABLE_STREAMS_READ_TOKENS"),
        ({"durable_streams_auth": "basic"}, "DURABLE_STREAMS_AUTH"),
        ({"durable_streams_path": "v1/stream"}, "DURABLE_STREAMS_PATH"),
        ({"durable_streams_path": "/v1/stream/"}, "DURABLE_STREAMS_PATH"),
        ({"durable_streams_path": "/api/streams"}, "DURABLE_STREAMS_PATH"),
        ({"durable_streams_path": "/v1/str eam"}, "DURABLE_STREAMS_PATH"),
        ({"durable_streams_long_poll_timeout": "0"}, "DURABLE_STREAMS_LONG_POLL_TIMEOUT"),
        ({"durable_streams_sse_duration": "forever"}, "DURABLE_STREAMS_SSE_DURATION"),
        ({"durable_streams_max_body": "0"}, "DURABLE_STREAMS_MAX_BODY"),
        ({"durable_streams_max_read": "10"}, "DURABLE_STREAMS_MAX_READ"),
        ({"durable_streams": "maybe"}, "DURABLE_STREAMS"),
    ],
)
def test_bad_values_are_named(values: dict[str, str], named: str) -> None:
    assert error(**values).startswith(named)
