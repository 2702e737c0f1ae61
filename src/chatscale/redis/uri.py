"""Parsing of ``REDIS_URI``: one URI, a comma-separated list (Cluster), or a Sentinel URI.

Accepted forms::

    redis://[user:pass@]host[:port][/db]            standalone (TLS with rediss://)
    redis://host1:7000,redis://host2:7001           Cluster (more than one URI)
    redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>[/db]   Sentinel
                                                    (rediss+sentinel:// for TLS)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote, urlsplit

from chatscale.errors import ConfigError
from chatscale.masking import mask_uri
from chatscale.numbers import parse_whole

VARIABLE = "REDIS_URI"
ACCEPTED = (
    "redis://[user:pass@]host[:port][/db], rediss://... for TLS, a comma-separated list of "
    "such URIs for Cluster, or redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db]"
)
_DATA_SCHEMES = {"redis": False, "rediss": True}
_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_DEFAULT_PORT = 6379
_DEFAULT_SENTINEL_PORT = 26379
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: Characters that end the user information of a URI early, and how to write them instead.
_RESERVED_IN_USERINFO = {"@": "%40", "/": "%2F", "?": "%3F", "#": "%23"}


class Topology(StrEnum):
    """How the Redis deployment is laid out."""

    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


@dataclass(frozen=True)
class RedisNode:
    """One address: a data node, a Cluster seed node or a sentinel."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RedisTarget:
    """What ``REDIS_URI`` describes, before credentials from other variables are applied."""

    topology: Topology
    nodes: tuple[RedisNode, ...]
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    service_name: str | None = None


def _error(raw: str, problem: str) -> ConfigError:
    return ConfigError(VARIABLE, mask_uri(raw), problem, ACCEPTED)


def _parse_port(raw: str, entry: str, text: str, default: int) -> int:
    if text == "":
        return default
    port = parse_whole(text)
    if port is None or not 0 < port < 65536:
        raise _error(raw, f"entry {mask_uri(entry)!r} has an invalid port {text!r}")
    return port


def _parse_hostport(raw: str, entry: str, text: str, default_port: int) -> RedisNode:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        end = text.find("]")
        if end < 0:
            raise _error(raw, f"entry {mask_uri(entry)!r} has an unclosed '[' in its host")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _error(raw, f"entry {mask_uri(entry)!r} has text after its IPv6 address")
        port = _parse_port(raw, entry, rest[1:], default_port)
    else:
        host, _, port_text = text.partition(":")
        port = _parse_port(raw, entry, port_text, default_port)
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise _error(raw, f"entry {mask_uri(entry)!r} has no valid host")
    return RedisNode(host, port)


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    userinfo, sep, hosts = netloc.rpartition("@")
    if not sep:
        return None, None, netloc
    user, has_pass, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if has_pass else None), hosts


def _check_userinfo(raw: str, entry: str, rest: str) -> None:
    # ``rest`` follows ``scheme://``. An unescaped '@' or '/' in a password makes the URI
    # ambiguous (redis://u:p@ss@h) or silently cuts the password (redis://u:pa/ss@h): refuse
    # it, naming the character but never the password.
    userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
    found = [c for c in _RESERVED_IN_USERINFO if c in userinfo]
    if found:
        chars = ", ".join(f"{c!r} as {_RESERVED_IN_USERINFO[c]}" for c in found)
        raise _error(
            raw,
            f"entry {mask_uri(entry)!r}: the user name or password contains an unescaped "
            f"{' or '.join(repr(c) for c in found)}; percent-encode it ({chars})",
        )


def _parse_db(raw: str, entry: str, text: str) -> int:
    if text == "":
        return 0
    db = parse_whole(text)
    if db is None or db > 65535:
        raise _error(raw, f"entry {mask_uri(entry)!r} has an invalid database number {text!r}")
    return db


