"""Paging a user's conversation list: one cursor format for every conversation store.

A page is ordered most recently updated first; its cursor is the sort key of its last
conversation, ``<updated_at>~<id>``, and the next page starts strictly after it (keyset
paging: a conversation updated meanwhile moves to the top instead of shifting the pages).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Largest page (and the size of the unpaged list, the Redis store's bound).
MAX_PAGE = 1_000
#: What a cursor looks like: a time (repr of a float) and a conversation id.
CURSOR_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?~[A-Za-z0-9_-]{1,100}$"
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class Page:
    """One page of a user's conversation list, most recently updated first."""

    conversations: list[dict[str, Any]]
    #: Pass as ``before`` for the next page; None on the last one.
    next_cursor: str | None


def make_cursor(updated_at: float, conversation_id: str) -> str:
    """An opaque paging cursor: the last conversation's sort key."""
    return f"{updated_at!r}~{conversation_id}"


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The sort key in ``cursor``; ValueError naming what is wrong."""
    if not _CURSOR.match(cursor):
        raise ValueError(f"before={cursor[:120]!r} is not a cursor from a previous page")
    stamp, _, conversation_id = cursor.partition("~")
    return float(stamp), conversation_id


def page_of_rows(rows: Iterable[dict[str, Any]], limit: int) -> Page:
    """A page from up to ``limit + 1`` summaries already in order (one more tells whether a
    next page exists)."""
    found = list(rows)
    page = found[:limit]
    more = len(found) > limit and bool(page)
    cursor = make_cursor(page[-1]["updated_at"], page[-1]["id"]) if more else None
    return Page(page, cursor)


def page_of_list(summaries: list[dict[str, Any]], limit: int, before: str | None) -> Page:
    """A page of a whole list (the memory and Redis stores)."""
    summaries = sorted(summaries, key=lambda s: (s["updated_at"], s["id"]), reverse=True)
    if before is not None:
        key = parse_cursor(before)
        summaries = [s for s in summaries if (s["updated_at"], s["id"]) < key]
    return page_of_rows(summaries[: limit + 1], limit)
