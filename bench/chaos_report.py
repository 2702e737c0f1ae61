"""What the fault checker reports: schedule results, the key audit, the summary table.

Anomaly kinds come in three groups:

* **end to end** (:data:`E2E_KINDS`): what a user would see wrong in one chat (see
  ``bench/chaos_client.py``). Must be 0.
* **waste**: ``needless_takeover``, a job taken from an instance that no fault touched in
  that schedule (every takeover needs a fault of its owner: kill -9, SIGSTOP, SIGTERM).
* **run**: ``keys_without_ttl`` (Redis keys that would live forever, other than documented
  singletons), ``no_recovery`` (instances not all ready within a minute after a heal),
  ``fault_failed`` (the checker could not inject or heal a fault).

When a schedule restarts Redis *without its data* (``redis_restart_lose``), sessions and
conversations are gone on purpose: ``stored_missing`` (the conversation the answer belongs to
is gone) and ``start_failed`` are then counted as *tolerated*, not as anomalies. Running
answers are not: their producers write them again, and the client follows them with the
stream's resume token, so every other kind still counts.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos_client import ChatResult
from bench.chaos_faults import Fault
from bench.chaos_instances import Takeover
from tests.harness.servers import RedisServer

E2E_KINDS = frozenset(
    {
        "ids_gap",
        "ids_repeat",
        "id_missing",
        "no_final",
        "final_missed",
        "final_not_done",
        "text_diverged",
        "status_missing",
        "status_mismatch",
        "stored_missing",
        "stored_mismatch",
        "stored_twice",
        "not_found",
        "resume_refused",
        "http_500",
        "http_4xx",
        "start_failed",
    }
)
TOLERATED_AFTER_DATA_LOSS = frozenset({"stored_missing", "start_failed"})
#: Keys documented to live without a TTL (``P`` = the prefix).
SINGLETONS = ("P::streams:instances",)
_AUDIT_MAX_KEYS = 200_000


@dataclass
class ScheduleResult:
    """One schedule: its faults, its chats, and what the instances reported."""

    topology: str
    index: int
    seed: int
    faults: list[Fault]
    chats: list[ChatResult]
    takeovers: list[Takeover] = field(default_factory=list)
    takeovers_metric: int = 0
    tokens_generated: int = 0
    wall_s: float = 0.0

    @property
    def data_loss(self) -> bool:
        """A fault made Redis forget its data."""
        return any(f.loses_data for f in self.faults)

    @property
    def victims(self) -> set[str]:
        """Instance ids a fault touched."""
        return {v for f in self.faults for v in f.victims}

    def needless(self) -> list[Takeover]:
        """Takeovers from an instance no fault touched."""
        return [t for t in self.takeovers if t.from_instance not in self.victims]

    @property
    def answer_tokens(self) -> int:
        """Tokens in the final answers."""
        return sum(c.answer_tokens for c in self.chats)

    def waste(self) -> float | None:
        """Tokens generated beyond those in the answers, as a fraction of the latter."""
        if not self.answer_tokens:
            return None
        return (self.tokens_generated - self.answer_tokens) / self.answer_tokens

    def anomalies(self) -> Counter[str]:
        """Anomalies by kind (tolerated ones excluded)."""
        found: Counter[str] = Counter()
        for chat in self.chats:
            for kind in chat.kinds():
                if not (self.data_loss and kind in TOLERATED_AFTER_DATA_LOSS):
                    found[kind] += 1
        if needless := self.needless():
            found["needless_takeover"] += len(needless)
        for fault in self.faults:
            if fault.error:
                found["fault_failed"] += 1
            if fault.recovery_s is None:
                found["no_recovery"] += 1
        return found

    def tolerated(self) -> Counter[str]:
        """Anomalies excused by a deliberate data loss."""
        found: Counter[str] = Counter()
        if self.data_loss:
            for chat in self.chats:
                found.update(k for k in chat.kinds() if k in TOLERATED_AFTER_DATA_LOSS)
        return found

    def e2e_anomalies(self) -> int:
        """End-to-end anomalies (the count that must be 0)."""
        return sum(n for kind, n in self.anomalies().items() if kind in E2E_KINDS)

    def recoveries(self) -> list[float]:
        """Recovery times of the faults that recovered."""
        return [f.recovery_s for f in self.faults if f.recovery_s is not None]

    def max_stall(self) -> float:
        """The longest wait between two events any chat saw."""
        return max((c.max_gap_s for c in self.chats), default=0.0)

    def line(self, replay: str) -> str:
        """The one-line report, with the command that replays it."""
        anomalies = self.anomalies()
        shown = ", ".join(f"{k}={n}" for k, n in sorted(anomalies.items())) or "none"
        tolerated = self.tolerated()
        if tolerated:
            shown += " (tolerated: " + ", ".join(f"{k}={n}" for k, n in tolerated.items()) + ")"
        waste = self.waste()
        recovery = max(self.recoveries(), default=0.0)
        ok = sum(1 for c in self.chats if not c.anomalies)
        return (
            f"[{self.topology}] schedule {self.index} seed {self.seed}: "
            f"{' '.join(f.label() for f in self.faults)} | chats {len(self.chats)} clean {ok} "
            f"| anomalies {shown} | takeovers {len(self.takeovers)} "
            f"(metric {self.takeovers_metric}, needless {len(self.needless())}) "
            f"| tokens {self.tokens_generated}/{self.answer_tokens} "
            f"waste {'-' if waste is None else f'{waste:.1%}'} | recovery {recovery:.1f}s "
            f"stall {self.max_stall():.1f}s "
            f"| {self.wall_s:.0f}s | replay: {replay}"
        )

    def as_json(self) -> dict[str, Any]:
        """For the JSON report."""
        return {
            "topology": self.topology,
            "index": self.index,
            "seed": self.seed,
            "data_loss": self.data_loss,
            "wall_s": round(self.wall_s, 1),
            "max_stall_s": round(self.max_stall(), 2),
            "faults": [f.as_json() for f in self.faults],
            "anomalies": dict(self.anomalies()),
            "tolerated": dict(self.tolerated()),
            "takeovers": [t.__dict__ for t in self.takeovers],
            "needless_takeovers": [t.__dict__ for t in self.needless()],
            "takeovers_metric": self.takeovers_metric,
            "tokens_generated": self.tokens_generated,
            "answer_tokens": self.answer_tokens,
            "waste": self.waste(),
            "chats": [c.as_json() for c in self.chats],
        }


# -- key audit ----------------------------------------------------------------------------


def key_shape(key: str, prefix: str) -> str:
    """A key with the prefix as ``P`` and its ids as ``*`` (``P::stream:{*}:job``)."""
    shape = "P" + key[len(prefix) :] if key.startswith(prefix) else key
    shape = re.sub(r"\{[^}]*\}", "{*}", shape)
    return re.sub(r"[A-Za-z0-9_-]{16,}", "*", shape)


def keys_without_ttl(masters: list[RedisServer], prefix: str) -> dict[str, dict[str, Any]]:
    """Keys under ``prefix`` with no TTL, by shape: count and an example (singletons kept)."""
    found: dict[str, dict[str, Any]] = {}
    seen = 0
    for server in masters:
        with server.client() as client:
            for key in client.scan_iter(match=f"{prefix}::*", count=1000):
                seen += 1
                if seen > _AUDIT_MAX_KEYS:
                    return found
                if client.ttl(key) != -1:
                    continue
                shape = key_shape(str(key), prefix)
                entry = found.setdefault(shape, {"count": 0, "example": str(key)})
                entry["count"] += 1
    return found


def unexpected_keys(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Keys without TTL other than the documented singletons."""
    return {shape: entry for shape, entry in found.items() if shape not in SINGLETONS}


