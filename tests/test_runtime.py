"""``chatscale.runtime.tune_gc``, run in a child interpreter (it changes the whole
process's collector, which the test runner must keep as it is)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import gc, json, sys
from chatscale.runtime import tune_gc
before = gc.get_threshold()
tune_gc(int(sys.argv[1]))
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count() > 0]))
"""


@pytest.mark.parametrize(("threshold", "tuned"), [(20000, True), (0, False)])
def test_tune_gc_sets_the_young_threshold_and_freezes_start_up(threshold: int, tuned: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after, frozen = json.loads(done.stdout)
    # CPython's own young threshold differs between versions (700 on 3.11, 2000 on 3.13):
    # only the first number changes, the older generations keep theirs.
    assert after == ([threshold, *before[1:]] if tuned else before)
    assert frozen is tuned
