"""Commands into the bytes Redis reads (RESP), as redis-py's ``pack_commands`` writes them.

redis-py's asyncio connection builds each command in Python, joining its buffer again for
every argument after a chain of type checks: for a script call of some fifteen arguments (a
Durable Streams append) that was a fifth of the server's CPU per request
(docs/benchmarks.md, Durable Streams). :func:`pack_commands` packs each command with
hiredis's ``pack_command`` (C; hiredis is a dependency) when the connection encodes text as
strict UTF-8 (redis-py's default), and otherwise, or for an argument hiredis does not take
(``bytearray``, ``memoryview``, an ``int`` subclass, ``bool``, ``None``), in Python with one
join, handing every argument that is not ``bytes``, ``str`` or ``int`` to redis-py's own
encoder. Either way the bytes are redis-py's, and what redis-py refuses is refused
(tests/test_resp.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hiredis import pack_command as _hiredis_pack

#: The names redis-py's default encoding goes by.
_UTF8 = frozenset({"utf-8", "utf8", "UTF-8", "UTF8"})


def pack_commands(commands: Iterable[Sequence[Any]], encoder: Any) -> bytes:
    """``commands`` (each a command name and its arguments) as one RESP buffer.

    ``encoder`` is the connection's redis-py ``Encoder``: its ``encoding`` and
    ``encoding_errors`` encode ``str`` arguments, and its ``encode`` every argument of another
    type (``float`` as ``repr``; ``bool`` and unknown types refused with ``DataError``).
    A command name holding spaces (``"CONFIG GET"``) is split into words, as redis-py does.
    The bytes are one buffer: Redis reads it whole, and a large value is copied once.
    """
    parts: list[bytes] = []
    append = parts.append
    # hiredis encodes text as strict UTF-8: any other encoding or error handling packs in
    # Python, as redis-py would.
    strict_utf8 = encoder.encoding in _UTF8 and encoder.encoding_errors == "strict"
    fast = _hiredis_pack if strict_utf8 else None
    for command in commands:
        first = command[0]
        if isinstance(first, str):
            # redis-py splits the first argument at whitespace; a plain name stays as it is.
            args: Sequence[Any] = (
                command if first.isalnum() else (*first.encode().split(), *command[1:])
            )
        elif b" " in first:
            args = (*first.split(), *command[1:])
        else:
            args = command
        if fast is not None:
            try:
                append(fast(args if type(args) is tuple else tuple(args)))
                continue
            except TypeError:
                pass  # an argument hiredis does not take: packed below, as redis-py does
        _pack_one(args, encoder, append)
    return b"".join(parts)


def _pack_one(args: Sequence[Any], encoder: Any, append: Any) -> None:
    encode = encoder.encode
    encoding, errors = encoder.encoding, encoder.encoding_errors
    if isinstance(args[0], str):
        # Only ASCII command names matter, but redis-py encodes the first as UTF-8.
        args = (args[0].encode(), *args[1:])
    append(b"*%d\r\n" % len(args))
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            value = arg
        elif kind is str:
            value = arg.encode(encoding, errors)
        elif kind is int:
            value = b"%d" % arg
        else:
            value = encode(arg)
        append(b"$%d\r\n%b\r\n" % (len(value), value))
