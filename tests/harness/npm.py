"""Pinned npm packages for the tests that run outside clients (the AI SDK's, the Durable
Streams conformance suite): ``npm ci`` once per lock file into a cache outside the
repository, ``$CHATSCALE_NPM_CACHE``, else ``$XDG_CACHE_HOME/chatscale``, else
``~/.cache/chatscale``.

The install happens in a staging folder of its own and is renamed into place whole, so a
run that is killed during ``npm ci``, or two runs installing at once, never leave a
half-filled folder that a later run would take for an installed one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

NPM_CI = ("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")


def cache_root() -> Path:
    """Where the installed packages are kept."""
    configured = os.environ.get("CHATSCALE_NPM_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chatscale"


def installed(
    project: Path, name: str, marker: str, *, extra: Sequence[str] = (), timeout_s: float = 600
) -> Path:
    """A folder holding ``project``'s ``package.json``, its lock file and their
    ``node_modules``, installed by ``npm ci`` (with ``extra`` arguments) if no run has yet.

    ``name`` prefixes the folder's name (the lock file's hash follows); ``marker`` is a path
    under it that exists once the install is whole.
    """
    lock = (project / "package-lock.json").read_bytes()
    target = cache_root() / f"{name}-{hashlib.sha256(lock).hexdigest()[:16]}"
    if (target / marker).exists():
        return target
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for file in ("package.json", "package-lock.json"):
            shutil.copyfile(project / file, staging / file)
        # npm's own messages go to the test's captured output (shown when it fails).
        subprocess.run([*NPM_CI, *extra], cwd=staging, check=True, timeout=timeout_s)
        if not (target / marker).exists():
            # A folder an older, unstaged install left half-filled goes first.
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.rename(target)
            except OSError:
                if not (target / marker).exists():  # not another run finishing first
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
