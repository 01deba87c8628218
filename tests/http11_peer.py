"""Reading HTTP/1.1 answers off a raw socket, for the tests that speak bytes to the server."""

from __future__ import annotations

import socket


def read_head_and_body(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole answer on a kept-alive connection: its head and its Content-Length body."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-answer"
        body += chunk
    return head, body
