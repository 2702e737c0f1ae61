"""Fixtures of the Durable Streams tests: the server tests' client (each module defines its
own ``server``)."""

from tests.server.conftest import client

__all__ = ["client"]
