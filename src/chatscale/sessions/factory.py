"""Build the session machinery from :class:`~chatscale.config.Settings` at start-up."""

from __future__ import annotations

import logging
import re
import secrets

from chatscale.config import Settings
from chatscale.errors import ConfigError
from chatscale.redis.connection import RedisConnection
from chatscale.sessions.cookies import derive_key
from chatscale.sessions.manager import SessionConfig, SessionManager
from chatscale.sessions.store import MemorySessionStore, RedisSessionStore, SessionStore

log = logging.getLogger("chatscale.sessions")

MIN_SECRET_LENGTH = 32
_SECRET_HINT = (
    f"at least {MIN_SECRET_LENGTH} random characters, the same on every instance "
    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
)
# RFC 6265 cookie-name token characters.
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,64}$")


def session_config(settings: Settings) -> SessionConfig:
    """The session configuration; :class:`ConfigError` for a missing or weak secret.

    With ``USE_REDIS`` every instance must verify the others' cookies, so ``SESSION_SECRET``
    is required. Without it, a missing secret is replaced by a random per-process one (with
    a warning: cookies then die with the process). ``SESSION_SECRET_PREVIOUS`` keeps cookies
    signed with the previous secret valid during a secret rotation.
    """
    secret = settings.session_secret
    if secret is None:
        if settings.use_redis:
            raise ConfigError(
                "SESSION_SECRET",
                None,
                "USE_REDIS=true needs a signing secret shared by every instance",
                _SECRET_HINT,
            )
        log.warning(
            "SESSION_SECRET is not set: using a random key for this process only; sessions "
            "will not survive a restart"
        )
        raw = secrets.token_bytes(32)
    else:
        text = secret.get_secret_value()
        if len(text.strip()) < MIN_SECRET_LENGTH:
            raise ConfigError("SESSION_SECRET", "***", "is too short", _SECRET_HINT)
        raw = text.encode("utf-8")
    previous: tuple[bytes, ...] = ()
    if settings.session_secret_previous is not None:
        old = settings.session_secret_previous.get_secret_value()
        if secret is None:
            raise ConfigError(
                "SESSION_SECRET_PREVIOUS",
                "***",
                "is set without SESSION_SECRET",
                "the old secret here and the new one in SESSION_SECRET",
            )
        if len(old.strip()) < MIN_SECRET_LENGTH:
            raise ConfigError("SESSION_SECRET_PREVIOUS", "***", "is too short", _SECRET_HINT)
        if old == secret.get_secret_value():
            raise ConfigError(
                "SESSION_SECRET_PREVIOUS", "***", "equals SESSION_SECRET", "the previous secret"
            )
        previous = (derive_key(old.encode("utf-8")),)
    name = settings.session_cookie_name
    if not _COOKIE_NAME.match(name):
        raise ConfigError(
            "SESSION_COOKIE_NAME",
            name,
            "is not a valid cookie name",
            "1 to 64 letters, digits or !#$%&'*+-.^_`|~",
        )
    return SessionConfig(
        signing_key=derive_key(raw),
        ttl=settings.session_ttl,
        cookie_name=name,
        secure=settings.session_cookie_secure,
        previous_keys=previous,
    )


def create_session_store(settings: Settings, connection: RedisConnection | None) -> SessionStore:
    """Redis when ``USE_REDIS`` is on (``connection`` is then required), else memory."""
    if settings.use_redis:
        if connection is None:
            raise ValueError("USE_REDIS=true: pass the process's RedisConnection")
        return RedisSessionStore(connection)
    return MemorySessionStore(max_entries=settings.memory_cache_max_entries)


def create_session_manager(
    settings: Settings,
    connection: RedisConnection | None = None,
    store: SessionStore | None = None,
) -> SessionManager:
    """Everything :class:`~chatscale.sessions.SessionMiddleware` needs, from the settings.

    ``store`` replaces the one :func:`create_session_store` would choose (the server passes
    its database's when Redis is not used).
    """
    chosen = store if store is not None else create_session_store(settings, connection)
    return SessionManager(chosen, session_config(settings))
