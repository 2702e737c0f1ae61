"""Every Redis key and channel name chatscale uses, in one place.

Layout (``P`` is the deployment prefix; with no prefix the ``P::`` part is left out)::

    P::<NAMESPACE>:<key>                 cache entry (LibreChat's layout)
    P::cache-invalidate                  channel: near-cache invalidations
    P::sess:<sha256(session id)>         server-side session
    P::limits/...                        rate-limit counters (the ``limits`` library)
    P::conc:{<user>}:running             running generations of one user (ZSET)
    P::conc:{<user>}:violations          rate-limit violations of one user
    P::conc:{<user>}:ban                 temporary ban of one user
    P::stream:{<job id>}:job             job metadata, owner instance, epoch (HASH)
    P::stream:{<job id>}:log             job event log (STREAM, ids 0-<last seq>)
    P::stream:{<job id>}:ev              channel: the job's events as they are stored
    P::inst:{<instance>}:jobs            running jobs one instance produces (SET)
    P::inst:{<instance>}:ctl             channel: aborts and moves addressed to one instance
    P::streams:instances                 instance heartbeats (ZSET, score = Redis time in ms)
    P::user:{<user>}:jobs                a user's jobs (ZSET)
    P::ds:{<name>}:meta                  a Durable Streams stream's metadata (HASH)
    P::ds:{<name>}:data                  its records, one per append (LIST)
    P::ds:{<name>}:ends                  the byte offset after each record (LIST)
    P::ds:{<name>}:prod                  its idempotent producers: id -> epoch:seq (HASH)
    P::ds:{<name>}:ev                    channel: "the stream changed" (appends, close, delete)

Channels carry the same prefix as keys: LibreChat leaves them unprefixed, so two deployments
sharing one Redis hear each other's events. The ``{...}`` part is a Cluster hash tag: every key
of one job (or one user) hashes to the same slot, so multi-key scripts and transactions work.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

SEPARATOR = "::"
_GLOB_SPECIALS = "*?[]\\"
# Characters left readable in key parts; everything else (":", "{", "}", "%", glob
# characters, whitespace, non-ASCII) is percent-encoded so no id can break the layout.
_SAFE = "-._~@+=!$&'()"


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a key prefix, or ``None`` when it can."""
    if any(c in "{}" for c in prefix):
        return "must not contain '{' or '}' (they would break Cluster hash tags)"
    if any(c.isspace() or not c.isprintable() for c in prefix):
        return "must not contain whitespace or control characters"
    if SEPARATOR in prefix or prefix.endswith(":"):
        return "must not contain '::' or end with ':' (one prefix would then cover another's keys)"
    if len(prefix) > 128:
        return "must be at most 128 characters"
    return None


@functools.lru_cache(maxsize=16_384)
def escape(part: str) -> str:
    """Encode an id so it is one safe key segment (no ``:``, braces, glob or spaces)."""
    # Cached: a running job's keys are built at every coalescing window (urllib's quote
    # was a few % of a streams benchmark's CPU).
    return quote(part, safe=_SAFE)


def glob_escape(text: str) -> str:
    """Escape ``text`` for a SCAN / PSUBSCRIBE pattern."""
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in text)