def redis_clients(masters: list[RedisServer]) -> int:
    """Connected clients of every data master (``INFO clients``)."""
    total = 0
    for server in masters:
        with server.client() as client:
            total += int(client.info("clients").get("connected_clients", 0))
    return total


# -- summary ------------------------------------------------------------------------------


def summary_rows(results: list[ScheduleResult]) -> list[dict[str, Any]]:
    """One row per fault kind (a schedule with several kinds counts in each), then all."""
    kinds = sorted({f.kind for r in results for f in r.faults})
    groups = [(k, [r for r in results if any(f.kind == k for f in r.faults)]) for k in kinds]
    groups.append(("all", results))
    return [_row(kind, group) for kind, group in groups if group]


def _row(kind: str, group: list[ScheduleResult]) -> dict[str, Any]:
    anomalies: Counter[str] = Counter()
    tolerated: Counter[str] = Counter()
    for result in group:
        anomalies.update(result.anomalies())
        tolerated.update(result.tolerated())
    recoveries = [
        f.recovery_s
        for r in group
        for f in r.faults
        if (kind == "all" or f.kind == kind) and f.recovery_s is not None
    ]
    generated = sum(r.tokens_generated for r in group)
    answered = sum(r.answer_tokens for r in group)
    return {
        "kind": kind,
        "schedules": len(group),
        "chats": sum(len(r.chats) for r in group),
        "anomalies": dict(anomalies),
        "tolerated": dict(tolerated),
        "recovery_p50_s": round(statistics.median(recoveries), 2) if recoveries else None,
        "recovery_max_s": round(max(recoveries), 2) if recoveries else None,
        "tokens_generated": generated,
        "answer_tokens": answered,
        "waste": round((generated - answered) / answered, 4) if answered else None,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table."""
    header = ("fault kind", "sched", "chats", "anomalies", "recovery p50/max", "waste")
    lines = [header]
    for row in rows:
        shown = ", ".join(f"{k}={n}" for k, n in sorted(row["anomalies"].items())) or "0"
        if row["tolerated"]:
            shown += f" (+{sum(row['tolerated'].values())} tolerated)"
        p50, top = row["recovery_p50_s"], row["recovery_max_s"]
        recovery = "-" if p50 is None else f"{p50:.1f}/{top:.1f} s"
        waste = "-" if row["waste"] is None else f"{row['waste']:.1%}"
        lines.append(
            (row["kind"], str(row["schedules"]), str(row["chats"]), shown, recovery, waste)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
