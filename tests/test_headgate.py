"""The head gate: a connection's coroutine sees its client's bytes only when they may
end a request head, so a header sent a byte at a time does not wake it for each byte."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from exporter.web.headgate import HeadGate

BOUND = 64


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: HeadGate) -> None:
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
