"""The head gate: a connection's coroutine sees its client's bytes only when they may
end a request head, so a header sent a byte at a time does not wake it for each byte;
between requests the gate may hold the connection alone (it rests); and the doorman:
before its first head may be whole, a connection has no coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from exporter.web.headgate import Doorman, HeadGate

BOUND = 64


async def idle(writer: asyncio.StreamWriter, gate: HeadGate) -> None:
    pass


class Recorder(asyncio.StreamReader):
    """A reader that keeps what it was fed, to be taken out by `handed_on`."""

    def __init__(self) -> None:
        super().__init__()
        self.fed = bytearray()
        self.ended = False

    def feed_data(self, data: bytes) -> None:
        self.fed += data
        super().feed_data(data)

    def feed_eof(self) -> None:
        self.ended = True
        super().feed_eof()


def gated(test: Callable[[HeadGate, Recorder], None]) -> None:
    """Run `test` on a gate whose reader is fed only through it, on a loop of its own."""

    async def run() -> None:
        reader = Recorder()
        test(HeadGate(reader, idle, BOUND), reader)

    asyncio.run(run())


def handed_on(reader: Recorder) -> bytes:
    """What the gate gave the reader since last asked."""
    data = bytes(reader.fed)
    reader.fed.clear()
    return data


def byte_by_byte(gate: HeadGate, data: bytes) -> None:
    for index in range(len(data)):
        gate.data_received(data[index : index + 1])


def test_a_head_sent_byte_by_byte_is_handed_on_once_it_is_whole() -> None:
    def test(gate: HeadGate, reader: Recorder) -> None:
        byte_by_byte(gate, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa")
        assert handed_on(reader) == b"G"  # the first byte: h11 may refuse it at once
        byte_by_byte(gate, b"aa\r\n")
        assert handed_on(reader) == b""
        gate.data_received(b"\r")
        gate.data_received(b"\nGET")  # a blank line split across two reads
        assert handed_on(reader).endswith(b"aaaa\r\n\r\nGET")

    gated(test)


def test_bytes_are_handed_on_at_the_bound_at_eof_and_when_asked() -> None:
    def test(gate: HeadGate, reader: Recorder) -> None:
        gate.data_received(b"G")
        handed_on(reader)
        byte_by_byte(gate, b"x" * (BOUND - 1))
        assert handed_on(reader) == b""
        gate.data_received(b"x")
        assert handed_on(reader) == b"x" * BOUND  # for h11 to answer 431
        gate.data_received(b"held")
        gate.pass_next()
        assert handed_on(reader) == b"held"
        gate.pass_next()
        gate.data_received(b"next")
        gate.data_received(b"held")
        assert handed_on(reader) == b"next"
        gate.eof_received()
        assert handed_on(reader) == b"held"
        assert reader.ended

    gated(test)


def test_a_lingering_drain_gets_every_byte_as_it_comes() -> None:
    def test(gate: HeadGate, reader: Recorder) -> None:
        gate.data_received(b"POST / HTTP/1.1\r\n\r\nbody")
        handed_on(reader)
        gate.data_received(b"more")
        gate.pass_all()
        gate.data_received(b"!")
        assert handed_on(reader) == b"more!"

    gated(test)


class Rest:
    """A `Resting` that records what the gate told it."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def first_byte(self) -> None:
        self.told.append("first byte")

    def head_ready(self) -> None:
        self.told.append("head ready")

    def lost(self) -> None:
        self.told.append("lost")


