"""Every configuration rule: its happy path and its error."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatscale.cache import CacheKeys
from chatscale.config import Settings, load_settings
from chatscale.errors import ConfigError
from chatscale.redis.uri import Topology

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of the developer's shell or .env file leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.upper() in {f.upper() for f in Settings.model_fields} or name == "K_REVISION":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def error(monkeypatch: pytest.MonkeyPatch, **values: str) -> ConfigError:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return info.value


def test_defaults_need_nothing() -> None:
    settings = load_settings()
    assert settings.use_redis is False
    assert settings.redis is None
    assert settings.use_redis_streams is False
    assert settings.forced_in_memory_cache_namespaces == {
        CacheKeys.CONFIG_STORE,
        CacheKeys.APP_CONFIG,
    }
    assert settings.redis_ping_interval == 0
    assert settings.redis_max_listeners == 40
    assert settings.redis_retry_max_attempts == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_use_redis_accepts_booleans(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: bool
) -> None:
    settings = env(monkeypatch, USE_REDIS=text, REDIS_URI="redis://127.0.0.1:6390")
    assert settings.use_redis is expected
    assert (settings.redis is not None) is expected


@pytest.mark.parametrize("text", ["maybe", "2", "tru", "y e s"])
def test_use_redis_rejects_other_text(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    exc = error(monkeypatch, USE_REDIS=text)
    assert exc.variable == "USE_REDIS"
    assert text in str(exc) and "true/false" in str(exc)


def test_use_redis_without_uri_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="true")
    assert exc.variable == "REDIS_URI"
    assert "USE_REDIS=true" in str(exc)


def test_single_uri_is_standalone(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, USE_REDIS="true", REDIS_URI="redis://:pw@127.0.0.1:6390/3")
    assert s.redis is not None
    assert s.redis.topology is Topology.STANDALONE
    assert s.redis.target.db == 3
    assert s.redis.target.password == "pw"
    assert s.redis.tls is None


def test_several_uris_mean_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        USE_REDIS="true",
        REDIS_URI="redis://127.0.0.1:7000, redis://127.0.0.1:7001,redis://[::1]:7002",
    )
    assert s.redis is not None
    assert s.redis.topology is Topology.CLUSTER
    assert [str(n) for n in s.redis.target.nodes] == [
        "127.0.0.1:7000",
        "127.0.0.1:7001",
        "[::1]:7002",
    ]


def test_use_redis_cluster_with_one_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, USE_REDIS="true", USE_REDIS_CLUSTER="true", REDIS_URI="redis://h:7000")
    assert s.redis is not None and s.redis.topology is Topology.CLUSTER


def test_cluster_rejects_a_database_number(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="redis://a:1/2,redis://b:2")
    assert exc.variable == "REDIS_URI" and "database 0" in str(exc)


def test_rediss_means_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, USE_REDIS="1", REDIS_URI="rediss://h:6380")
    assert s.redis is not None and s.redis.tls is not None


def test_mixed_schemes_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="redis://a:1,rediss://b:2")
    assert "mixes" in str(exc)


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("http://h:1", "unsupported scheme 'http'"),
        ("h:6379", "no scheme"),
        ("redis://:secretpw@h:notaport", "invalid port"),
        ("redis://h:70000", "invalid port"),
        ("redis://:secretpw@/0", "no valid host"),
        ("redis://h:1/x", "invalid database number"),
        ("redis://h:\u00b9", "invalid port"),
        ("redis://h:\u0663", "invalid port"),
        ("redis://h:1/\u00b9", "invalid database number"),
        ("redis://h:1,,redis://h:2", "entry 2 of the comma-separated list is empty"),
        ("redis://h:1?ssl=true", "query strings"),
        ("redis://h:1,redis://h:1", "same host:port twice"),
        ("redis://a:1,redis+sentinel://b:2/m", "whole value"),
        ("redis+sentinel://h:26379", "no master service"),
        ("redis+sentinel://h:26379/bad name", "invalid Sentinel service name"),
    ],
)
def test_malformed_uris_name_the_entry_and_mask_passwords(
    monkeypatch: pytest.MonkeyPatch, uri: str, fragment: str
) -> None:
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI=uri)
    assert exc.variable == "REDIS_URI"
    assert fragment in str(exc)
    assert "secretpw" not in str(exc)


def test_sentinel_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        USE_REDIS="1",
        REDIS_URI="redis+sentinel://u:p%40ss@127.0.0.1:26379,127.0.0.1:26380/mymaster/2",
    )
    assert s.redis is not None
    target = s.redis.target
    assert target.topology is Topology.SENTINEL
    assert target.service_name == "mymaster"
    assert target.db == 2
    assert (target.username, target.password) == ("u", "p@ss")
    assert len(target.nodes) == 2
    assert s.redis.sentinel_password == "p@ss"


def test_sentinel_with_cluster_flag_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="1", USE_REDIS_CLUSTER="1", REDIS_URI="redis+sentinel://h/m")
    assert exc.variable == "USE_REDIS_CLUSTER"


def test_credentials_variables_override_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        USE_REDIS="1",
        REDIS_URI="redis://old:oldpw@h:1,redis://old:oldpw@h:2",
        REDIS_USERNAME="new",
        REDIS_PASSWORD="newpw",
    )
    assert s.redis is not None
    assert (s.redis.target.username, s.redis.target.password) == ("new", "newpw")
    # Sentinels share the node credentials unless REDIS_SENTINEL_* say otherwise.
    assert s.redis.sentinel_password == "newpw"


def test_sentinel_credentials_can_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        USE_REDIS="1",
        REDIS_URI="redis+sentinel://:nodepw@h/m",
        REDIS_SENTINEL_PASSWORD="sentinelpw",
    )
    assert s.redis is not None
    assert s.redis.target.password == "nodepw"
    assert s.redis.sentinel_password == "sentinelpw"


def test_username_without_password_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="redis://h:1", REDIS_USERNAME="u")
    assert exc.variable == "REDIS_USERNAME"


def test_uri_credentials_differing_between_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="redis://a:x@h:1,redis://b:y@h:2")
    assert "different credentials" in str(exc)
    assert ":x@" not in str(exc) and ":y@" not in str(exc)


def test_ca_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    s = env(monkeypatch, USE_REDIS="1", REDIS_URI="rediss://h:1", REDIS_CA=str(ca))
    assert s.redis is not None and s.redis.tls is not None
    assert s.redis.tls.ca_file == ca


def test_missing_ca_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exc = error(
        monkeypatch, USE_REDIS="1", REDIS_URI="rediss://h:1", REDIS_CA=str(tmp_path / "no.pem")
    )
    assert exc.variable == "REDIS_CA" and "no such file" in str(exc)


def test_unreadable_or_non_pem_ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="rediss://h:1", REDIS_CA=str(bad))
    assert exc.variable == "REDIS_CA" and "PEM" in str(exc)


def test_ca_with_plain_redis_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="redis://h:1", REDIS_CA=str(ca))
    assert exc.variable == "REDIS_CA" and "rediss://" in str(exc)


def test_mutual_tls_needs_both_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text(PEM)
    ok = env(
        monkeypatch,
        USE_REDIS="1",
        REDIS_URI="rediss://h:1",
        REDIS_TLS_CERT=str(cert),
        REDIS_TLS_KEY=str(cert),
    )
    assert ok.redis is not None and ok.redis.tls is not None
    assert ok.redis.tls.cert_file == cert
    monkeypatch.delenv("REDIS_TLS_KEY")
    exc = error(monkeypatch)
    assert exc.variable == "REDIS_TLS_KEY"


def test_key_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, USE_REDIS="1", REDIS_URI="redis://h:1", REDIS_KEY_PREFIX="prod")
    assert s.key_prefix == "prod"
    assert s.redis is not None and s.redis.prefix == "prod"


def test_key_prefix_var(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, REDIS_KEY_PREFIX_VAR="K_REVISION", K_REVISION="rev-42")
    assert s.key_prefix == "rev-42"


def test_key_prefix_var_from_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REDIS_KEY_PREFIX_VAR=K_REVISION\nK_REVISION=blue\n")
    assert load_settings().key_prefix == "blue"


def test_both_prefix_variables_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, REDIS_KEY_PREFIX="a", REDIS_KEY_PREFIX_VAR="K_REVISION")
    assert exc.variable == "REDIS_KEY_PREFIX_VAR" and "together" in str(exc)


def test_prefix_var_naming_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, REDIS_KEY_PREFIX_VAR="K_REVISION")
    assert exc.variable == "REDIS_KEY_PREFIX_VAR" and "K_REVISION" in str(exc)


@pytest.mark.parametrize("prefix", ["a{b", "a}b", "a b", "a\tb", "a\x01b", "a::b", "ab:"])
def test_bad_prefixes(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    exc = error(monkeypatch, REDIS_KEY_PREFIX=prefix)
    assert exc.variable == "REDIS_KEY_PREFIX"


def test_bad_prefix_through_var_names_the_var(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, REDIS_KEY_PREFIX_VAR="K_REVISION", K_REVISION="x{y}")
    assert "K_REVISION" in exc.variable


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("REDIS_MAX_CONNECTIONS", "10", "0"),
        ("REDIS_MAX_LISTENERS", "100", "-1"),
        ("REDIS_PING_INTERVAL", "300", "abc"),
        ("REDIS_CONNECT_TIMEOUT", "2000", "1.5"),
        ("REDIS_RETRY_MAX_DELAY", "1000", ""),
        ("REDIS_RETRY_MAX_ATTEMPTS", "0", "ten"),
        ("REDIS_SCAN_COUNT", "500", "0"),
        ("REDIS_DELETE_CHUNK_SIZE", "100", "99999999"),
        ("REDIS_POOL_TIMEOUT", "100", "0"),
        ("REDIS_SOCKET_TIMEOUT", "1000", "5"),
        ("STREAM_LEASE_TTL", "5000", "10"),
        ("DEMO_TOKENS_PER_SECOND", "12.5", "fast"),
        ("PORT", "8080", "65536"),
        ("OPENAI_TIMEOUT", "2.5", "0"),
        ("OPENAI_MAX_RETRIES", "3", "-1"),
    ],
)
def test_numbers_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, good: str, bad: str
) -> None:
    settings = env(monkeypatch, **{name: good})
    assert str(getattr(settings, name.lower())).rstrip("0").rstrip(".") == good.rstrip("0").rstrip(
        "."
    )
    exc = error(monkeypatch, **{name: bad})
    assert exc.variable == name
    assert "expected" in str(exc)


def test_ping_interval_zero_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, USE_REDIS="1", REDIS_URI="redis://h:1", REDIS_PING_INTERVAL="0")
    assert s.redis is not None and s.redis.ping_interval_s == 0


def test_forced_in_memory_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, FORCED_IN_MEMORY_CACHE_NAMESPACES="ROLES, GEN_TITLE")
    assert s.forced_in_memory_cache_namespaces == {CacheKeys.ROLES, CacheKeys.GEN_TITLE}


def test_forced_in_memory_empty_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, FORCED_IN_MEMORY_CACHE_NAMESPACES="")
    assert s.forced_in_memory_cache_namespaces == frozenset()


def test_forced_in_memory_unknown_name_lists_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, FORCED_IN_MEMORY_CACHE_NAMESPACES="ROLES,NOPE")
    assert exc.variable == "FORCED_IN_MEMORY_CACHE_NAMESPACES"
    assert "NOPE" in str(exc) and "CONFIG_STORE" in str(exc)


def test_use_redis_streams_follows_use_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, USE_REDIS="1", REDIS_URI="redis://h:1")
    assert s.use_redis_streams is True
    s = env(monkeypatch, USE_REDIS_STREAMS="false")
    assert s.use_redis_streams is False


def test_use_redis_streams_without_redis_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USE_REDIS", raising=False)
    exc = error(monkeypatch, USE_REDIS_STREAMS="true")
    assert exc.variable == "USE_REDIS_STREAMS"


def test_alternative_dns_lookup_only_for_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        USE_REDIS="1",
        REDIS_URI="rediss://a:1,rediss://b:2",
        REDIS_USE_ALTERNATIVE_DNS_LOOKUP="true",
    )
    assert s.redis is not None and s.redis.alternative_dns_lookup
    exc = error(monkeypatch, REDIS_URI="rediss://a:1")
    assert exc.variable == "REDIS_USE_ALTERNATIVE_DNS_LOOKUP"


def test_secrets_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        USE_REDIS="1",
        REDIS_URI="redis://u:uripw@h:1",
        REDIS_PASSWORD="varpw",
        SESSION_SECRET="s3cr3tsession",
        OPENAI_API_KEY="sk-x",
    )
    shown = repr(s.describe())
    for secret in ("uripw", "varpw", "s3cr3tsession", "sk-x"):
        assert secret not in shown
    assert repr(s.redis).count("varpw") == 0


def test_secret_values_masked_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="1", REDIS_URI="redis://u:topsecret@h:1/zz")
    assert "topsecret" not in str(exc)


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REDIS_SCAN_COUNT=77\n")
    assert load_settings().redis_scan_count == 77


def test_session_cookie_secure(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env(monkeypatch, SESSION_COOKIE_SECURE="true").session_cookie_secure == "true"
    exc = error(monkeypatch, SESSION_COOKIE_SECURE="sometimes")
    assert exc.variable == "SESSION_COOKIE_SECURE"


@pytest.mark.parametrize("text", ["30/minute", "10 per 2 minutes; 500/day", " 5/second "])
def test_chat_rate_limit_accepts_limits_notation(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    assert env(monkeypatch, CHAT_RATE_LIMIT=text).chat_rate_limit == text.strip()


@pytest.mark.parametrize("text", ["thirty a minute", "", "30/minute;", "0/minute", "30/fortnight"])
def test_chat_rate_limit_rejects_anything_else(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    problem = error(monkeypatch, CHAT_RATE_LIMIT=text)
    assert problem.variable == "CHAT_RATE_LIMIT"
    assert "30/minute" in str(problem)


def test_delta_window_is_the_backends_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatscale.streams.memory import MemoryStreamManager
    from chatscale.streams.redis import RedisStreamManager

    assert env(monkeypatch).stream_delta_coalesce_ms is None
    assert env(monkeypatch, STREAM_DELTA_COALESCE_MS=" ").stream_delta_coalesce_ms is None
    assert env(monkeypatch, STREAM_DELTA_COALESCE_MS="0").stream_delta_coalesce_ms == 0
    assert MemoryStreamManager.default_coalesce_ms == 0
    assert RedisStreamManager.default_coalesce_ms == 1
    assert MemoryStreamManager(env(monkeypatch)).coalesce_s == 0
    set_ = env(monkeypatch, STREAM_DELTA_COALESCE_MS="5")
    assert MemoryStreamManager(set_).coalesce_s == 0.005
    problem = error(monkeypatch, STREAM_DELTA_COALESCE_MS="1001")
    assert problem.variable == "STREAM_DELTA_COALESCE_MS"
    assert "milliseconds from 0 to 1000" in str(problem)


def test_durable_write_rate_limit_is_off_when_empty_and_checked_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert env(monkeypatch).durable_streams_write_rate_limit == ""
    assert (
        env(monkeypatch, DURABLE_STREAMS_WRITE_RATE_LIMIT="  ").durable_streams_write_rate_limit
        == ""
    )
    settings = env(monkeypatch, DURABLE_STREAMS_WRITE_RATE_LIMIT="100/second; 5000/minute")
    assert settings.durable_streams_write_rate_limit == "100/second; 5000/minute"
    problem = error(monkeypatch, DURABLE_STREAMS_WRITE_RATE_LIMIT="lots")
    assert problem.variable == "DURABLE_STREAMS_WRITE_RATE_LIMIT"
    assert "30/minute" in str(problem)


def test_session_secret_previous_is_read_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env(monkeypatch, SESSION_SECRET="n" * 40, SESSION_SECRET_PREVIOUS="o" * 40)
    assert settings.session_secret_previous is not None
    assert settings.session_secret_previous.get_secret_value() == "o" * 40
    assert settings.describe()["SESSION_SECRET_PREVIOUS"] == "***"
    assert "o" * 40 not in repr(settings)


def test_http_edge_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert defaults.max_request_body_bytes == 65_536
    assert defaults.request_body_timeout == 30
    assert defaults.max_request_header_bytes == 32_768
    assert defaults.request_header_timeout == 10
    assert defaults.http_keep_alive_timeout == 75
    s = env(
        monkeypatch,
        MAX_REQUEST_BODY_BYTES="1_000",
        REQUEST_BODY_TIMEOUT="5",
        MAX_REQUEST_HEADER_BYTES="8192",
        REQUEST_HEADER_TIMEOUT="3",
        HTTP_KEEP_ALIVE_TIMEOUT="120",
    )
    assert (s.max_request_body_bytes, s.request_body_timeout) == (1_000, 5)
    assert (s.max_request_header_bytes, s.request_header_timeout) == (8192, 3)
    assert s.http_keep_alive_timeout == 120


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("MAX_REQUEST_BODY_BYTES", "-1", "out of range"),
        ("MAX_REQUEST_BODY_BYTES", "1MB", "not a whole number"),
        ("REQUEST_BODY_TIMEOUT", "0", "out of range"),
        ("MAX_REQUEST_HEADER_BYTES", "100", "out of range"),
        ("REQUEST_HEADER_TIMEOUT", "soon", "not a whole number"),
        ("HTTP_KEEP_ALIVE_TIMEOUT", "0", "out of range"),
        ("GC_THRESHOLD", "-1", "out of range"),
        ("GC_THRESHOLD", "lots", "not a whole number"),
        ("GC_THRESHOLD", "\u00b9", "not a whole number"),
        ("GC_THRESHOLD", "-\u0663", "not a whole number"),
        ("GC_THRESHOLD", "9" * 5000, "not a whole number"),
        ("GC_THRESHOLD", "9" * 30, "out of range"),
    ],
)
def test_http_edge_limit_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    exc = error(monkeypatch, **{variable: value})
    assert exc.variable == variable
    assert fragment in str(exc)
    assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("redis://u:pa/ss-X@h/6", "'/'"),
        ("redis://u:p@ss-X@h/6", "'@'"),
        ("redis://u:p@ss-X@h1:1,redis://u:p@ss-X@h2:2", "'@'"),
        ("redis+sentinel://u:pa/ss-X@h1:26379/mymaster", "'/'"),
        ("redis://u:pa?ss-X@h/6", "'?'"),
    ],
)
def test_reserved_characters_in_the_password_are_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, uri: str, named: str
) -> None:
    exc = error(monkeypatch, USE_REDIS="true", REDIS_URI=uri)
    message = str(exc)
    assert exc.variable == "REDIS_URI"
    assert "percent-encode" in message and named in message
    assert "ss-X" not in message and "u:pa" not in message and "u:p@" not in message


def test_a_uri_without_scheme_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = error(monkeypatch, USE_REDIS="true", REDIS_URI="u:hunter2@redis.internal:6379")
    assert "no scheme" in str(exc) and "redis.internal:6379" in str(exc)
    assert "hunter2" not in str(exc)


def test_openai_base_url_credentials_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = env(monkeypatch, OPENAI_BASE_URL="https://user:sk-live-123@llm.internal/v1").describe()
    assert shown["OPENAI_BASE_URL"] == "https://user:***@llm.internal/v1"


def test_the_settings_repr_shows_no_uri_password(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env(
        monkeypatch,
        USE_REDIS="true",
        REDIS_URI="redis://u:hunter2@127.0.0.1:6379",
        OPENAI_BASE_URL="http://k:hunter3@127.0.0.1:1/v1",
    )
    assert "hunter" not in repr(settings) and "hunter" not in str(settings)


def test_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.log_level, defaults.log_format, defaults.access_log) == ("INFO", "text", False)
    s = env(monkeypatch, LOG_LEVEL="debug", LOG_FORMAT="JSON", ACCESS_LOG="on")
    assert (s.log_level, s.log_format, s.access_log) == ("DEBUG", "json", True)
    for name, bad, accepted in (
        ("LOG_LEVEL", "verbose", "DEBUG, INFO, WARNING, ERROR"),
        ("LOG_FORMAT", "xml", "text, json"),
    ):
        exc = error(monkeypatch, **{name: bad})
        assert exc.variable == name and accepted in str(exc) and "\n" not in str(exc)
        monkeypatch.delenv(name)


def test_openai_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().openai_http_client == "aiohttp"
    assert env(monkeypatch, OPENAI_HTTP_CLIENT=" HTTPX ").openai_http_client == "httpx"
    exc = error(monkeypatch, OPENAI_HTTP_CLIENT="requests")
    assert exc.variable == "OPENAI_HTTP_CLIENT" and "aiohttp, httpx" in str(exc)


# --- DATABASE_URL (docs/configuration.md#database) ------------------------------------


def test_default_database_is_a_sqlite_file_in_the_working_directory() -> None:
    settings = load_settings()
    assert settings.database is not None
    assert settings.database.dialect == "sqlite"
    assert settings.database.url == "sqlite+aiosqlite:///chatscale.db"
    assert settings.database.path == Path("chatscale.db")
    assert settings.database_migrate is True


def test_use_redis_without_database_url_keeps_conversations_on_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert env(monkeypatch, USE_REDIS="true", REDIS_URI="redis://h:6379").database is None


@pytest.mark.parametrize(
    ("url", "dialect", "driver_url"),
    [
        ("sqlite:///data/chat.db", "sqlite", "sqlite+aiosqlite:///data/chat.db"),
        ("sqlite+aiosqlite:////var/lib/chat.db", "sqlite", "sqlite+aiosqlite:////var/lib/chat.db"),
        ("sqlite://", "sqlite", "sqlite+aiosqlite://"),
        ("postgres://u:p@db:5432/chat", "postgresql", "postgresql+asyncpg://u:p@db:5432/chat"),
        ("postgresql://u:p@db/chat", "postgresql", "postgresql+asyncpg://u:p@db/chat"),
        ("postgresql+asyncpg://db/chat?ssl=require", "postgresql", None),
        (
            "postgresql:///chat?host=/run/postgresql",
            "postgresql",
            "postgresql+asyncpg:///chat?host=/run/postgresql",
        ),
    ],
)
def test_database_url_accepted_forms(
    monkeypatch: pytest.MonkeyPatch, url: str, dialect: str, driver_url: str | None
) -> None:
    settings = env(monkeypatch, DATABASE_URL=url, USE_REDIS="true", REDIS_URI="redis://h")
    assert settings.database is not None  # DATABASE_URL wins over Redis for conversations
    assert settings.database.dialect == dialect
    assert settings.database.url == (driver_url or url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u:pw@h/db", "unsupported scheme 'mysql'"),
        ("chat.db", "is not a database URL"),
        ("sqlite://host/chat.db", "a SQLite URL has no host"),
        ("postgresql://u:pw@h", "names no database"),
        ("postgresql://u:pw@/db", "has no host"),
        ("postgresql://u:pw@h:99999/db", "is not a valid URL"),
        ("postgresql://u:pw@h:0/db", "has port 0"),
    ],
)
def test_bad_database_url_is_named_with_its_password_masked(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    err = error(monkeypatch, DATABASE_URL=url)
    assert err.variable == "DATABASE_URL"
    assert problem in str(err)
    assert "pw" not in str(err).replace("postgresql+asyncpg", "")
    assert "postgresql+asyncpg://user:password@host:5432/database" in str(err)


def test_database_url_pointing_at_a_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    err = error(monkeypatch, DATABASE_URL=f"sqlite:///{tmp_path}")
    assert "names a directory" in str(err)


def test_database_url_is_masked_when_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = env(monkeypatch, DATABASE_URL="postgres://chat:s3cret@db/chat").describe()
    assert shown["DATABASE_URL"] == "postgres://chat:***@db/chat"
    assert shown["(database)"] == "postgresql+asyncpg://chat:***@db/chat"
    assert "s3cret" not in repr(shown)


def test_conversations_forced_in_memory_use_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env(
        monkeypatch,
        FORCED_IN_MEMORY_CACHE_NAMESPACES="CONVERSATIONS",
        DATABASE_URL="postgres://h/db",
    )
    assert settings.database is None
    # Still validated: a typo does not wait for the day the namespace is not forced.
    err = error(monkeypatch, DATABASE_URL="nonsense")
    assert err.variable == "DATABASE_URL"


def test_database_migrate_is_a_strict_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env(monkeypatch, DATABASE_MIGRATE="false").database_migrate is False
    err = error(monkeypatch, DATABASE_MIGRATE="maybe")
    assert err.variable == "DATABASE_MIGRATE"
