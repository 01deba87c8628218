"""The head gate: a connection's bytes reach h11 only when they may end a request head,
so a header sent a byte at a time costs one parse, not one a byte."""

from __future__ import annotations

from exporter.web.headgate import HeadGate

BOUND = 64


def byte_by_byte(gate: HeadGate, data: bytes) -> list[bool]:
    return [gate.add(data[index : index + 1]) for index in range(len(data))]


def test_a_head_sent_byte_by_byte_is_let_through_once_it_may_be_whole() -> None:
    gate = HeadGate(1024)
    assert not any(byte_by_byte(gate, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aa\r\n"))
    assert not gate.add(b"\r")
    assert gate.add(b"\nGET")  # a blank line split across two reads
    assert gate.take() == b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aa\r\n\r\nGET"
    assert len(gate) == 0
    assert not gate.add(b"T /next")


def test_a_bare_newline_ends_a_head_as_h11_reads_it() -> None:
    gate = HeadGate(1024)
    assert not gate.add(b"GET / HTTP/1.1\n")
    assert gate.add(b"\n")


def test_bytes_are_let_through_at_the_bound_for_h11_to_refuse_the_head() -> None:
    gate = HeadGate(BOUND)
    assert not any(byte_by_byte(gate, b"G" + b"x" * (BOUND - 2)))
    assert gate.add(b"x")
    assert gate.take() == b"G" + b"x" * (BOUND - 1)


def test_a_first_byte_no_request_line_starts_with_is_let_through_at_once() -> None:
    gate = HeadGate(BOUND)
    assert gate.add(b"\x16\x03\x01")  # a TLS hello on the plain port: h11 refuses it
    gate.take()
    assert not gate.add(b"G")
    assert not gate.add(b" ")  # not first: a space inside a request line is no sign
