"""Every module of the package imports first, in a fresh interpreter: an import cycle that
the application's own import order hides (``chatscale.durable.http`` imported before
``chatscale.server`` used to fail) breaks a user's first import."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import chatscale

#: Run by one interpreter: it loads every module the package depends on that is not the
#: package's own (third-party and standard library, found by importing the package whole in
#: another interpreter first), then forks a child per module of the package, which imports
#: that module first of the package's. Loading the dependencies once instead of in every
#: child took this test from about 45 s to a few on a 2-core machine.
_FORKING_IMPORTER = r"""
import importlib, json, os, sys
modules, dependencies = json.load(sys.stdin)
for name in dependencies:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # an optional part of a dependency: the child imports what it needs itself
assert not [m for m in sys.modules if m == "chatscale" or m.startswith("chatscale.")]
failed, running = {}, {}

def reap():
    pid, status = os.wait()
    module, read = running.pop(pid)
    with os.fdopen(read, "rb") as pipe:
        error = pipe.read().decode()
    if status:
        failed[module] = error or f"exit status {status}"

for module in modules:
    if len(running) >= 4:
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
        except BaseException as exc:
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    running[pid] = (module, read)
while running:
    reap()
print(json.dumps(failed))
"""

_LIST_DEPENDENCIES = r"""
import importlib, json, sys
for name in json.load(sys.stdin):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # reported by the forking importer, module by module
print(json.dumps(sorted(
    m for m in sys.modules if m != "chatscale" and not m.startswith(("chatscale.", "__main__"))
)))
"""


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(chatscale.__path__, "chatscale.")
        # Alembic's scripts run inside alembic, not as imports.
        if not info.name.endswith("__main__")
        and not info.name.startswith("chatscale.db.migrations.")
    )


def _run(script: str, payload: object) -> object:
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_module_imports_first() -> None:
    modules = _modules()
    assert "chatscale.durable.fanout" in modules
    dependencies = _run(_LIST_DEPENDENCIES, modules)
    assert isinstance(dependencies, list) and "starlette" in dependencies
    failed = _run(_FORKING_IMPORTER, [modules, dependencies])
    assert not failed, failed
