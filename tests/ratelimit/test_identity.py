"""Whom a request counts against; X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from chatscale.errors import ConfigError
from chatscale.ratelimit import TrustedProxies, client_address, identify
from chatscale.ratelimit.factory import RateLimits
from tests.ratelimit.helpers import settings_for


def scope(peer: str | None, xff: list[str] = (), session: Any = None) -> dict[str, Any]:  # type: ignore[assignment]
    result: dict[str, Any] = {
        "type": "http",
        "client": (peer, 5555) if peer else None,
        "headers": [(b"x-forwarded-for", v.encode()) for v in xff],
    }
    if session is not None:
        result["session"] = session
    return result


TRUSTED = TrustedProxies(["10.0.0.0/8", "::1"])


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address(scope("203.0.113.9", ["1.2.3.4"]), TrustedProxies()) == "203.0.113.9"


def test_an_untrusted_peer_cannot_forge_its_address() -> None:
    assert client_address(scope("203.0.113.9", ["1.2.3.4"]), TRUSTED) == "203.0.113.9"


def test_the_first_untrusted_hop_from_the_right_is_the_client() -> None:
    # The client put a fake address first; our two proxies appended the real ones.
    forged = scope("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.0.0.1"])
    assert client_address(forged, TRUSTED) == "198.51.100.7"
    assert client_address(scope("::1", ["2001:db8::5"]), TRUSTED) == "2001:db8::5"


def test_several_headers_are_one_chain_and_ports_are_dropped() -> None:
    s = scope("10.0.0.2", ["198.51.100.7:4444", "10.0.0.9"])
    assert client_address(s, TRUSTED) == "198.51.100.7"
    assert client_address(scope("10.0.0.2", ["[2001:db8::1]:80"]), TRUSTED) == "2001:db8::1"


def test_garbage_stops_the_walk_at_the_last_verified_hop() -> None:
    assert client_address(scope("10.0.0.2", ["1.2.3.4, bogus"]), TRUSTED) == "10.0.0.2"
    assert client_address(scope("10.0.0.2", ["1.2.3.4, bogus, 10.0.0.3"]), TRUSTED) == "10.0.0.3"


def test_no_client_information() -> None:
    assert client_address(scope(None), TRUSTED) == "unknown"
    assert client_address(scope("not-an-ip"), TRUSTED) == "unknown"


def test_bad_trusted_proxy_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        TrustedProxies(["10.0.0.0/8", "proxy.internal"])
    assert info.value.variable == "TRUSTED_PROXIES" and "proxy.internal" in str(info.value)


async def test_bad_trusted_proxy_fails_start_up() -> None:
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        await RateLimits.create(settings_for(None, trusted_proxies="10.0.0.1,nope"))


class FakeSession:
    def __init__(self, user: str, *, new: bool, anonymous: bool) -> None:
        self.user_id, self.is_new, self.is_anonymous = user, new, anonymous


def test_a_returning_session_counts_as_its_user() -> None:
    s = scope("203.0.113.9", session=FakeSession("alice", new=False, anonymous=False))
    assert str(identify(s, TRUSTED)) == "user:alice"


def test_a_new_session_counts_as_its_address() -> None:
    # A client that drops its cookie must not get a fresh budget each time.
    s = scope("203.0.113.9", session=FakeSession("anon-1", new=True, anonymous=True))
    assert str(identify(s, TRUSTED)) == "ip:203.0.113.9"


def test_anonymous_by_ip() -> None:
    anon = scope("203.0.113.9", session=FakeSession("anon-1", new=False, anonymous=True))
    assert str(identify(anon, TRUSTED)) == "user:anon-1"
    assert str(identify(anon, TRUSTED, anonymous_by_ip=True)) == "ip:203.0.113.9"
    known = scope("203.0.113.9", session=FakeSession("bob", new=False, anonymous=False))
    assert str(identify(known, TRUSTED, anonymous_by_ip=True)) == "user:bob"
