"""chatscale.redis.resp: the bytes of a command are exactly redis-py's, for every kind of
argument redis-py takes, and what it refuses is refused alike. A round trip through a real
Redis (tests/test_line.py) shows the server reads them."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from chatscale.redis.resp import pack_commands


def _redis_py(commands: list[tuple[Any, ...]], connection: Connection | None = None) -> bytes:
    return b"".join((connection or Connection()).pack_commands(commands))


CASES: list[tuple[Any, ...]] = [
    ("PING",),
    ("SET", "key", "value"),
    ("EVALSHA", "a" * 40, 2, b"k1", "k2", 1.5, -7, 2**70, "", b"", "näive ✓"),
    ("CONFIG GET", "maxmemory"),  # words of a command name go separately
    ("CLIENT\tLIST",),
    (b"CLIENT LIST",),
    ("SET", "big", b"x" * 100_000),  # past redis-py's buffer cutoff
    ("SET", "views", bytearray(b"ab"), memoryview(b"cd")),
    ("INCRBYFLOAT", "f", 1e-300, float("inf"), -0.0, math.pi),
]


@pytest.mark.parametrize("command", CASES, ids=[str(c[0]) for c in CASES])
def test_a_command_packs_as_redis_py_packs_it(command: tuple[Any, ...]) -> None:
    assert pack_commands([command], Connection().encoder) == _redis_py([command])


def test_several_commands_pack_into_one_buffer() -> None:
    assert pack_commands(CASES, Connection().encoder) == _redis_py(CASES)


def test_arguments_hiredis_does_not_take_pack_as_redis_py_packs_them() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    command = ("SET", "k", Level.HIGH, bytearray(b"ab"), memoryview(b"cd"))
    assert pack_commands([command], Connection().encoder) == _redis_py([command])


def test_text_hiredis_cannot_encode_packs_with_the_connections_error_handling() -> None:
    # A lone surrogate: strict UTF-8 refuses it; a connection that replaces sends "?".
    connection = Connection(encoding_errors="replace")
    command = ("SET", "k", "a\udc80b")
    assert pack_commands([command], connection.encoder) == _redis_py([command], connection)
    with pytest.raises(UnicodeEncodeError):
        pack_commands([command], Connection().encoder)


def test_the_connections_encoding_applies_to_text() -> None:
    connection = Connection(encoding="latin-1")
    command = ("SET", "k", "café")
    assert pack_commands([command], connection.encoder) == _redis_py([command], connection)
    assert b"caf\xe9" in pack_commands([command], connection.encoder)


@pytest.mark.parametrize("bad", [True, None, object(), ["list"]])
def test_what_redis_py_refuses_is_refused(bad: Any) -> None:
    with pytest.raises(DataError):
        _redis_py([("SET", "k", bad)])
    with pytest.raises(DataError):
        pack_commands([("SET", "k", bad)], Connection().encoder)


_ARGS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(),
    st.floats(),
)
_ENCODINGS = st.sampled_from(["utf-8", "latin-1"])  # hiredis's path, and the Python one


@given(
    st.lists(st.lists(_ARGS, max_size=8), min_size=1, max_size=4), st.text(max_size=12), _ENCODINGS
)
def test_any_arguments_pack_as_redis_py_packs_them(
    argument_lists: list[list[Any]], name: str, encoding: str
) -> None:
    connection = Connection(encoding=encoding, encoding_errors="replace")
    commands = [(name or "EVALSHA", *args) for args in argument_lists]
    try:
        expected = _redis_py(commands, connection)
    except (DataError, UnicodeEncodeError, IndexError) as exc:
        with pytest.raises(type(exc)):
            pack_commands(commands, connection.encoder)
        return
    assert pack_commands(commands, connection.encoder) == expected