def _parse_sentinel(raw: str) -> RedisTarget:
    scheme, _, rest = raw.partition("://")
    tls = _SENTINEL_SCHEMES[scheme.lower()]
    _check_userinfo(raw, raw, rest)
    netloc, _, path = rest.partition("/")
    if "?" in path or "#" in path:
        raise _error(raw, "query strings and fragments are not supported")
    username, password, hosts = _split_userinfo(netloc)
    if not hosts:
        raise _error(raw, "the Sentinel URI names no sentinel host")
    nodes = tuple(_parse_hostport(raw, raw, h, _DEFAULT_SENTINEL_PORT) for h in hosts.split(","))
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise _error(raw, "the Sentinel URI names no master service (…/<service>[/db])")
    if len(parts) > 2:
        raise _error(raw, "the Sentinel URI path has more than /<service>/<db>")
    service = unquote(parts[0])
    if not _SERVICE_NAME.match(service):
        raise _error(raw, f"invalid Sentinel service name {service!r}")
    db = _parse_db(raw, raw, parts[1] if len(parts) == 2 else "")
    return RedisTarget(Topology.SENTINEL, nodes, tls, username, password, db, service)


def _parse_data_entry(raw: str, entry: str) -> tuple[bool, str | None, str | None, RedisNode, int]:
    scheme, sep, rest = entry.partition("://")
    if not sep:
        raise _error(raw, f"entry {mask_uri(entry)!r} has no scheme (redis:// or rediss://)")
    scheme = scheme.lower()
    if scheme in _SENTINEL_SCHEMES:
        raise _error(raw, "a Sentinel URI must be the whole value, not one entry of a list")
    if scheme not in _DATA_SCHEMES:
        raise _error(raw, f"entry {mask_uri(entry)!r} has an unsupported scheme {scheme!r}")
    _check_userinfo(raw, entry, rest)
    try:
        split = urlsplit(entry)
    except ValueError as exc:
        raise _error(raw, f"entry {mask_uri(entry)!r} is malformed ({exc})") from None
    if split.query or split.fragment:
        raise _error(raw, f"entry {mask_uri(entry)!r}: query strings are not supported")
    username, password, hostport = _split_userinfo(split.netloc)
    if "," in hostport:
        raise _error(raw, f"entry {mask_uri(entry)!r} has more than one host")
    node = _parse_hostport(raw, entry, hostport, _DEFAULT_PORT)
    path = split.path.strip("/")
    if "/" in path:
        raise _error(raw, f"entry {mask_uri(entry)!r} has a path other than /<db>")
    db = _parse_db(raw, entry, path)
    return _DATA_SCHEMES[scheme], username, password, node, db


def parse_redis_uri(raw: str, *, force_cluster: bool = False) -> RedisTarget:
    """Parse ``REDIS_URI``; raise :class:`ConfigError` naming the bad entry (password masked)."""
    value = raw.strip()
    if not value:
        raise _error(raw, "is empty")
    scheme = value.partition("://")[0].lower()
    if scheme in _SENTINEL_SCHEMES:
        if force_cluster:
            raise ConfigError(
                "USE_REDIS_CLUSTER",
                "true",
                "Cluster mode cannot be combined with a Sentinel REDIS_URI",
                "USE_REDIS_CLUSTER=false with redis+sentinel://",
            )
        return _parse_sentinel(value)
    entries = [e.strip() for e in value.split(",")]
    for index, entry in enumerate(entries, start=1):
        if not entry:
            raise _error(raw, f"entry {index} of the comma-separated list is empty")
    parsed = [_parse_data_entry(raw, e) for e in entries]
    schemes = {tls for tls, *_ in parsed}
    if len(schemes) > 1:
        raise _error(raw, "mixes redis:// and rediss:// entries; use one scheme for all")
    creds = {(u, p) for _, u, p, _, _ in parsed if u is not None or p is not None}
    if len(creds) > 1:
        raise _error(raw, "entries carry different credentials; use one user for all nodes")
    username, password = next(iter(creds)) if creds else (None, None)
    nodes = tuple(node for *_, node, _ in parsed)
    if len(set(nodes)) != len(nodes):
        raise _error(raw, "names the same host:port twice")
    dbs = {db for *_, db in parsed}
    cluster = force_cluster or len(nodes) > 1
    if cluster and dbs != {0}:
        raise _error(raw, "Redis Cluster has only database 0; remove /<db> from the URIs")
    return RedisTarget(
        Topology.CLUSTER if cluster else Topology.STANDALONE,
        nodes,
        tls=schemes.pop(),
        username=username,
        password=password,
        db=dbs.pop() if not cluster else 0,
    )
