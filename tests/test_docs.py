"""The documentation agrees with the code: every setting is documented in
docs/configuration.md, every variable documented there is a setting, and links between the
docs point to files and headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

from chatscale.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"


def settings_variables() -> set[str]:
    """The environment variables Settings reads (internal, excluded fields are not)."""
    return {name.upper() for name, field in Settings.model_fields.items() if not field.exclude}


def documented_variables() -> set[str]:
    """The variables in the first column of configuration.md's tables."""
    found: set[str] = set()
    for line in CONFIGURATION.read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            found.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]))
    return found


def test_every_setting_is_documented() -> None:
    missing = settings_variables() - documented_variables()
    assert not missing, f"settings missing from docs/configuration.md: {sorted(missing)}"


def test_every_documented_variable_is_a_setting() -> None:
    unknown = documented_variables() - settings_variables()
    assert not unknown, f"docs/configuration.md documents no such setting: {sorted(unknown)}"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_links_between_docs_reach_existing_files_and_headings() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken: list[str] = []
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # another site
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            checked += 1
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert checked > 50 and not broken, broken
