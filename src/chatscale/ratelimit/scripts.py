"""The Lua scripts shipped as package data under ``chatscale/ratelimit/lua/``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua(name: str) -> str:
    """The source of ``lua/<name>.lua``."""
    return files("chatscale.ratelimit").joinpath("lua", f"{name}.lua").read_text("utf-8")
