"""Opening a request's session from its cookie, and saving it back only when needed."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from chatscale.sessions.cookies import (
    clear_cookie_header,
    hash_id,
    new_session_id,
    read_cookie_values,
    set_cookie_header,
    sign,
    unsign,
)
from chatscale.sessions.session import Session, new_anonymous_user_id
from chatscale.sessions.store import SessionStore

log = logging.getLogger("chatscale.sessions")

SecureMode = Literal["auto", "true", "false"]
Header = tuple[bytes, bytes]

#: The cookie-name prefix browsers accept only with ``Secure``, ``Path=/`` and no ``Domain``,
#: so a sibling subdomain or a plain-http page cannot plant one (cookie tossing).
HOST_PREFIX = "__Host-"


class DuplicateSessionCookie(Exception):
    """The request carries several session cookies: which one the user meant is unknowable
    (one may have been planted by a sibling subdomain), so the request is refused."""


@dataclass(frozen=True)
class SessionConfig:
    """How sessions behave; build it with :func:`chatscale.sessions.session_config`."""

    signing_key: bytes
    ttl: int
    cookie_name: str
    secure: SecureMode = "auto"
    #: An unchanged session's expiry (store TTL and cookie Max-Age) is renewed once it is
    #: this many seconds old, not on every request: that keeps reads free of writes.
    refresh_after: int | None = None
    #: Lifetime of a session whose cookie has not come back yet. A client that never
    #: returns cookies (a bot, a script) thus leaves sessions that expire within this, not
    #: within ``ttl``; the first request that does return the cookie extends it to ``ttl``.
    unconfirmed_ttl: int = 3_600
    #: Keys of previous secrets (``SESSION_SECRET_PREVIOUS``): cookies they signed are still
    #: accepted and re-signed with ``signing_key`` on their next response.
    previous_keys: tuple[bytes, ...] = ()

    def name_for(self, secure: bool) -> str:
        """The cookie's name: ``__Host-`` + ``cookie_name`` when ``secure`` (https)."""
        if not secure or self.cookie_name.startswith((HOST_PREFIX, "__Secure-")):
            return self.cookie_name
        return HOST_PREFIX + self.cookie_name

    def ttl_for(self, new: bool) -> int:
        """Store TTL for a session being written: shorter while still unconfirmed."""
        return min(self.ttl, self.unconfirmed_ttl) if new else self.ttl

    @property
    def refresh_after_s(self) -> int:
        """The effective renewal age (a tenth of the TTL, at most an hour, by default)."""
        if self.refresh_after is not None:
            return self.refresh_after
        return max(1, min(self.ttl // 10, 3_600))


@dataclass
class OpenSession:
    """A request's session and what the manager knows about it."""

    session: Session
    #: Seconds the store still keeps the session (``ttl`` for a fresh one).
    ttl_left: float
    #: Whether the request carried a cookie of our name (it may need clearing).
    had_cookie: bool
    committed: bool = False
    #: The cookie was signed with a previous secret: send it again signed with the current.
    resign: bool = False


class SessionManager:
    """Reads and writes sessions in ``store`` according to ``config``.

    Middleware calls :meth:`open` before the application and :meth:`commit` when the
    response starts; other frameworks can do the same.
    """

    def __init__(self, store: SessionStore, config: SessionConfig) -> None:
        self.store = store
        self.config = config

    def is_secure(self, scheme: str) -> bool:
        """Whether the cookie gets the ``Secure`` attribute for a request of ``scheme``."""
        if self.config.secure == "auto":
            return scheme in ("https", "wss")
        return self.config.secure == "true"

    async def open(self, headers: list[Header], *, secure: bool = False) -> OpenSession:
        """The session the request's cookie names, or a fresh anonymous one.

        ``secure`` (see :meth:`is_secure`) selects the cookie's name. A forged, malformed or
        unknown cookie is not an error: the visitor gets a new session with a new id (an id
        the server did not issue is never adopted). Several cookies of our name raise
        :class:`DuplicateSessionCookie`.
        """
        values = read_cookie_values(headers, self.config.name_for(secure))
        if len(values) > 1:
            raise DuplicateSessionCookie(f"{len(values)} session cookies")
        for value in values:
            session_id, resign = self._verify(value)
            if session_id is None:
                continue
            opened = await self._load(session_id)
            if opened is not None:
                opened.resign = resign
                return opened
        now = time.time()
        session_id = new_session_id()
        session = Session(
            session_id=session_id,
            id_hash=hash_id(session_id),
            user_id=new_anonymous_user_id(),
            data={},
            created_at=math.floor(now),
            is_new=True,
            saved_state=None,
        )
        return OpenSession(session, float(self.config.ttl), had_cookie=bool(values))

    def _verify(self, value: str) -> tuple[str | None, bool]:
        session_id = unsign(value, self.config.signing_key)
        if session_id is not None:
            return session_id, False
        for key in self.config.previous_keys:
            session_id = unsign(value, key)
            if session_id is not None:
                return session_id, True
        return None, False

    async def _load(self, session_id: str) -> OpenSession | None:
        id_hash = hash_id(session_id)
        stored = await self.store.load(id_hash)
        if stored is None:
            return None
        parsed = _parse_state(stored.state)
        if parsed is None:
            log.warning("session %s... holds unreadable data; starting a new one", id_hash[:12])
            return None
        user, created, data = parsed
        session = Session(
            session_id=session_id,
            id_hash=id_hash,
            user_id=user,
            data=data,
            created_at=created,
            is_new=False,
            # Written canonically, so the text itself is the baseline for change detection
            # (a non-canonical text only costs one rewrite).
            saved_state=stored.state,
        )
        return OpenSession(session, stored.ttl_left, had_cookie=True)

    async def commit(self, opened: OpenSession, *, secure: bool) -> list[Header]:
        """Save what changed and return the ``Set-Cookie`` headers the response needs.

        Writes happen only when the data or identity changed, on rotation and destruction,
        and to renew the expiry of a session older than ``refresh_after``.
        """
        opened.committed = True
        session, config, store = opened.session, self.config, self.store
        if session.destroyed:
            if session.saved_state is not None:
                await store.delete(session.id_hash)
                session.saved_state = None
            return [self.clear_cookie(secure)] if (opened.had_cookie or not session.is_new) else []
        if session.take_rotation():
            old_hash = session.id_hash if session.saved_state is not None else None
            session.session_id = new_session_id()
            session.id_hash = hash_id(session.session_id)
            state = session.state()
            ttl = config.ttl_for(session.is_new)
            await store.save(session.id_hash, state, ttl)
            if old_hash is not None:
                await store.delete(old_hash)
            session.saved_state = state
            opened.ttl_left = ttl
            return [self._cookie(session, secure)]
        state = session.state()
        ttl = config.ttl_for(session.is_new)
        if state != session.saved_state:
            await store.save(session.id_hash, state, ttl)
        elif opened.ttl_left <= config.ttl - config.refresh_after_s:
            await store.touch(session.id_hash, config.ttl)
        elif opened.resign:
            # Same id under the current key. Its Max-Age may outlast the stored session;
            # a cookie outliving its session only ever leads to a fresh one.
            opened.resign = False
            return [self._cookie(session, secure)]
        else:
            return []
        session.saved_state = state
        opened.ttl_left = ttl
        return [self._cookie(session, secure)]

    async def commit_late(self, opened: OpenSession) -> None:
        """Save changes made after the response started (e.g. while streaming a body).

        No cookie can be sent any more, so a rotation requested this late is not applied
        (the id stays); data changes and destruction are.
        """
        session = opened.session
        if session.destroyed:
            if session.saved_state is not None:
                await self.store.delete(session.id_hash)
                session.saved_state = None
            return
        if session.take_rotation():
            log.warning("session rotation requested after the response started; ignored")
        state = session.state()
        if state != session.saved_state:
            await self.store.save(session.id_hash, state, self.config.ttl_for(session.is_new))
            session.saved_state = state

    def clear_cookie(self, secure: bool) -> Header:
        """The ``Set-Cookie`` header that removes the session cookie."""
        return clear_cookie_header(self.config.name_for(secure), secure=secure)

    def _cookie(self, session: Session, secure: bool) -> Header:
        value = sign(session.session_id, self.config.signing_key)
        return set_cookie_header(
            self.config.name_for(secure), value, max_age=self.config.ttl, secure=secure
        )


def _parse_state(text: str) -> tuple[str, float, dict[str, Any]] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("v") != 1:
        return None
    user, created, data = value.get("user"), value.get("created"), value.get("data")
    if not isinstance(user, str) or not user or not isinstance(data, dict):
        return None
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    return user, created, data
