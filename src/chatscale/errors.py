"""The exception types chatscale raises on purpose."""

from __future__ import annotations

from chatscale.masking import mask_text


class ChatscaleError(Exception):
    """Base class of every error chatscale raises deliberately."""


class ConfigError(ChatscaleError, ValueError):
    """A configuration value is wrong.

    The message always names the variable, the offending value (secrets masked) and what is
    accepted, so that one line printed at start-up is enough to fix it.
    """

    def __init__(self, variable: str, value: object, problem: str, accepted: str = "") -> None:
        # Callers mask secrets; URLs in any value are masked here too, as a second line.
        if isinstance(value, str):
            value = mask_text(value)
        self.variable = variable
        self.value = value
        self.problem = problem
        self.accepted = accepted
        shown = "(unset)" if value is None else repr(value)
        message = f"{variable}={shown}: {problem}"
        if accepted:
            message += f"; expected {accepted}"
        super().__init__(message)


class UserFacingError(ChatscaleError):
    """An error whose message is written for end users: it may be shown to them as is.

    Any other exception reaching an end user is replaced by a generic message (its details
    go to the log), because driver and upstream messages can carry hosts, keys or tokens.
    """


class RedisUnavailableError(ChatscaleError):
    """Redis could not be reached or did not answer as expected at start-up."""
