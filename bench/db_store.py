"""Cost of the SQL conversation store on SQLite and PostgreSQL: writes, reads and list pages.

For each database (a SQLite file in a temporary folder; a private PostgreSQL started by the
test harness on a loopback port, never one already running):

* ``add``: ``--ops`` user messages, each opening a new conversation, ``--tasks`` at a time;
* ``answer``: an answer stored in each of them (the insert-once path);
* ``get``: each conversation read back with its two messages;
* ``page first`` / ``page deep``: one user with ``--conversations`` conversations, a page of
  50 from the top and one starting 50 before the end (keyset paging: should cost the same).

Run: ``python bench/db_store.py`` (about a minute on 2 cores). Prints one table; ``--json``
prints the figures as JSON instead. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import percentile  # noqa: E402
from tests.harness.postgres import start_postgres  # noqa: E402

from chatscale.db.conversations import SqlConversationStore  # noqa: E402
from chatscale.db.database import Database  # noqa: E402
from chatscale.db.url import parse_database_url  # noqa: E402

PAGE = 50


async def _timed(
    count: int, tasks: int, operation: Callable[[int], Awaitable[Any]]
) -> dict[str, float]:
    """Run ``operation(i)`` for i in range(count), ``tasks`` at a time: rate and latency."""
    latencies: list[int] = []  # microseconds
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            began = time.perf_counter()
            await operation(i)
            latencies.append(round((time.perf_counter() - began) * 1e6))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "ops_per_s": round(count / elapsed),
        "p50_ms": round(percentile(latencies, 50) / 1000, 2),
        "p99_ms": round(percentile(latencies, 99) / 1000, 2),
    }


async def _page_ms(store: SqlConversationStore, user: str, before: str | None) -> float:
    times = []
    for _ in range(30):
        began = time.perf_counter()
        page = await store.page(user, limit=PAGE, before=before)
        times.append(time.perf_counter() - began)
        if len(page.conversations) != PAGE:
            raise RuntimeError(f"a page of {len(page.conversations)}, expected {PAGE}")
    return round(statistics.median(times) * 1000, 2)


async def measure(url: str, ops: int, tasks: int, conversations: int) -> dict[str, Any]:
    """Every figure for one database."""
    database = Database(parse_database_url(url))
    await database.start(migrate=True)
    store = SqlConversationStore(database.engine)
    try:
        result: dict[str, Any] = {}

        def user(i: int) -> str:
            return f"u{i % 20}"

        result["add"] = await _timed(
            ops,
            tasks,
            lambda i: store.add_user_message(
                user(i), f"c{i}", {"role": "user", "content": f"q{i}"}, title=f"q{i}"
            ),
        )
        result["answer"] = await _timed(
            ops,
            tasks,
            lambda i: store.store_answer(
                user(i), f"c{i}", f"s{i}", {"role": "assistant", "content": "a" * 800}
            ),
        )
        result["get"] = await _timed(ops, tasks, lambda i: store.get(user(i), f"c{i}"))
        # One user with many conversations (written in batches, not measured).
        for start in range(0, conversations, 500):
            await asyncio.gather(
                *(
                    store.add_user_message(
                        "heavy", f"h{i}", {"role": "user", "content": "x"}, title="x"
                    )
                    for i in range(start, min(start + 500, conversations))
                )
            )
        cursor = None
        walked = 0
        while walked < conversations - PAGE:
            page = await store.page(
                "heavy", limit=min(1000, conversations - PAGE - walked), before=cursor
            )
            walked += len(page.conversations)
            cursor = page.next_cursor
        result["page_first_ms"] = await _page_ms(store, "heavy", None)
        result["page_deep_ms"] = await _page_ms(store, "heavy", cursor)
        return result
    finally:
        await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        sqlite = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        results["sqlite"] = asyncio.run(measure(sqlite, args.ops, args.tasks, args.conversations))
    server = start_postgres()
    try:
        url = server.create_database("bench")
        results["postgresql"] = asyncio.run(measure(url, args.ops, args.tasks, args.conversations))
    finally:
        server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.ops} ops, {args.tasks} tasks; list of {args.conversations}, pages of {PAGE}")
    print(f"{'':12}{'sqlite':>28}{'postgresql':>28}")
    for step in ("add", "answer", "get"):
        cells = [
            "{ops_per_s:>6}/s p50 {p50_ms:>5} p99 {p99_ms:>6} ms".format(**results[d][step])
            for d in ("sqlite", "postgresql")
        ]
        print(f"{step:12}{cells[0]:>28}{cells[1]:>28}")
    for step in ("page_first_ms", "page_deep_ms"):
        print(f"{step:12}{results['sqlite'][step]:>25} ms{results['postgresql'][step]:>25} ms")


if __name__ == "__main__":
    main()
