"""The page's vendored third-party files are the ones scripts/vendor-page wrote: each
listed with its SHA-256 in vendor/VERSIONS, nothing unlisted, a licence beside each."""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

VENDOR = Path(str(files("chatscale.server") / "static" / "vendor"))


def _listed() -> dict[str, str]:
    sums = {}
    for line in (VENDOR / "VERSIONS").read_text().splitlines():
        digest, _, name = line.partition("  ./")
        if name:
            sums[name] = digest
    return sums


def test_vendored_files_match_their_checksums() -> None:
    listed = _listed()
    present = {
        str(p.relative_to(VENDOR))
        for p in VENDOR.rglob("*")
        if p.is_file() and p.name != "VERSIONS"
    }
    assert present == set(listed), "run scripts/vendor-page instead of editing vendor/"
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_every_vendored_package_has_its_licence() -> None:
    packages = [p for p in VENDOR.iterdir() if p.is_dir()]
    assert {p.name for p in packages} == {"markdown-it", "dompurify", "highlight.js"}
    for package in packages:
        assert (package / "LICENSE").is_file(), package.name
