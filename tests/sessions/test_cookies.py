"""Session ids and their signed cookie form."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from chatscale.sessions.cookies import (
    clear_cookie_header,
    derive_key,
    hash_id,
    new_session_id,
    read_cookie_values,
    set_cookie_header,
    sign,
    unsign,
)

KEY = derive_key(b"k" * 40)


def test_ids_are_256_random_bits_and_unique() -> None:
    ids = {new_session_id() for _ in range(1_000)}
    assert len(ids) == 1_000
    for value in list(ids)[:20]:
        assert len(base64.urlsafe_b64decode(value + "=")) == 32


def test_round_trip() -> None:
    session_id = new_session_id()
    assert unsign(sign(session_id, KEY), KEY) == session_id


def test_another_key_rejects() -> None:
    session_id = new_session_id()
    assert unsign(sign(session_id, KEY), derive_key(b"x" * 40)) is None


def test_the_hash_is_not_the_id_and_is_stable() -> None:
    session_id = new_session_id()
    assert hash_id(session_id) == hash_id(session_id)
    assert session_id not in hash_id(session_id)
    assert len(hash_id(session_id)) == 64


@given(st.integers(min_value=0, max_value=86), st.characters(codec="ascii"))
def test_any_changed_character_is_rejected(position: int, replacement: str) -> None:
    value = sign("A" * 42 + "Q", KEY)  # a fixed, valid, canonical id
    assert unsign(value, KEY) is not None
    changed = value[:position] + replacement + value[position + 1 :]
    if changed != value:
        assert unsign(changed, KEY) is None


@given(st.text(max_size=200))
def test_garbage_never_raises(value: str) -> None:
    assert unsign(value, KEY) is None


def test_non_canonical_base64_is_rejected() -> None:
    # "Q" and "R" decode to the same final byte bits in the last 43rd character position.
    session_id = "A" * 42 + "Q"
    value = sign(session_id, KEY)
    other = "A" * 42 + "R" + value[43:]
    assert unsign(other, KEY) is None


def test_read_cookie_values_finds_every_copy() -> None:
    headers = [(b"cookie", b"a=1; s=one; b=2"), (b"Cookie", b's="two"'), (b"host", b"x")]
    assert read_cookie_values(headers, "s") == ["one", "two"]
    assert read_cookie_values(headers, "missing") == []


def test_cookie_attributes() -> None:
    name, value = set_cookie_header("s", "v", max_age=60, secure=True)
    assert name == b"set-cookie"
    assert value == b"s=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
    assert b"Secure" not in set_cookie_header("s", "v", max_age=60, secure=False)[1]
    cleared = clear_cookie_header("s", secure=False)[1]
    assert cleared.startswith(b"s=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970")


def _signature_variants(value: str) -> list[str]:
    """Other texts that decode to the same signature bytes: the 2 unused bits of the last
    character, and the standard alphabet's ``+``/``/`` for ``-``/``_``."""
    head, signature = value[:44], value[44:]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    variants = [
        head + signature[:-1] + alphabet[(last & ~3) | low]
        for low in range(4)
        if (last & ~3) | low != last
    ]
    swapped = signature.replace("-", "+").replace("_", "/")
    if swapped != signature:
        variants.append(head + swapped)
    return variants


def test_only_the_canonical_signature_is_accepted() -> None:
    # Pick a session whose signature has a "-" or "_" so the alphabet swap is tried too.
    value = next(
        v for v in (sign(new_session_id(), KEY) for _ in range(200)) if {"-", "_"} & set(v[44:])
    )
    assert unsign(value, KEY) is not None
    variants = _signature_variants(value)
    assert len(variants) == 4  # three for the unused bits, one for the alphabet swap
    for variant in variants:
        assert base64.urlsafe_b64decode(variant[44:] + "=") == base64.urlsafe_b64decode(
            value[44:] + "="
        )  # the same bytes, another text
        assert unsign(variant, KEY) is None, variant


def test_only_the_canonical_id_is_accepted() -> None:
    session_id = next(i for i in (new_session_id() for _ in range(200)) if "-" in i or "_" in i)
    value = sign(session_id, KEY)
    swapped = session_id.replace("-", "+").replace("_", "/")
    assert unsign(swapped + value[43:], KEY) is None
