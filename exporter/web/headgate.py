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

Before its first head may be whole, a plain connection has no coroutine at all: `Doorman`
is its protocol and holds its bytes by the same rule, then hands the transport to a
`HeadGate` and its coroutine. A silent or slow connection (a connect flood, slowloris)
then costs its transport, its socket and the bytes it sent, some 3.6 KiB, not also a task
with its streams and parser (10 KiB in all, measured with 600 connections). Between
two requests the coroutine may end again, and the `HeadGate` holds the connection alone
(`HeadGate.rest`, with a `Resting` keeping its deadlines) until its next head may be whole.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

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


# A connection's coroutine: it reads through the gate (`HeadGate.read`), writes through the writer.
Connected = Callable[[asyncio.StreamWriter, "HeadGate"], Coroutine[Any, Any, None]]


class Resting(Protocol):
    """What a `HeadGate` tells about its connection while no coroutine reads it."""

    def first_byte(self) -> None:
        """The next request's first byte came: its head's deadline starts."""
        ...

    def head_ready(self) -> None:
        """Bytes that may end a head came (or the client's EOF): a coroutine should read them."""
        ...

    def lost(self) -> None:
        """The connection ended while it rested."""
        ...


class HeadGate(asyncio.StreamReaderProtocol):
    """The stream protocol of one connection, holding back bytes that cannot end a head.

    Between two requests the connection's coroutine may end (`rest`): the gate holds the
    connection alone, tells its `Resting` of the next request's first byte and of a head
    that may be whole, and `resume` starts a coroutine on the same streams."""

    def __init__(self, reader: asyncio.StreamReader, connected: Connected, bound: int) -> None:
        super().__init__(reader, self._started)
        self._connected = connected
        self._reader = reader
        self._writer: asyncio.StreamWriter | None = None
        self._bound = bound
        self._held = bytearray()
        self._tail = b""  # the last bytes received: a blank line may straddle two reads
        self._holding = True
        self._pass_next = True  # the first byte: h11 refuses some request lines at once
        self._unread = 0  # handed to the reader, not yet read through `read`
        self._resting: Resting | None = None
        self._coroutine: asyncio.Task[None] | None = None

    def _started(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Coroutine[Any, Any, None]:
        self._writer = writer
        return self._connected(writer, self)

    async def read(self, size: int) -> bytes:
        """At most `size` bytes handed on, waiting for some; b"" at the client's EOF."""
        data = await self._reader.read(size)
        self._unread -= len(data)
        return data

    def rest(self, resting: Resting) -> bool:
        """The coroutine ends here, between requests; False (it must read on) when bytes
        it has not read yet wait in the reader (a pipelined request), or the client's EOF
        (it closes now, not at the idle deadline)."""
        if self._unread or self._reader.at_eof():
            return False
        self._resting = resting
        if self._held:
            resting.first_byte()
        return True

    def resume(self) -> bool:
        """A new coroutine for the connection, on the same streams, after a rest; False
        when the connection is closing meanwhile."""
        assert self._writer is not None
        if self._writer.transport.is_closing():
            return False
        coroutine = self._connected(self._writer, self)
        self._coroutine = asyncio.get_running_loop().create_task(coroutine)  # held, as asyncio does
        return True

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
        if self._resting is not None and not self._held:
            self._resting.first_byte()
        ended = ends_head(self._tail, data)
        self._tail = last_two(self._tail, data)
        self._held += data
        if not self._holding or self._pass_next or ended or len(self._held) >= self._bound:
            self._release()

    def eof_received(self) -> bool:
        self._release()
        keep_open = bool(super().eof_received())
        self._wake()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        resting, self._resting = self._resting, None
        self._release()
        super().connection_lost(exc)
        if resting is not None:
            resting.lost()

    def _release(self) -> None:
        self._pass_next = False
        if self._held:
            data, self._held = bytes(self._held), bytearray()
            self._unread += len(data)
            super().data_received(data)
            self._wake()

    def _wake(self) -> None:
        resting, self._resting = self._resting, None
        if resting is not None:
            resting.head_ready()


class Arriving(Protocol):
    """What a `Doorman` asks of the server about its connection."""

    @property
    def at_once(self) -> bool:
        """Whether the coroutine takes the connection at once (it begins with a TLS handshake)."""
        ...

    def arrived(self, transport: asyncio.Transport) -> bool:
        """Let the connection in (or not: it is closed), and start its head's deadline."""
        ...

    def hand_over(self, transport: asyncio.Transport) -> HeadGate:
        """The connection's `HeadGate`, whose coroutine takes it from here."""
        ...

    def lost(self) -> None:
        """The connection ended before it was handed over."""
        ...


class Doorman(asyncio.Protocol):
    """A new connection's protocol until its first head may be whole."""

    __slots__ = ("_arriving", "_bound", "_held", "_tail", "_transport")

    def __init__(self, arriving: Arriving, bound: int) -> None:
        self._arriving = arriving
        self._bound = bound
        self._transport: asyncio.Transport | None = None  # let in, not handed over yet
        self._held = bytearray()
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._arriving.arrived(transport):
            transport.abort()
            return
        self._transport = transport
        if self._arriving.at_once:
            self._pass_on()

    def data_received(self, data: bytes) -> None:
        ended = ends_head(self._tail, data) or (not self._held and refused_at_once(data))
        self._tail = last_two(self._tail, data)
        self._held += data
        if ended or len(self._held) >= self._bound:
            self._pass_on()

    def eof_received(self) -> bool:
        if not self._held:
            return False  # closed without a word: the transport closes
        return self._pass_on(eof=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._arriving.lost()

    def _pass_on(self, *, eof: bool = False) -> bool:
        """Hand the transport, and what it sent, to the connection's `HeadGate`."""
        transport, self._transport = self._transport, None
        assert transport is not None
        gate = self._arriving.hand_over(transport)
        transport.set_protocol(gate)
        gate.connection_made(transport)
        if self._held:
            held, self._held = bytes(self._held), bytearray()
            gate.data_received(held)
        return gate.eof_received() if eof else False
