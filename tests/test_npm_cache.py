"""tests.harness.npm: the npm cache the outside clients' tests install into."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness.npm import installed

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package without dependencies (``npm ci`` needs no registry), and a cache of its own."""
    if shutil.which("npm") is None:
        pytest.skip("npm is needed (scripts/test installs it)")
    monkeypatch.setenv("CHATSCALE_NPM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "project"
    folder.mkdir()
    package = {"name": "cache-probe", "version": "1.0.0", "private": True}
    (folder / "package.json").write_text(json.dumps(package))
    lock = {**package, "lockfileVersion": 3, "requires": True, "packages": {"": package}}
    (folder / "package-lock.json").write_text(json.dumps(lock))
    return folder


def test_a_half_filled_folder_is_installed_again(project: Path, tmp_path: Path) -> None:
    first = installed(project, "probe", "package-lock.json")
    assert first.parent == tmp_path / "cache"
    # What a run killed during an unstaged install left: the folder, not the marker.
    (first / "package-lock.json").unlink()
    (first / "stale").write_text("left over")
    again = installed(project, "probe", "package-lock.json")
    assert again == first
    assert (again / "package-lock.json").exists() and not (again / "stale").exists()
    # No staging folder is left behind.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


def test_an_installed_folder_is_taken_as_it_is(project: Path) -> None:
    first = installed(project, "probe", "package-lock.json")
    (first / "kept").write_text("")
    assert installed(project, "probe", "package-lock.json") == first
    assert (first / "kept").exists()  # no second npm ci
