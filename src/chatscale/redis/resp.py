"""Commands into the bytes Redis reads (RESP), as redis-py's ``pack_commands`` writes them.

redis-py builds each command by joining its buffer again for every argument and encodes each
argument through a chain of type checks: for a script call of some fifteen arguments (a
Durable Streams append) that was a fifth of the server's CPU per request
(docs/benchmarks.md, Durable Streams). :func:`pack_commands` writes the same bytes with one
join per round trip, and hands any argument that is not ``bytes``, ``str`` or ``int`` to
redis-py's own encoder, so every value encodes (or is refused) exactly as redis-py would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def pack_commands(commands: Iterable[Sequence[Any]], encoder: Any) -> bytes:
    """``commands`` (each a command name and its arguments) as one RESP buffer.

    ``encoder`` is the connection's redis-py ``Encoder``: its ``encoding`` and
    ``encoding_errors`` encode ``str`` arguments, and its ``encode`` every argument of another
    type (``float`` as ``repr``; ``bool`` and unknown types refused with ``DataError``).
    A command name holding spaces (``"CONFIG GET"``) is split into words, as redis-py does.
    """
    parts: list[bytes] = []
    append = parts.append
    encode = encoder.encode
    encoding, errors = encoder.encoding, encoder.encoding_errors
    for command in commands:
        first = command[0]
        if isinstance(first, str):
            args: Sequence[Any] = (*first.encode().split(), *command[1:])
        elif b" " in first:
            args = (*first.split(), *command[1:])
        else:
            args = command
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
    return b"".join(parts)
