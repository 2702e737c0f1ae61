"""Errors raised by the caches for bad input or unreadable stored values."""

from __future__ import annotations

from chatscale.errors import ChatscaleError


class CacheError(ChatscaleError):
    """Base class of every cache error."""


class CacheKeyError(CacheError, TypeError):
    """A cache key is not a ``str`` (or cannot be encoded as UTF-8)."""


class CacheValueError(CacheError, ValueError):
    """A value cannot be stored exactly (not JSON, nested bytes, NaN...)."""


class CacheTTLError(CacheError, ValueError):
    """A time to live is not a positive finite number of seconds (or ``None``)."""


class CacheNamespaceError(CacheError, ValueError):
    """A namespace name is not one of :class:`~chatscale.cache.namespaces.CacheKeys`."""


class CacheTypeError(CacheError, TypeError):
    """An operation does not apply to the stored value (e.g. ``incr`` of a string)."""


class CacheCorruptError(CacheError):
    """A stored value was not written by chatscale and cannot be decoded."""


class CacheNotConfiguredError(CacheError):
    """The module-level helpers were used before :func:`chatscale.cache.configure`."""
