"""Imported first by :mod:`chatscale.ratelimit`: it needs the ``limits`` library and
Starlette (its endpoint decorator and exception handler)."""

from chatscale.extras import require_extra

require_extra("chatscale.ratelimit", "limits", "starlette")
