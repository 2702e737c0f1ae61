"""The Durable Streams protocol (ElectricSQL, version 1.0) served by chatscale.

Streams of bytes (or of JSON messages) addressed by opaque offsets, created with PUT, appended
with POST, read with GET (catch-up, long-poll or SSE). The rules live in :mod:`.rules` (in
memory) and in the Lua scripts under ``lua/`` (on Redis, where every write is one atomic
script); :mod:`.http` is the ASGI application. ``docs/durable-streams.md`` is the user guide.
"""

from chatscale.durable.errors import ProtocolError
from chatscale.durable.store import DurableStore

__all__ = ["DurableStore", "ProtocolError"]
