"""Cache namespaces: LibreChat's names where the meaning is the same, plus chatscale's own."""

from __future__ import annotations

from enum import StrEnum


class CacheKeys(StrEnum):
    """Every cache namespace. The value is the name used in keys and in configuration."""

    # LibreChat's names (librechat-data-provider's CacheKeys), same meaning.
    CONFIG_STORE = "CONFIG_STORE"
    APP_CONFIG = "APP_CONFIG"
    ROLES = "ROLES"
    PLUGINS = "PLUGINS"
    TOOLS = "TOOLS"
    TOKEN_CONFIG = "TOKEN_CONFIG"
    GEN_TITLE = "GEN_TITLE"
    MODELS_CONFIG = "MODELS_CONFIG"
    MODEL_QUERIES = "MODEL_QUERIES"
    STARTUP_CONFIG = "STARTUP_CONFIG"
    ENDPOINT_CONFIG = "ENDPOINT_CONFIG"
    OVERRIDE_CONFIG = "OVERRIDE_CONFIG"
    ABORT_KEYS = "ABORT_KEYS"
    MESSAGES = "MESSAGES"
    FLOWS = "FLOWS"
    PENDING_REQ = "PENDING_REQ"
    BANS = "BANS"
    # chatscale's own.
    CONVERSATIONS = "CONVERSATIONS"
    IDEMPOTENCY = "IDEMPOTENCY"
    VIOLATIONS = "VIOLATIONS"


_MINUTE = 60
_HOUR = 60 * _MINUTE

#: Default time to live of each namespace's entries in seconds; ``None`` keeps them until
#: they are deleted or the namespace is cleared.
DEFAULT_TTL: dict[CacheKeys, float | None] = {
    CacheKeys.CONFIG_STORE: None,
    CacheKeys.APP_CONFIG: None,
    CacheKeys.ROLES: None,
    CacheKeys.PLUGINS: None,
    CacheKeys.TOOLS: None,
    CacheKeys.TOKEN_CONFIG: 30 * _MINUTE,
    CacheKeys.GEN_TITLE: 2 * _MINUTE,
    CacheKeys.MODELS_CONFIG: None,
    CacheKeys.MODEL_QUERIES: None,
    CacheKeys.STARTUP_CONFIG: None,
    CacheKeys.ENDPOINT_CONFIG: None,
    CacheKeys.OVERRIDE_CONFIG: None,
    CacheKeys.ABORT_KEYS: 10 * _MINUTE,
    CacheKeys.MESSAGES: 1 * _MINUTE,
    CacheKeys.FLOWS: 3 * _MINUTE,
    CacheKeys.PENDING_REQ: 1 * _MINUTE,
    CacheKeys.BANS: 2 * _HOUR,
    CacheKeys.CONVERSATIONS: 30 * 24 * _HOUR,
    CacheKeys.IDEMPOTENCY: 1 * _HOUR,
    CacheKeys.VIOLATIONS: 1 * _HOUR,
}

#: Namespaces kept in process memory unless FORCED_IN_MEMORY_CACHE_NAMESPACES says
#: otherwise: configuration must follow each deployment, not a Redis shared by several.
DEFAULT_FORCED_IN_MEMORY: frozenset[CacheKeys] = frozenset(
    {CacheKeys.CONFIG_STORE, CacheKeys.APP_CONFIG}
)
