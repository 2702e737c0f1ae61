"""The chat server: HTTP API, resumable event streams, web page, graceful drain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatscale.server.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: importing one of the server's modules (its HTTP protocol, by
    # the Durable Streams fan-out) must not import the whole application, which imports
    # that module's importer back.
    if name in __all__:
        from chatscale.server import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
