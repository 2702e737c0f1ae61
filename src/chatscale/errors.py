"""The exception types chatscale raises on purpose."""

from __future__ import annotations


class ChatscaleError(Exception):
    """Base class of every error chatscale raises deliberately."""


class ConfigError(ChatscaleError, ValueError):
    """A configuration value is wrong.

    The message always names the variable, the offending value (secrets masked) and what is
    accepted, so that one line printed at start-up is enough to fix it.
    """

    def __init__(self, variable: str, value: object, problem: str, accepted: str = "") -> None:
        self.variable = variable
        self.value = value
        self.problem = problem
        self.accepted = accepted
        shown = "(unset)" if value is None else repr(value)
        message = f"{variable}={shown}: {problem}"
        if accepted:
            message += f"; expected {accepted}"
        super().__init__(message)


class RedisUnavailableError(ChatscaleError):
    """Redis could not be reached or did not answer as expected at start-up."""
