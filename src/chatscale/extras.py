"""Which optional extra a part of chatscale needs, said at import time."""

from __future__ import annotations

import importlib.util


def require_extra(part: str, *modules: str, extra: str = "server") -> None:
    """Raise :class:`ModuleNotFoundError` naming ``extra`` when one of ``modules`` is not
    installed, instead of a bare "No module named ..." from deep inside ``part``."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"{part} needs the '{extra}' extra: pip install 'chatscale[{extra}]' "
            f"(missing: {', '.join(missing)})",
            name=missing[0],
        )
