"""Every open connection of the HTTP server: the connection cap, and the answers in flight.

`lobby` opens each accepted connection here, and `http11` says what it is doing. At the cap
(`MAX_CONNECTIONS`), a new connection makes room by closing one that is waiting for
a request head (a TLS handshake, a head being read, an idle keep-alive connection):
the oldest of the peer address holding the most such connections, so a connect
flood from one address closes its own connections first. Never closed for room: a
connection whose request is being answered or written, nor one waiting after an
authorised request (Prometheus's kept-alive connection). When nothing may go, the
new connection is refused.

Answers being written are bounded by the memory they keep alive: each underlying
buffer counted once and whole, however many answers share it (a thousand readers of
the one cached body hold one body), plus what the transports copied. Past
`MAX_UNSENT_BYTES`, the oldest writer is closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1000
MAX_UNSENT_BYTES = 64 * 1024 * 1024  # answers held for clients that read slowly, in all


@dataclass(eq=False, slots=True)  # one per connection: 600 idle ones save 150 KiB with slots
class Connection:
    """One client connection, as the cap sees it."""

    peer: str
    abort: Callable[[], object]  # close now, without a goodbye
    buffered: Callable[[], int]  # bytes its transport holds, not yet sent
    waiting: bool = True  # for a request head: the cap may close it unless `trusted`
    trusted: bool = False  # its last request was authorised with basic auth on
    answer: Sequence[memoryview] = ()  # being written, when not empty


class ConnectionTable:
    """The open connections; used from the server's event loop only."""

    def __init__(self, cap: int = MAX_CONNECTIONS, max_unsent: int = MAX_UNSENT_BYTES) -> None:
        self._cap = cap
        self._max_unsent = max_unsent
        self._open: set[Connection] = set()
        self._evictable: dict[str, dict[Connection, None]] = {}  # by peer, oldest first
        self._writing: dict[Connection, None] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._open)

    def open(self, connection: Connection) -> bool:
        """Count a new connection in, making room if need be; False when none may go."""
        if len(self._open) >= self._cap and not self._evict():
            return False
        self._open.add(connection)
        self.waiting(connection)
        return True

    def close(self, connection: Connection) -> None:
        self._not_evictable(connection)
        self._writing.pop(connection, None)
        self._open.discard(connection)

    def abort_all(self) -> None:
        for connection in list(self._open):
            connection.abort()
            self.close(connection)

    def waiting(self, connection: Connection, *, trusted: bool = False) -> None:
        """It waits for its client's next request head (or a held refusal waits)."""
        connection.waiting, connection.trusted = True, trusted
        self._not_evictable(connection)
        if not trusted and connection in self._open:
            self._evictable.setdefault(connection.peer, {})[connection] = None

    def busy(self, connection: Connection) -> None:
        """Its request head is complete: it is being answered, never closed for room."""
        connection.waiting = False
        self._not_evictable(connection)

    def writing(self, connection: Connection, answer: Iterable[bytes]) -> None:
        """It starts writing `answer`; older writers are closed while the answers in flight
        keep more than `max_unsent` bytes alive."""
        if connection not in self._open:
            return  # closed for room meanwhile
        connection.answer = outgoing(answer)
        others = list(self._writing)
        self._writing[connection] = None
        while others and self._unsent() > self._max_unsent:
            oldest = others.pop(0)
            log.debug("%s: closed: reads too slowly while answers pile up", oldest.peer)
            oldest.abort()
            self.close(oldest)

    def written(self, connection: Connection) -> None:
        connection.answer = ()
        self._writing.pop(connection, None)

    def _unsent(self) -> int:
        copied = sum(connection.buffered() for connection in self._writing)
        return held_bytes(connection.answer for connection in self._writing) + copied

    def _not_evictable(self, connection: Connection) -> None:
        waiting = self._evictable.get(connection.peer)
        if waiting is not None:
            waiting.pop(connection, None)
            if not waiting:
                del self._evictable[connection.peer]

    def _evict(self) -> bool:
        if not self._evictable:
            return False
        peer = max(self._evictable, key=lambda name: len(self._evictable[name]))
        victim = next(iter(self._evictable[peer]))
        log.debug("%s: closed to make room for a new connection", victim.peer)
        victim.abort()
        self.close(victim)
        return True


def outgoing(chunks: Iterable[bytes]) -> list[memoryview]:
    """An answer's pieces as views, never copies; empty ones dropped."""
    return [memoryview(chunk) for chunk in chunks if chunk]


def held_bytes(answers: Iterable[Sequence[memoryview] | None]) -> int:
    """The memory the answers keep alive: each underlying buffer once, whole (a view of
    its tail keeps all of it), however many answers share it."""
    buffers = {id(view.obj): view.obj for answer in answers for view in answer or ()}
    return sum(memoryview(buffer).nbytes for buffer in buffers.values())
