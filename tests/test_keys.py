"""Key and channel naming: prefix, hash tags, escaping, patterns."""

from __future__ import annotations

import fnmatch

import pytest

from chatscale.masking import mask_uri
from chatscale.redis.keys import KeySpace, escape, glob_escape, prefix_problem


def test_prefixed_keys_and_channels() -> None:
    keys = KeySpace("prod")
    assert keys.key("a", "b") == "prod::a:b"
    assert keys.channel("events") == "prod::events"
    assert keys.cache("ROLES", "admin") == "prod::ROLES:admin"


def test_no_prefix_means_bare_keys() -> None:
    keys = KeySpace("")
    assert keys.key("a") == "a"
    assert keys.cache("ROLES", "x") == "ROLES:x"
    assert keys.all_pattern == "*"


def test_tagged_keys_share_a_slot_and_escape_ids() -> None:
    keys = KeySpace("p")
    job = keys.stream_job("a{b}:c d")
    log = keys.stream_log("a{b}:c d")
    tag = job[job.index("{") + 1 : job.index("}")]
    assert tag == log[log.index("{") + 1 : log.index("}")]
    assert "{" not in tag and ":" not in tag and " " not in tag


@pytest.mark.parametrize("raw", ["x", "a:b", "{}", "*?[]\\", "é", "a b", "%41"])
def test_escape_is_injective_and_safe(raw: str) -> None:
    out = escape(raw)
    assert not set(out) & set(":{}*?[]\\ ")
    assert escape(raw + "x") != out


def test_escape_never_collides_with_the_percent_form() -> None:
    assert escape("%3A") != escape(":")


def test_patterns_escape_the_prefix() -> None:
    keys = KeySpace("a*b")
    pattern = keys.cache_pattern("ROLES")
    assert pattern == "a\\*b::ROLES:*"
    assert glob_escape("[x]") == "\\[x\\]"


def test_one_prefix_never_covers_another() -> None:
    a, ab = KeySpace("a"), KeySpace("a-b")
    assert not fnmatch.fnmatchcase(ab.key("x"), a.all_pattern.replace("\\", ""))


@pytest.mark.parametrize("bad", ["a{", "}", "a b", "a\nb", "a::b", "a:", "x" * 129])
def test_bad_prefixes_are_refused(bad: str) -> None:
    assert prefix_problem(bad) is not None
    with pytest.raises(ValueError, match="invalid key prefix"):
        KeySpace(bad)


def test_good_prefixes() -> None:
    for good in ["", "prod", "rev-42", "a:b", "team/app.v2"]:
        assert prefix_problem(good) is None


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("redis://u:pw@h:1", "redis://u:***@h:1"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://h:1", "redis://h:1"),
        ("redis://a:x@h:1,redis://b:y@h:2", "redis://a:***@h:1,redis://b:***@h:2"),
        ("redis+sentinel://u:p@h1:1,h2:2/m", "redis+sentinel://u:***@h1:1,h2:2/m"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


@pytest.mark.parametrize("job_id", ["j1", "a b:{c}*", "é/ü"])
def test_a_jobs_channel_is_its_hash_name_with_ev_for_job(job_id: str) -> None:
    # streams/lua/append.lua derives the channel it publishes on from the job's hash key.
    for keys in (KeySpace(), KeySpace("app")):
        assert keys.stream_events(job_id) == keys.stream_job(job_id)[: -len("job")] + "ev"
