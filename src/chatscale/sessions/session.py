"""The per-request session object applications see as ``scope["session"]``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, MutableMapping
from typing import Any

ANONYMOUS_PREFIX = "anon-"


class SessionDataError(TypeError):
    """A value put in a session is not JSON (sessions hold JSON only)."""


def new_anonymous_user_id() -> str:
    """A stable identity for a visitor who has not logged in (128 random bits)."""
    return ANONYMOUS_PREFIX + secrets.token_urlsafe(16)


def dump_json(value: object) -> str:
    """Strict, canonical JSON (sorted keys, no NaN); :class:`SessionDataError` otherwise."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SessionDataError(f"session data must be JSON: {exc}") from None


class Session(MutableMapping[str, Any]):
    """One visitor's server-side session: a JSON dict plus identity and lifecycle controls.

    Use it like a dict (``session["theme"] = "dark"``). Changes are saved once, when the
    response starts, and only if the data actually changed. ``user_id`` is the stable
    identity (anonymous until the application sets a real one). Call :meth:`rotate` after
    login or any privilege change (new id, old one invalidated), :meth:`destroy` on logout.
    """

    __slots__ = (
        "_data",
        "_destroyed",
        "_rotated",
        "_user_id",
        "created_at",
        "id_hash",
        "is_new",
        "saved_state",
        "session_id",
    )

    def __init__(
        self,
        *,
        session_id: str,
        id_hash: str,
        user_id: str,
        data: dict[str, Any],
        created_at: float,
        is_new: bool,
        saved_state: str | None,
    ) -> None:
        self.session_id = session_id
        self.id_hash = id_hash
        self._user_id = user_id
        self._data = data
        self.created_at = created_at
        self.is_new = is_new
        #: Canonical JSON of what the store holds (``None`` when nothing is stored yet).
        self.saved_state = saved_state
        self._rotated = False
        self._destroyed = False

    # Identity -------------------------------------------------------------------------
    @property
    def user_id(self) -> str:
        """The visitor's identity: anonymous (``anon-...``) until the application sets one."""
        return self._user_id

    @user_id.setter
    def user_id(self, value: str) -> None:
        if not isinstance(value, str) or not value or len(value) > 256:
            raise ValueError("user_id must be a non-empty string of at most 256 characters")
        self._user_id = value

    @property
    def is_anonymous(self) -> bool:
        """Whether ``user_id`` is still the anonymous identity given on the first visit."""
        return self._user_id.startswith(ANONYMOUS_PREFIX)

    # Lifecycle ------------------------------------------------------------------------
    def rotate(self) -> None:
        """Give the session a new id (keeping its data); the old cookie stops working.

        Call it on login and on every privilege change, so an id planted or seen before
        cannot ride along (session fixation).
        """
        self._check_alive()
        self._rotated = True

    def destroy(self) -> None:
        """Delete the session from the store and clear the cookie (logout)."""
        self._destroyed = True
        self._data.clear()

    @property
    def rotated(self) -> bool:
        """Whether a :meth:`rotate` is pending (not yet applied by the manager)."""
        return self._rotated

    def take_rotation(self) -> bool:
        """For the manager: whether a rotation is pending, clearing the request."""
        pending, self._rotated = self._rotated, False
        return pending

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called during this request."""
        return self._destroyed

    # Serialisation --------------------------------------------------------------------
    def state(self) -> str:
        """Canonical JSON of everything stored (identity, data, creation time)."""
        return dump_json(
            {"v": 1, "user": self._user_id, "created": self.created_at, "data": self._data}
        )

    @property
    def modified(self) -> bool:
        """Whether the stored form differs from what the store holds."""
        return self.saved_state is None or self.state() != self.saved_state

    # Mapping --------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_alive()
        if not isinstance(key, str):
            raise SessionDataError(f"session keys must be strings, not {type(key).__name__}")
        dump_json(value)  # fail where the bad value is set, not later at save time
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<Session user={self._user_id!r} keys={sorted(self._data)!r}>"

    def _check_alive(self) -> None:
        if self._destroyed:
            raise RuntimeError("the session was destroyed during this request")
