"""chatscale: run an AI chat backend as many instances, in memory or on Redis."""

from chatscale.errors import ChatscaleError, ConfigError

__all__ = ["ChatscaleError", "ConfigError", "__version__"]

__version__ = "0.1.0"
