"""The chat server: HTTP API, resumable event streams, web page, graceful drain."""

from chatscale.server.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
