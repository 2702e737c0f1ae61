"""Whom a request counts against: its session's user, or its client address.

``X-Forwarded-For`` is believed only when the direct peer is one of ``TRUSTED_PROXIES``,
and then only as far back as the chain stays inside trusted proxies: the first address from
the right that is not a trusted proxy is the client. Anything else could be forged by the
client itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chatscale.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """A set of proxy addresses and networks (``10.0.0.0/8``, ``::1``, ``192.0.2.7``)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    "TRUSTED_PROXIES",
                    entry,
                    "is not an IP address or network",
                    "comma-separated addresses or CIDR networks, e.g. 10.0.0.0/8,::1",
                ) from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(scope: dict[str, Any] | Any, trusted: TrustedProxies) -> str:
    """The client's IP address as a string (``"unknown"`` when the server gives none)."""
    client = scope.get("client")
    peer = _address(str(client[0])) if client else None
    if peer is None:
        return "unknown"
    if not trusted or peer not in trusted:
        return str(peer)
    chain: list[str] = []
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-forwarded-for":
            chain.extend(value.decode("latin-1").split(","))
    current = peer
    for hop in reversed(chain):
        address = _address(hop)
        if address is None:
            break  # garbage: stop at the last address we could verify
        current = address
        if address not in trusted:
            break
    return str(current)


@dataclass(frozen=True)
class Identity:
    """What a limit is counted against: ``kind`` is ``"user"`` or ``"ip"``."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def identify(
    scope: dict[str, Any] | Any, trusted: TrustedProxies, *, anonymous_by_ip: bool = False
) -> Identity:
    """The session's user when the request has a returning session, else the client address.

    A brand-new session (no cookie, or a dropped one) is counted by address: otherwise a
    client could shed its limit by not sending cookies. With ``anonymous_by_ip`` every
    anonymous visitor is counted by address too (stricter; visitors behind one NAT share).
    """
    session = scope.get("session")
    user = getattr(session, "user_id", None)
    returning = isinstance(user, str) and not getattr(session, "is_new", True)
    if returning and not (anonymous_by_ip and getattr(session, "is_anonymous", False)):
        return Identity("user", str(user))
    return Identity("ip", client_address(scope, trusted))
