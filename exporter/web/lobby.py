"""Accepted connections that have not sent a byte yet, held as bare sockets.

A connect flood is a thousand connections that never say a thing. Held as asyncio
transports with their protocols, each costs some 3.5 KiB; held here, as a socket
the event loop watches for its first byte, some 1.3 KiB (RSS, with 600 of them). A
connection gets its transport and its `http11.Conversation` when its first byte
comes, its first head still due from accept; one whose client ends without a word
is closed here.

The lobby accepts `ACCEPTS_PER_TURN` connections a turn of the event loop: a
connect flood of 1,500 accepted at once kept a scrape waiting some 100 ms behind
their setup. Each is counted in the connection table at once, so the cap and its
evictions see it; evicting one of the lobby's closes its socket.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from exporter.web.connections import Connection, ConnectionTable

log = logging.getLogger(__name__)

ACCEPTS_PER_TURN = 64
ACCEPT_RETRY_SECONDS = 1.0  # after the process ran out of file descriptors or memory
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Gives a socket that spoke its transport and conversation: the connection, as counted,
# and the loop time its first head is due by.
HandsOver = Callable[[socket.socket, Connection, float], Coroutine[Any, Any, None]]


def _nothing_buffered() -> int:
    return 0


class Lobby:
    """The listening socket's accepts, and the connections that have not spoken yet;
    used from the server's event loop only."""

    def __init__(
        self,
        listener: socket.socket,
        table: ConnectionTable,
        *,
        hand_over: HandsOver,
        header_timeout: float,
    ) -> None:
        self._listener, self._table, self._hand_over = listener, table, hand_over
        self._header_timeout = header_timeout
        self._silent: dict[socket.socket, tuple[Connection, float]] = {}  # by accept, oldest first
        self._timer: asyncio.TimerHandle | None = None
        self._starved = False  # the last accept failed for want of descriptors or memory
        self._retry: asyncio.TimerHandle | None = None
        # Connections that spoke, while their transports are made (held: the loop keeps
        # only weak references to tasks).
        self._handing: dict[asyncio.Task[None], socket.socket] = {}

    def start(self) -> None:
        self._listener.setblocking(False)
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def stop(self) -> None:
        """Accept no more (the table closes the silent ones with every other)."""
        asyncio.get_running_loop().remove_reader(self._listener.fileno())
        for timer in (self._timer, self._retry):
            if timer is not None:
                timer.cancel()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            if self._starved:
                self._starved = False
                log.info("accepting connections again")
            sock.setblocking(False)
            self._admit(sock, str(address[0]))

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno not in _OUT_OF_RESOURCES:
            log.warning("accepting a connection failed: %s", exc)
            return
        # Once a spell: the process is out of file descriptors (or memory) for as long as
        # its clients keep their connections.
        log.log(
            logging.DEBUG if self._starved else logging.ERROR,
            "cannot accept connections (%s); trying again every %.0f s",
            exc,
            ACCEPT_RETRY_SECONDS,
        )
        self._starved = True
        # The listener stays readable: watching it would spin. Look again in a while.
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._listener.fileno())
        self._retry = loop.call_later(ACCEPT_RETRY_SECONDS, self.start)

    def _admit(self, sock: socket.socket, peer: str) -> None:
        record = Connection(
            peer=peer, abort=functools.partial(self._drop, sock), buffered=_nothing_buffered
        )
        if not self._table.open(record):
            log.debug("%s: refused: every connection is in use", peer)
            sock.close()
            return
        loop = asyncio.get_running_loop()
        self._silent[sock] = (record, loop.time() + self._header_timeout)
        loop.add_reader(sock.fileno(), self._spoke, sock)
        if self._timer is None:
            self._expire()

    def _spoke(self, sock: socket.socket) -> None:
        """Its first byte came: the conversation takes it from here. A client that went
        without a word (a connect flood ending) is closed here, with no transport made."""
        try:
            spoke = bool(sock.recv(1, socket.MSG_PEEK))  # its transport reads it
        except (BlockingIOError, InterruptedError):
            return  # woken for nothing
        except OSError:  # reset
            spoke = False
        if not spoke:
            record, _ = self._silent[sock]
            self._drop(sock)
            self._table.close(record)
            return
        record, deadline = self._silent.pop(sock)
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        task = loop.create_task(self._hand_over(sock, record, deadline))
        record.abort = task.cancel  # closed for room meanwhile: its socket closes when done
        self._handing[task] = sock
        task.add_done_callback(self._handed)

    def _handed(self, task: asyncio.Task[None]) -> None:
        sock = self._handing.pop(task)
        if task.cancelled() or task.exception() is not None:
            log.debug("a connection closed before it had its transport")
            sock.close()

    def _drop(self, sock: socket.socket) -> None:
        if self._silent.pop(sock, None) is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _expire(self) -> None:
        """Close the silent past their deadline; wake again at the next one's."""
        loop = asyncio.get_running_loop()
        self._timer = None
        while self._silent:
            sock, (record, deadline) = next(iter(self._silent.items()))
            if deadline > loop.time():
                self._timer = loop.call_at(deadline, self._expire)
                return
            log.debug("%s: deadline passed before a byte came", record.peer)
            self._drop(sock)
            self._table.close(record)