class KeySpace:
    """Builds this deployment's key and channel names from its prefix."""

    __slots__ = ("_base", "prefix")

    def __init__(self, prefix: str = "") -> None:
        problem = prefix_problem(prefix)
        if problem:
            raise ValueError(f"invalid key prefix {prefix!r}: {problem}")
        self.prefix = prefix
        self._base = f"{prefix}{SEPARATOR}" if prefix else ""

    def __repr__(self) -> str:
        return f"KeySpace({self.prefix!r})"

    def key(self, *parts: str) -> str:
        """``P::a:b``: the parts joined by ``:`` (callers escape untrusted parts)."""
        return self._base + ":".join(parts)

    def channel(self, *parts: str) -> str:
        """A pub/sub channel name, prefixed exactly like keys."""
        return self._base + ":".join(parts)

    def tagged(self, kind: str, tag: str, suffix: str) -> str:
        """``P::<kind>:{<tag>}:<suffix>``: a key sharing the Cluster slot of ``tag``."""
        return f"{self._base}{kind}:{{{escape(tag)}}}:{suffix}"

    def pattern(self, *parts: str) -> str:
        """A SCAN MATCH pattern for every key starting with ``P::<parts>``."""
        return glob_escape(self.key(*parts)) + "*"

    @property
    def all_pattern(self) -> str:
        """A pattern for every key of this prefix (everything when there is no prefix)."""
        return glob_escape(self._base) + "*"

    # Caches -------------------------------------------------------------------------
    def cache(self, namespace: str, key: str) -> str:
        """Cache entry: ``P::<NAMESPACE>:<key>`` (LibreChat's layout; ``key`` as given)."""
        return f"{self._base}{namespace}:{key}"

    def cache_pattern(self, namespace: str) -> str:
        """Every entry of one cache namespace."""
        return glob_escape(f"{self._base}{namespace}:") + "*"

    @property
    def cache_invalidation_channel(self) -> str:
        """Channel on which near caches hear about writes from other instances."""
        return self.channel("cache-invalidate")

    # Sessions and limits -----------------------------------------------------------
    def session(self, id_hash: str) -> str:
        """A session stored under the hash of its id."""
        return self.key("sess", id_hash)

    @property
    def limits_prefix(self) -> str:
        """Key prefix handed to the ``limits`` library."""
        return self.key("limits")

    def concurrency(self, user: str) -> str:
        """Set of one user's running generations."""
        return self.tagged("conc", user, "running")

    def violations(self, user: str) -> str:
        """Count of one user's recent rate-limit violations (same slot as the ban)."""
        return self.tagged("conc", user, "violations")

    def ban(self, user: str) -> str:
        """One user's temporary ban (its TTL is the time left)."""
        return self.tagged("conc", user, "ban")

    # Streams -----------------------------------------------------------------------
    def stream_job(self, job_id: str) -> str:
        """Metadata of one generation job."""
        return self.tagged("stream", job_id, "job")

    def stream_log(self, job_id: str) -> str:
        """Event log of one generation job."""
        return self.tagged("stream", job_id, "log")

    def stream_events(self, job_id: str) -> str:
        """Channel carrying one job's events as they are stored (same slot as its log, so
        the append script publishes them as a sharded message on Cluster)."""
        return self.tagged("stream", job_id, "ev")

    def durable(self, name: str, part: str) -> str:
        """A Durable Streams stream's key (``meta``, ``data``, ``ends``, ``prod``) or channel
        (``ev``); every part of one stream shares its hash slot."""
        return self.tagged("ds", name, part)

    def user_jobs(self, user: str) -> str:
        """A user's jobs, scored by creation time."""
        return self.tagged("user", user, "jobs")

    # Server: conversations, idempotent starts, session events ------------------------
    def conversation_index(self, user: str) -> str:
        """A user's conversations (ZSET: id scored by last update)."""
        return self.tagged("CONVERSATIONS", user, "index")

    def conversation(self, user: str, conversation_id: str, part: str) -> str:
        """One part (``meta``, ``msgs``, ``answers``) of a user's conversation."""
        return self.tagged("CONVERSATIONS", user, f"c:{escape(conversation_id)}:{part}")

    def idempotency(self, user: str, request_id: str) -> str:
        """The stream a user's ``client_request_id`` started."""
        return self.tagged("IDEMPOTENCY", user, escape(request_id))

    @property
    def session_events_channel(self) -> str:
        """Channel announcing streams starting and ending, for every instance."""
        return self.channel("session-events")

    def stream_instance_control(self, instance: str) -> str:
        """Channel of aborts and moves addressed to one producing instance."""
        return self.tagged("inst", instance, "ctl")

    def stream_instance_jobs(self, instance: str) -> str:
        """The running jobs one instance produces."""
        return self.tagged("inst", instance, "jobs")

    @property
    def stream_instances(self) -> str:
        """Heartbeats of the instances producing streams (score = last beat in ms)."""
        return self.key("streams", "instances")