def test_a_gate_rests_only_once_every_byte_it_handed_on_was_read() -> None:
    async def run() -> None:
        reader = Recorder()
        gate = HeadGate(reader, idle, BOUND)
        gate.data_received(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")  # two, pipelined
        assert not gate.rest(Rest())  # a coroutine must read them first
        assert await gate.read(BOUND) == b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        rest = Rest()
        assert gate.rest(rest)
        assert rest.told == []

    async def half_closed() -> None:
        gate = HeadGate(Recorder(), idle, BOUND)
        gate.data_received(b"GET / HTTP/1.1\r\n\r\n")
        gate.eof_received()
        await gate.read(BOUND)
        assert not gate.rest(Rest())  # its coroutine reads the EOF and closes at once

    asyncio.run(run())
    asyncio.run(half_closed())


def test_a_resting_gate_tells_of_the_first_byte_then_of_a_head_that_may_be_whole() -> None:
    async def run() -> None:
        reader = Recorder()
        gate = HeadGate(reader, idle, BOUND)
        gate.data_received(b"GET / HTTP/1.1\r\n\r\n")
        await gate.read(BOUND)  # its coroutine read and answered it
        handed_on(reader)
        rest = Rest()
        assert gate.rest(rest)
        byte_by_byte(gate, b"GET / HTTP/1.1\r\nX: y\r\n")
        assert rest.told == ["first byte"]
        assert handed_on(reader) == b""  # held: no coroutine to wake for each byte
        gate.data_received(b"\r\n")
        assert rest.told == ["first byte", "head ready"]
        assert handed_on(reader) == b"GET / HTTP/1.1\r\nX: y\r\n\r\n"
        gate.connection_lost(None)
        assert rest.told == ["first byte", "head ready"]  # woken: its coroutine sees the loss

    asyncio.run(run())


def test_a_resting_gate_tells_of_an_eof_and_of_a_loss() -> None:
    def at_eof(gate: HeadGate, reader: Recorder) -> None:
        rest = Rest()
        assert gate.rest(rest)
        gate.eof_received()
        assert rest.told == ["head ready"]  # a coroutine reads the EOF and closes

    def at_a_loss(gate: HeadGate, reader: Recorder) -> None:
        rest = Rest()
        assert gate.rest(rest)
        gate.connection_lost(None)
        assert rest.told == ["lost"]

    gated(at_eof)
    gated(at_a_loss)


class Transport(asyncio.Transport):
    """A transport that records what the doorman did with it."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.aborted = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


class Arrivals:
    """A server side that lets connections in (or not) and records the hand-overs."""

    def __init__(self, *, let_in: bool = True, at_once: bool = False) -> None:
        self.let_in, self.at_once = let_in, at_once
        self.readers: list[Recorder] = []
        self.lost_count = 0

    def arrived(self, transport: asyncio.Transport) -> bool:
        return self.let_in

    def hand_over(self, transport: asyncio.Transport) -> HeadGate:
        self.readers.append(Recorder())
        return HeadGate(self.readers[-1], idle, BOUND)

    def lost(self) -> None:
        self.lost_count += 1


def at_the_door(test: Callable[[Doorman, Transport, Arrivals], None], arrivals: Arrivals) -> None:
    """Run `test` on a doorman that was just given a new connection, on a loop of its own."""

    async def run() -> None:
        transport = Transport()
        doorman = Doorman(arrivals, BOUND)
        doorman.connection_made(transport)
        test(doorman, transport, arrivals)
        await asyncio.sleep(0)  # the handed-over coroutines (`idle`) end
        transport.abort()  # closed: its stream writer, if any, may go

    asyncio.run(run())


def test_a_slow_head_gets_a_coroutine_only_once_it_may_be_whole() -> None:
    def test(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaa\r\n\r":
            doorman.data_received(bytes([byte]))
        assert arrivals.readers == []
        assert transport.protocol is None
        doorman.data_received(b"\nGET")  # the blank line, split across two reads
        [reader] = arrivals.readers
        assert isinstance(transport.protocol, HeadGate)
        assert handed_on(reader) == b"GET / HTTP/1.1\r\nX-Slow: aaaa\r\n\r\nGET"

    at_the_door(test, Arrivals())


def test_the_doorman_hands_over_at_the_bound_at_eof_and_at_a_byte_h11_refuses() -> None:
    def at_the_bound(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        doorman.data_received(b"G" * (BOUND - 1))
        assert arrivals.readers == []
        doorman.data_received(b"x")
        assert handed_on(arrivals.readers[0]) == b"G" * (BOUND - 1) + b"x"  # h11 answers 431

    def at_eof(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        doorman.data_received(b"GET /")
        assert doorman.eof_received()  # half closed: open for the 400
        assert handed_on(arrivals.readers[0]) == b"GET /"
        assert arrivals.readers[0].ended

    def tls_hello(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        doorman.data_received(b"\x16\x03\x01")
        assert handed_on(arrivals.readers[0]) == b"\x16\x03\x01"

    for test in (at_the_bound, at_eof, tls_hello):
        at_the_door(test, Arrivals())


def test_a_connection_that_ends_silent_never_gets_a_coroutine() -> None:
    def test(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        assert not doorman.eof_received()  # the transport closes itself
        doorman.connection_lost(None)
        assert arrivals.readers == []
        assert arrivals.lost_count == 1

    at_the_door(test, Arrivals())


def test_a_tls_connection_is_handed_over_at_once_and_one_refused_is_closed() -> None:
    def tls(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        assert len(arrivals.readers) == 1
        assert isinstance(transport.protocol, HeadGate)

    def refused(doorman: Doorman, transport: Transport, arrivals: Arrivals) -> None:
        assert transport.aborted
        assert arrivals.readers == []
        doorman.connection_lost(None)
        assert arrivals.lost_count == 0  # never let in: nothing to count out

    at_the_door(tls, Arrivals(at_once=True))
    at_the_door(refused, Arrivals(let_in=False))
