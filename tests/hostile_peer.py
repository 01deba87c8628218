"""A hostile HTTP client, run in its own process by `tests/test_hostile_clients.py`.

    python -m tests.hostile_peer --port N --mode slowloris|wrong-password|tls-hello|idle

It opens `--connections` sockets to 127.0.0.1 (from `--source`, another loopback
address such as 127.0.0.2, to be another peer), sends each an opening, then reacts
to what it reads (and every 50 ms), until its stdin closes; then it prints a
tally (statuses answered, connections the server closed) as one JSON line. A
process of its own, as a real attacker is: it does not share the exporter's GIL.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import selectors
import socket
import sys
import threading
from collections.abc import Callable

WRONG = "Basic cHJvbWV0aGV1czpndWVzcw=="  # prometheus:guess
STATUS = re.compile(rb"HTTP/1\.1 (\d{3})")


def _dribble(sock: socket.socket, data: bytes) -> None:
    if not data:
        with contextlib.suppress(OSError):
            sock.send(b"a")  # one more byte of a header that never ends


def _again(request: bytes) -> Callable[[socket.socket, bytes], None]:
    def again(sock: socket.socket, data: bytes) -> None:
        if data:
            with contextlib.suppress(OSError):
                sock.send(request)  # answered: ask again at once

    return again


def _stall(sock: socket.socket, data: bytes) -> None:
    pass


WRONG_PASSWORD = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {WRONG}\r\n\r\n".encode()
NO_PASSWORD = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
MODES: dict[str, tuple[bytes, Callable[[socket.socket, bytes], None]]] = {
    "slowloris": (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ", _dribble),
    "wrong-password": (WRONG_PASSWORD, _again(WRONG_PASSWORD)),
    "no-password": (NO_PASSWORD, _again(NO_PASSWORD)),
    # The start of a TLS ClientHello, then nothing.
    "tls-hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", _stall),
    "idle": (b"", _stall),  # a connect flood: connections that never say a thing
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--source", default="127.0.0.1", help="the address to connect from")
    args = parser.parse_args()
    opening, react = MODES[args.mode]
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(args.connections):
        sock = socket.create_connection(
            ("127.0.0.1", args.port), timeout=5, source_address=(args.source, 0)
        )
        if opening:
            sock.sendall(opening)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    print("ready", flush=True)
    tally: collections.Counter[str] = collections.Counter()
    while not stdin_closed.is_set():
        for key, _ in selector.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                tally["closed"] += 1
                selector.unregister(sock)
                continue
            tally.update(status.decode() for status in STATUS.findall(data))
            react(sock, data)
        for key in list(selector.get_map().values()):
            assert isinstance(key.fileobj, socket.socket)
            react(key.fileobj, b"")
    for sock in sockets:
        sock.close()
    print(json.dumps(tally), flush=True)


if __name__ == "__main__":
    main()
