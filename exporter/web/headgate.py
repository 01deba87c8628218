"""A connection's bytes held back from its parser until they may end a request head.

A slowloris client sends a header a byte at a time, on hundreds of connections: with
every byte parsed, each would cost an h11 parse (and the first, a parser) thousands of
times a second on the server's one loop thread, and the authorised scrapes would queue
behind them. `HeadGate` keeps what arrives and lets it be parsed only when it may
complete a head (a blank line came), when it reaches its bound (for h11 to refuse an
endless head), or when its first byte already tells h11 no request line starts so (a
TLS hello on the plain port). h11 still parses every byte, only in fewer, larger pieces.
"""

from __future__ import annotations

import re

BLANK_LINE = re.compile(rb"\n\r?\n")  # how h11 finds the end of a head


def ends_head(tail: bytes, data: bytes) -> bool:
    """Whether `data`, after bytes ending in `tail` (their last two), may end a head."""
    return bool(BLANK_LINE.search(tail + data[:2]) or BLANK_LINE.search(data))


def refused_at_once(head: bytes) -> bool:
    """Whether h11 refuses a head before its end: when its first byte is a control or a
    space, as a TLS hello on the plain port (its `is_next_line_obviously_invalid_request_line`)."""
    return bool(head) and head[0] < 0x21


def last_two(tail: bytes, data: bytes) -> bytes:
    return (tail + data[-2:])[-2:]


class HeadGate:
    """The bytes a connection received and its parser has not been given yet."""

    __slots__ = ("_bound", "_held", "_tail")

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._held = bytearray()
        self._tail = b""  # the last bytes received: a blank line may straddle two reads

    def __len__(self) -> int:
        return len(self._held)

    def add(self, data: bytes) -> bool:
        """Keep `data`; whether what is held should be parsed now."""
        ended = ends_head(self._tail, data) or (not self._held and refused_at_once(data))
        self._tail = last_two(self._tail, data)
        self._held += data
        return ended or len(self._held) >= self._bound

    def take(self) -> bytes:
        """Everything held, for the parser (or a lingering drain, to drop)."""
        data, self._held = bytes(self._held), bytearray()
        return data
