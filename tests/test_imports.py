"""Every module of the package imports first, in a fresh interpreter: an import cycle that
the application's own import order hides (``chatscale.durable.http`` imported before
``chatscale.server`` used to fail) breaks a user's first import."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import chatscale


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(chatscale.__path__, "chatscale.")
        # Alembic's scripts run inside alembic, not as imports.
        if not info.name.endswith("__main__")
        and not info.name.startswith("chatscale.db.migrations.")
    )


def _import_alone(module: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return module, done.stderr.strip().splitlines()[-1] if done.returncode else ""


def test_every_module_imports_first() -> None:
    modules = _modules()
    assert "chatscale.durable.fanout" in modules
    with ThreadPoolExecutor(4) as pool:
        failed = {module: error for module, error in pool.map(_import_alone, modules) if error}
    assert not failed, failed
