"""``chatscale.runtime.tune_gc``, run in a child interpreter (it changes the whole
process's collector, which the test runner must keep as it is)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import gc, sys
from chatscale.runtime import tune_gc
before = gc.get_threshold()
tune_gc(int(sys.argv[1]))
print(before, gc.get_threshold(), gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        ("20000", "(700, 10, 10) (20000, 10, 10) True"),
        ("0", "(700, 10, 10) (700, 10, 10) False"),
    ],
)
def test_tune_gc_sets_the_young_threshold_and_freezes_start_up(
    threshold: str, expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, threshold],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected
