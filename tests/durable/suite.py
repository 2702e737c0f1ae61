"""Runs the public Durable Streams server conformance suite (npm, pinned in ``conformance/``)
against a URL and reports the counts.

The npm packages are installed with ``npm ci`` once per lock file into a cache outside the
repository (:mod:`tests.harness.npm`). The suite's own CLI finds no
tests inside ``node_modules`` (vitest excludes that folder), so its ``dist/`` is copied out and
its test runner renamed to a ``*.test.js`` file, which ``vitest run`` then finds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.npm import installed

HERE = Path(__file__).parent / "conformance"
SUITE_PACKAGE = "@durable-streams/server-conformance-tests"
#: The whole suite took about 32 s on a 2-core machine; a hung run must not block CI.
RUN_TIMEOUT_S = 600


@dataclass
class SuiteResult:
    """Counts of one run, and the failures' names with their first message line."""

    passed: int
    failed: int
    skipped: int
    failures: list[str] = field(default_factory=list)


#: vitest 4 runs on Node.js 20 or later.
NODE_MAJOR = 20


def node_tools_missing() -> str | None:
    """Why the suite cannot run here, or ``None``."""
    missing = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    major = version.lstrip("v").split(".", 1)[0]
    if not major.isdigit() or int(major) < NODE_MAJOR:
        return f"Node.js {NODE_MAJOR} or later is needed, found {version or 'nothing'}"
    return None


def installed_suite() -> Path:
    """A directory holding ``node_modules`` for the pinned lock file (``npm ci`` if new)."""
    return installed(
        HERE,
        "ds-conformance",
        f"node_modules/{SUITE_PACKAGE}/dist",
        extra=["--ignore-scripts"],
        timeout_s=RUN_TIMEOUT_S,
    )


def run_suite(url: str, workdir: Path) -> SuiteResult:
    """Run the whole suite against ``url`` (a server root; streams live at ``/v1/stream``)."""
    installed = installed_suite()
    run_dir = workdir / "conformance-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(installed / "node_modules" / SUITE_PACKAGE / "dist", run_dir / "suite")
    (run_dir / "suite" / "test-runner.js").rename(run_dir / "suite" / "conformance.test.js")
    os.symlink(installed / "node_modules", run_dir / "node_modules")
    shutil.copy(installed / "package.json", run_dir / "package.json")
    (run_dir / "vitest.config.mjs").write_text(
        'export default { test: { include: ["suite/**/*.test.js"] } };\n'
    )
    report = run_dir / "report.json"
    completed = subprocess.run(
        ["npx", "--no-install", "vitest", "run", "--reporter=json", f"--outputFile={report}"],
        cwd=run_dir,
        env={**os.environ, "CONFORMANCE_TEST_URL": url, "NO_COLOR": "1"},
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
    )
    if not report.exists():
        output = (completed.stdout + completed.stderr).decode(errors="replace")
        raise RuntimeError(f"the conformance suite did not report: {output[-3000:]}")
    data = json.loads(report.read_text())
    failures = [
        f"{test['fullName']}: {(test.get('failureMessages') or [''])[0].splitlines()[0][:300]}"
        for suite in data["testResults"]
        for test in suite["assertionResults"]
        if test["status"] == "failed"
    ]
    return SuiteResult(
        passed=data["numPassedTests"],
        failed=data["numFailedTests"],
        skipped=data["numPendingTests"] + data.get("numTodoTests", 0),
        failures=failures,
    )
