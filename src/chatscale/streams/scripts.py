"""The Lua scripts of the Redis backend, shipped as package data and run by SHA."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from chatscale.redis.client import AnyRedis


class LuaScript:
    """One script: EVALSHA, falling back to EVAL when the server does not know it yet
    (first use, restart, failover, or another Cluster node).

    ``uses`` names helper chunks of the same package (``lua/_<name>.lua``: local functions
    that several scripts share) put before the script's own text: Redis runs a script as
    one chunk, with nothing to import.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(
        self, name: str, package: str = "chatscale.streams", uses: Sequence[str] = ()
    ) -> None:
        self.name = name
        folder = resources.files(package).joinpath("lua")
        parts = [folder.joinpath(f"_{helper}.lua").read_text("utf-8") for helper in uses]
        parts.append(folder.joinpath(f"{name}.lua").read_text("utf-8"))
        self._use("\n".join(parts))

    @classmethod
    def from_source(cls, name: str, source: str) -> LuaScript:
        """A script given by its text rather than a file of a package."""
        script = cls.__new__(cls)
        script.name = name
        script._use(source)
        return script

    def _use(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: AnyRedis, keys: Sequence[str | bytes], args: Sequence[Any]
    ) -> Any:
        """Run the script on ``keys`` (all in one Cluster slot)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


CREATE = LuaScript("create")
APPEND = LuaScript("append")
CLAIM = LuaScript("claim")
ABORT = LuaScript("abort")
BEAT = LuaScript("beat")
LISTED = LuaScript("listed")
DISCARD = LuaScript("discard")
TELL = LuaScript("tell")
