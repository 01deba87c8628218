"""A connection's bytes held back from its coroutine until they may end a request head.

A slowloris client sends a header a byte at a time, on hundreds of connections: with
every byte handed on, each would wake its connection's coroutine (a task step, an h11
parse) thousands of times a second on the server's one loop thread, and the authorised
scrapes would queue behind them. `HeadGate` is the connection's asyncio protocol: it
keeps what arrives and hands it to the `StreamReader` only when it may complete a head
(a blank line came), when it reaches `MAX_HEADER_BYTES` (for h11 to refuse it), at the
client's EOF, or when the coroutine asks for the next bytes whatever they are (the first
byte of a head starts its deadline; a lingering drain reads all). h11 still parses every
byte, only in fewer, larger pieces; every deadline stays with the coroutine.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from typing import Any

BLANK_LINE = re.compile(rb"\n\r?\n")  # how h11 finds the end of a head

Connected = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, "HeadGate"], Coroutine[Any, Any, None]
]


class HeadGate(asyncio.StreamReaderProtocol):
    """The stream protocol of one connection, holding back bytes that cannot end a head."""

    def __init__(self, reader: asyncio.StreamReader, connected: Connected, bound: int) -> None:
        super().__init__(reader, lambda r, w: connected(r, w, self))
        self._bound = bound
        self._held = bytearray()
        self._tail = b""  # the last bytes received: a blank line may straddle two reads
        self._holding = True
        self._pass_next = True  # the first byte: h11 refuses some request lines at once

    def pass_next(self) -> None:
        """Hand on the next bytes as they come (or those held now): a head starts."""
        if self._held:
            self._release()
        else:
            self._pass_next = True

    def pass_all(self) -> None:
        """Hand on every byte from now on (a lingering drain)."""
        self._holding = False
        self._release()

    def data_received(self, data: bytes) -> None:
        ends_head = BLANK_LINE.search(self._tail + data[:2]) or BLANK_LINE.search(data)
        self._tail = data[-2:] if len(data) >= 2 else (self._tail + data)[-2:]
        self._held += data
        if not self._holding or self._pass_next or ends_head or len(self._held) >= self._bound:
            self._release()

    def eof_received(self) -> bool:
        self._release()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        self._pass_next = False
        if self._held:
            data, self._held = bytes(self._held), bytearray()
            super().data_received(data)
