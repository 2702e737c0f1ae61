"""chatscale's settings: read once from the environment (and an optional ``.env``), validated.

Every variable is a field of :class:`Settings`; every bad value raises :class:`ConfigError`
naming the variable, the value (secrets masked) and what is accepted. Nothing falls back to a
default silently. ``docs/configuration.md`` documents each variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatscale.cache.namespaces import DEFAULT_FORCED_IN_MEMORY, CacheKeys
from chatscale.db.url import DEFAULT_DATABASE_URL, DatabaseTarget, parse_database_url
from chatscale.errors import ConfigError
from chatscale.masking import mask_uri
from chatscale.numbers import parse_whole
from chatscale.redis.keys import prefix_problem
from chatscale.redis.uri import RedisTarget, Topology, parse_redis_uri

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_BOOL_ACCEPTED = "true/false, 1/0, yes/no or on/off (any case)"
_SECRET_FIELDS = {
    "redis_password",
    "redis_sentinel_password",
    "session_secret",
    "session_secret_previous",
    "openai_api_key",
    "durable_streams_read_tokens",
    "durable_streams_write_tokens",
}
#: Settings that are URIs and may carry credentials: printed through :func:`mask_uri`.
_URI_FIELDS = {"redis_uri", "openai_base_url", "database_url"}


def _env_name(field: str) -> str:
    return field.upper()


def _strict_bool(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"is not a boolean; expected {_BOOL_ACCEPTED}")
    return value


def _int_in(low: int, high: int, unit: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            # Long enough that a huge value is "out of range", not "not a number".
            magnitude = parse_whole(text.removeprefix("-"), max_digits=1000)
            if magnitude is None:
                raise ValueError(f"is not a whole number; expected {unit} from {low} to {high}")
            value = -magnitude if text.startswith("-") else magnitude
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"is not a whole number; expected {unit} from {low} to {high}")
        if not low <= value <= high:
            raise ValueError(f"is out of range; expected {unit} from {low} to {high}")
        return value

    return check


def _optional_int_in(low: int, high: int, unit: str) -> Callable[[Any], Any]:
    # Empty (or absent): the component's own default.
    check = _int_in(low, high, unit)

    def optional(value: Any) -> Any:
        value = _optional_text(value)
        return None if value is None else check(value)

    return optional


def _float_in(low: float, high: float, unit: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"is not a number; expected {unit} from {low} to {high}") from None
        if not low <= number <= high or number != number:
            raise ValueError(f"is out of range; expected {unit} from {low} to {high}")
        return number

    return check


def _namespaces(value: Any) -> Any:
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
        valid = {k.value for k in CacheKeys}
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ValueError(
                f"unknown cache namespace(s) {', '.join(unknown)}; "
                f"valid names are {', '.join(sorted(valid))}"
            )
        return frozenset(CacheKeys(n) for n in names)
    return value


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def _optional_rate_limit(value: Any) -> Any:
    # Empty (or blank) turns the limit off.
    if isinstance(value, str) and not value.strip():
        return ""
    return _rate_limit(value)


def _rate_limit(value: Any) -> Any:
    # The ``limits`` library's notation ("30/minute", "10 per 2 minutes; 500/day").
    if not isinstance(value, str):
        return value
    text = value.strip()
    expected = "limits notation such as 30/minute or '10/second; 300/hour', amounts above 0"
    try:
        from limits import parse_many
    except ImportError:  # the server extra is not installed: nothing can be rate limited
        return text
    try:
        items = parse_many(text)
    except ValueError:
        raise ValueError(f"is not a rate limit; expected {expected}") from None
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(f"allows no request at all; expected {expected}")
    return text


def _origins(value: Any) -> Any:
    # Normalised here so a bad entry fails at start-up, naming ALLOWED_ORIGINS.
    from chatscale.sessions.csrf import parse_allowed_origins

    return tuple(sorted(parse_allowed_origins(_csv(value))))


def _one_of(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            for choice in allowed:
                if text.lower() == choice.lower():
                    return choice
        raise ValueError(f"is not valid; expected {', '.join(allowed)} (any case)")

    return check


def _optional_text(value: Any) -> Any:
    # An empty variable means "not set" for every optional text value.
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _base_path(value: Any) -> Any:
    # Where the protocol is mounted: an absolute path, no trailing slash, none of the
    # server's own path spaces.
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("/") or text.endswith("/") or "//" in text or len(text) > 200:
        raise ValueError("is not a base path; expected an absolute path such as /v1/stream")
    if any(not (c.isalnum() or c in "/-._~") for c in text):
        raise ValueError(
            "has characters other than letters, digits and /-._~; expected e.g. /v1/stream"
        )
    taken = ("/api", "/static", "/openapi.json", "/healthz", "/readyz", "/metrics")
    if any(text == t or text.startswith(t + "/") for t in taken):
        raise ValueError(
            f"is one of the server's own paths; expected a path outside {', '.join(taken)}"
        )
    return text


def _tokens(value: Any) -> Any:
    tokens = _csv(value)
    if isinstance(tokens, tuple):
        for token in tokens:
            if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
                raise ValueError(
                    "has a token shorter than 16 characters or with spaces; expected "
                    "comma-separated tokens of 16 or more printable characters"
                )
    return tokens


Bool = Annotated[bool, BeforeValidator(_strict_bool)]
OptBool = Annotated[bool | None, BeforeValidator(_optional_text), BeforeValidator(_strict_bool)]
OptStr = Annotated[str | None, BeforeValidator(_optional_text)]
OptSecret = Annotated[SecretStr | None, BeforeValidator(_optional_text)]
OptPath = Annotated[Path | None, BeforeValidator(_optional_text)]


def ints(low: int, high: int, unit: str) -> BeforeValidator:
    """Check an int field strictly against ``low..high`` (``unit`` appears in errors)."""
    return BeforeValidator(_int_in(low, high, unit))


def floats(low: float, high: float, unit: str) -> BeforeValidator:
    """Check a float field strictly against ``low..high``."""
    return BeforeValidator(_float_in(low, high, unit))


@dataclass(frozen=True)
class TLSOptions:
    """TLS material for Redis connections (verification is always on)."""

    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None


@dataclass(frozen=True)
class RedisConfig:
    """Everything needed to connect, derived from the settings."""

    target: RedisTarget
    tls: TLSOptions | None
    prefix: str
    max_connections: int
    pool_timeout_s: float
    connect_timeout_s: float
    socket_timeout_s: float
    retry_max_delay_s: float
    retry_max_attempts: int
    ping_interval_s: float
    alternative_dns_lookup: bool
    sentinel_username: str | None
    sentinel_password: str | None = field(repr=False)

    @property
    def topology(self) -> Topology:
        """The topology ``REDIS_URI`` selected."""
        return self.target.topology


class Settings(BaseSettings):
    """All of chatscale's configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- Redis: switch and connection -------------------------------------------------
    use_redis: Bool = False
    redis_uri: OptStr = Field(default=None, repr=False)  # may carry a password
    use_redis_cluster: Bool = False
    redis_username: OptStr = None
    redis_password: OptSecret = None
    redis_sentinel_username: OptStr = None
    redis_sentinel_password: OptSecret = None
    redis_ca: OptPath = None
    redis_tls_cert: OptPath = None
    redis_tls_key: OptPath = None
    redis_key_prefix: OptStr = None
    redis_key_prefix_var: OptStr = None
    redis_use_alternative_dns_lookup: Bool = False
    # --- Redis: limits and tuning (LibreChat's names and defaults) ----------------------
    redis_max_connections: Annotated[int, ints(1, 100_000, "connections")] = 100
    redis_pool_timeout: Annotated[int, ints(1, 600_000, "milliseconds")] = 5_000
    redis_max_listeners: Annotated[int, ints(1, 1_000_000, "listeners")] = 40
    redis_ping_interval: Annotated[int, ints(0, 86_400, "seconds (0 disables)")] = 0
    redis_connect_timeout: Annotated[int, ints(1, 600_000, "milliseconds")] = 10_000
    redis_socket_timeout: Annotated[int, ints(100, 600_000, "milliseconds")] = 5_000
    redis_retry_max_delay: Annotated[int, ints(1, 600_000, "milliseconds")] = 3_000
    redis_retry_max_attempts: Annotated[int, ints(0, 1_000_000, "attempts (0 = forever)")] = 10
    redis_scan_count: Annotated[int, ints(1, 1_000_000, "keys per SCAN")] = 1_000
    redis_delete_chunk_size: Annotated[int, ints(1, 1_000_000, "keys per delete")] = 1_000
    redis_cluster_safe_delete: Bool = False
    # --- Caches -----------------------------------------------------------------------
    forced_in_memory_cache_namespaces: Annotated[
        frozenset[CacheKeys], NoDecode, BeforeValidator(_namespaces)
    ] = DEFAULT_FORCED_IN_MEMORY
    near_cache_namespaces: Annotated[
        frozenset[CacheKeys], NoDecode, BeforeValidator(_namespaces)
    ] = frozenset()
    near_cache_ttl: Annotated[int, ints(1, 3_600_000, "milliseconds")] = 5_000
    memory_cache_max_entries: Annotated[int, ints(1, 100_000_000, "entries per namespace")] = (
        100_000
    )
    # --- Sessions ---------------------------------------------------------------------
    session_secret: OptSecret = None
    session_secret_previous: OptSecret = None
    session_ttl: Annotated[int, ints(60, 31_536_000, "seconds")] = 7 * 86_400
    session_cookie_name: str = "chatscale_session"
    session_cookie_secure: Literal["auto", "true", "false"] = "auto"
    session_create_limit: Annotated[str, BeforeValidator(_rate_limit)] = "60/minute"
    allowed_origins: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_origins)] = ()
    # --- Rate limits ------------------------------------------------------------------
    chat_rate_limit: Annotated[str, BeforeValidator(_rate_limit)] = "30/minute"
    chat_concurrency_limit: Annotated[
        int, ints(0, 10_000, "running generations per user (0 = no limit)")
    ] = 3
    ban_violation_limit: Annotated[int, ints(0, 1_000_000, "violations (0 disables bans)")] = 20
    ban_duration: Annotated[int, ints(1, 31_536_000, "seconds")] = 900
    trusted_proxies: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_csv)] = ()
    # --- Resumable streams --------------------------------------------------------------
    use_redis_streams: OptBool = None
    stream_running_ttl: Annotated[int, ints(10, 86_400, "seconds")] = 1_200
    stream_finished_ttl: Annotated[int, ints(0, 604_800, "seconds")] = 300
    stream_lease_ttl: Annotated[int, ints(1_000, 600_000, "milliseconds")] = 10_000
    stream_takeover: Bool = True
    stream_drain_timeout: Annotated[int, ints(0, 3_600, "seconds")] = 30
    #: None: the backend's default (1 ms on Redis, 0 in memory).
    stream_delta_coalesce_ms: Annotated[
        int | None, BeforeValidator(_optional_int_in(0, 1_000, "milliseconds"))
    ] = None
    stream_max_events: Annotated[int, ints(10, 10_000_000, "events per job")] = 100_000
    stream_max_bytes: Annotated[int, ints(1_024, 1_073_741_824, "bytes per job")] = 8 * 1_048_576
    stream_subscriber_buffer: Annotated[int, ints(1, 1_000_000, "events per subscriber")] = 10_000
    stream_replay_page: Annotated[int, ints(1, 100_000, "events per page")] = 1_000
    sse_stall_timeout: Annotated[int, ints(1, 3_600, "seconds")] = 30
    # --- Durable Streams protocol (docs/durable-streams.md) ------------------------------
    durable_streams: Bool = False
    durable_streams_path: Annotated[str, BeforeValidator(_base_path)] = "/v1/stream"
    durable_streams_auth: Annotated[
        Literal["token", "none"], BeforeValidator(_one_of("token", "none"))
    ] = "token"
    durable_streams_read_tokens: Annotated[
        tuple[str, ...], NoDecode, BeforeValidator(_tokens), Field(repr=False)
    ] = ()
    durable_streams_write_tokens: Annotated[
        tuple[str, ...], NoDecode, BeforeValidator(_tokens), Field(repr=False)
    ] = ()
    durable_streams_long_poll_timeout: Annotated[float, floats(0.1, 300, "seconds")] = 20.0
    durable_streams_sse_duration: Annotated[float, floats(1, 3_600, "seconds")] = 60.0
    durable_streams_max_body: Annotated[int, ints(1, 1_073_741_824, "bytes")] = 8 * 1_048_576
    durable_streams_max_read: Annotated[int, ints(1_024, 1_073_741_824, "bytes")] = 1_048_576
    #: Empty: writes are not limited.
    durable_streams_write_rate_limit: Annotated[str, BeforeValidator(_optional_rate_limit)] = ""

    # --- Database (docs/configuration.md) ------------------------------------------------
    database_url: OptStr = Field(default=None, repr=False)  # may carry a password
    database_migrate: Bool = True

    # --- Server and models --------------------------------------------------------------
    host: str = "127.0.0.1"
    port: Annotated[int, ints(0, 65_535, "a TCP port")] = 3080
    max_message_chars: Annotated[int, ints(1, 10_000_000, "characters")] = 32_000
    conversation_retention: Annotated[int, ints(60, 31_536_000 * 10, "seconds")] = 30 * 86_400
    default_model: str = "demo"
    openai_api_key: OptSecret = None
    openai_base_url: OptStr = Field(default=None, repr=False)  # may carry credentials
    openai_models: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_csv)] = ()
    openai_timeout: Annotated[float, floats(0.1, 3_600, "seconds")] = 60.0
    openai_max_retries: Annotated[int, ints(0, 10, "retries")] = 1
    openai_http_client: Annotated[
        Literal["aiohttp", "httpx"], BeforeValidator(_one_of("aiohttp", "httpx"))
    ] = "aiohttp"
    demo_tokens_per_second: Annotated[float, floats(0.1, 100_000, "tokens per second")] = 50.0
    demo_response_tokens: Annotated[int, ints(1, 1_000_000, "tokens")] = 200
    chaos_model: Bool = False
    # --- The HTTP edge (docs/security.md) -------------------------------------------------
    max_request_body_bytes: Annotated[int, ints(0, 1_073_741_824, "bytes")] = 65_536
    request_body_timeout: Annotated[int, ints(1, 3_600, "seconds")] = 30
    max_request_header_bytes: Annotated[int, ints(1_024, 16_777_216, "bytes")] = 32_768
    request_header_timeout: Annotated[int, ints(1, 3_600, "seconds")] = 10
    http_keep_alive_timeout: Annotated[int, ints(1, 3_600, "seconds")] = 75
    server_event_loop: Annotated[
        Literal["auto", "uvloop", "asyncio"],
        BeforeValidator(_one_of("auto", "uvloop", "asyncio")),
    ] = "auto"
    # --- Logs (docs/server.md) ----------------------------------------------------------
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(_one_of("DEBUG", "INFO", "WARNING", "ERROR")),
    ] = "INFO"
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_one_of("text", "json"))] = (
        "text"
    )
    access_log: Bool = False
    # --- The process (docs/deployment.md) ---------------------------------------------
    gc_threshold: Annotated[int, ints(0, 100_000_000, "allocations")] = 20_000

    # Derived in the validator below; excluded from the environment.
    redis: RedisConfig | None = Field(default=None, exclude=True)
    key_prefix: str = Field(default="", exclude=True)
    #: Where conversations (and, without Redis, sessions) live: DATABASE_URL, else the
    #: default SQLite file unless USE_REDIS keeps them on Redis (None).
    database: DatabaseTarget | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.key_prefix = self._resolve_prefix()
        if self.use_redis_streams is None:
            self.use_redis_streams = self.use_redis
        elif self.use_redis_streams and not self.use_redis:
            raise ConfigError(
                "USE_REDIS_STREAMS", "true", "needs Redis", "USE_REDIS=true with a REDIS_URI"
            )
        self._check_tls_files()
        self._check_durable_streams()
        self.database = self._resolve_database()
        if not self.use_redis:
            self.redis = None
            return self
        if self.redis_uri is None:
            raise ConfigError(
                "REDIS_URI",
                None,
                "USE_REDIS=true needs a connection URI",
                "e.g. REDIS_URI=redis://127.0.0.1:6379",
            )
        target = parse_redis_uri(self.redis_uri, force_cluster=self.use_redis_cluster)
        target = self._apply_credentials(target)
        if (self.redis_ca or self.redis_tls_cert) and not target.tls:
            name = "REDIS_CA" if self.redis_ca else "REDIS_TLS_CERT"
            raise ConfigError(
                name,
                str(self.redis_ca or self.redis_tls_cert),
                "TLS files are set but REDIS_URI does not use TLS",
                "a rediss:// REDIS_URI",
            )
        if self.redis_use_alternative_dns_lookup and target.topology is not Topology.CLUSTER:
            raise ConfigError(
                "REDIS_USE_ALTERNATIVE_DNS_LOOKUP",
                "true",
                "only applies to Redis Cluster",
                "a Cluster REDIS_URI (several URIs or USE_REDIS_CLUSTER=true)",
            )
        tls = (
            TLSOptions(self.redis_ca, self.redis_tls_cert, self.redis_tls_key)
            if target.tls
            else None
        )
        sentinel_password = self.redis_sentinel_password
        self.redis = RedisConfig(
            target=target,
            tls=tls,
            prefix=self.key_prefix,
            max_connections=self.redis_max_connections,
            pool_timeout_s=self.redis_pool_timeout / 1000,
            connect_timeout_s=self.redis_connect_timeout / 1000,
            socket_timeout_s=self.redis_socket_timeout / 1000,
            retry_max_delay_s=self.redis_retry_max_delay / 1000,
            retry_max_attempts=self.redis_retry_max_attempts,
            ping_interval_s=float(self.redis_ping_interval),
            alternative_dns_lookup=self.redis_use_alternative_dns_lookup,
            sentinel_username=self.redis_sentinel_username or target.username,
            sentinel_password=(
                sentinel_password.get_secret_value() if sentinel_password else target.password
            ),
        )
        return self

    def _resolve_database(self) -> DatabaseTarget | None:
        # Validated even when unused, so that a typo never waits for the day it is used.
        explicit = parse_database_url(self.database_url) if self.database_url else None
        if CacheKeys.CONVERSATIONS in self.forced_in_memory_cache_namespaces:
            return None  # conversations (and sessions) in process memory, as asked
        if explicit is not None:
            return explicit
        # USE_REDIS without DATABASE_URL: conversations stay on Redis (not durable).
        return None if self.use_redis else parse_database_url(DEFAULT_DATABASE_URL)

    def _resolve_prefix(self) -> str:
        if self.redis_key_prefix is not None and self.redis_key_prefix_var is not None:
            raise ConfigError(
                "REDIS_KEY_PREFIX_VAR",
                self.redis_key_prefix_var,
                "cannot be set together with REDIS_KEY_PREFIX",
                "only one of the two",
            )
        if self.redis_key_prefix_var is not None:
            name = self.redis_key_prefix_var.strip()
            value = os.environ.get(name)
            if value is None:
                value = _dotenv().get(name)
            if value is None or not value.strip():
                raise ConfigError(
                    "REDIS_KEY_PREFIX_VAR",
                    name,
                    f"names the variable {name} which is unset or empty",
                    "the name of a set, non-empty variable (e.g. K_REVISION)",
                )
            prefix, variable = value.strip(), f"{name} (via REDIS_KEY_PREFIX_VAR)"
        else:
            prefix, variable = (self.redis_key_prefix or "").strip(), "REDIS_KEY_PREFIX"
        problem = prefix_problem(prefix)
        if problem:
            raise ConfigError(variable, prefix, f"is not a valid key prefix: it {problem}")
        return prefix

    def _apply_credentials(self, target: RedisTarget) -> RedisTarget:
        # The spec: the separate variables override credentials in the URI. (LibreChat's
        # code does the opposite; chatscale follows its documentation.)
        username = self.redis_username if self.redis_username is not None else target.username
        password = (
            self.redis_password.get_secret_value()
            if self.redis_password is not None
            else target.password
        )
        if username is not None and password is None:
            raise ConfigError(
                "REDIS_USERNAME",
                username,
                "a username needs a password",
                "REDIS_PASSWORD or a password in REDIS_URI",
            )
        return replace(target, username=username, password=password)

    def _check_durable_streams(self) -> None:
        if not self.durable_streams or self.durable_streams_auth == "none":
            return
        if not self.durable_streams_read_tokens and not self.durable_streams_write_tokens:
            raise ConfigError(
                "DURABLE_STREAMS_WRITE_TOKENS",
                None,
                "DURABLE_STREAMS=true with DURABLE_STREAMS_AUTH=token needs at least one token",
                "DURABLE_STREAMS_WRITE_TOKENS and/or DURABLE_STREAMS_READ_TOKENS, "
                "or DURABLE_STREAMS_AUTH=none on a trusted network",
            )

    def _check_tls_files(self) -> None:
        for name, path in (
            ("REDIS_CA", self.redis_ca),
            ("REDIS_TLS_CERT", self.redis_tls_cert),
            ("REDIS_TLS_KEY", self.redis_tls_key),
        ):
            if path is None:
                continue
            if not path.is_file():
                raise ConfigError(name, str(path), "no such file", "a readable PEM file")
            try:
                with path.open("rb") as handle:
                    head = handle.read(4096)
            except OSError as exc:
                raise ConfigError(
                    name, str(path), f"cannot be read ({exc.strerror})", "a readable PEM file"
                ) from None
            if b"-----BEGIN" not in head:
                raise ConfigError(name, str(path), "is not a PEM file", "a PEM file")
        if (self.redis_tls_cert is None) != (self.redis_tls_key is None):
            missing = "REDIS_TLS_KEY" if self.redis_tls_key is None else "REDIS_TLS_CERT"
            raise ConfigError(
                missing,
                None,
                "mutual TLS needs both a certificate and its key",
                "REDIS_TLS_CERT and REDIS_TLS_KEY together",
            )

    def describe(self) -> dict[str, Any]:
        """The effective settings as environment names and printable values, secrets masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            if name in {"redis", "key_prefix", "database"}:
                continue
            value = getattr(self, name)
            if name in _SECRET_FIELDS:
                value = "***" if value is not None else None
            elif name in _URI_FIELDS and value is not None:
                value = mask_uri(value)
            elif isinstance(value, frozenset):
                value = ",".join(sorted(str(v) for v in value))
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, Path):
                value = str(value)
            shown[_env_name(name)] = value
        shown["(effective key prefix)"] = self.key_prefix
        shown["(database)"] = self.database.shown if self.database is not None else None
        if self.redis is not None:
            shown["(topology)"] = self.redis.topology.value
            shown["(tls)"] = self.redis.tls is not None
        return shown


def _dotenv() -> Mapping[str, str | None]:
    path = Path(".env")
    return dotenv_values(path) if path.is_file() else {}


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` on the first bad value.

    ``overrides`` take precedence over the environment (field names, lower case); tests and
    embedding applications use them.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _to_config_error(exc) from None


def _to_config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    loc = error.get("loc", ())
    field = str(loc[0]) if loc else "settings"
    value = error.get("input")
    if field in _SECRET_FIELDS and value is not None:
        value = "***"
    elif field in _URI_FIELDS and isinstance(value, str):
        value = mask_uri(value)
    message = str(cause) if cause is not None else error.get("msg", "is invalid")
    if isinstance(cause, ValueError):
        message = str(cause)
    problem, _, accepted = message.partition("; expected ")
    if field == "session_cookie_secure":
        problem, accepted = "is not valid", "auto, true or false"
    return ConfigError(_env_name(field), value, problem, accepted)
