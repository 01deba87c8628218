"""The front stage of the HTTP server: connections until their request is complete.

One thread with a selector accepts connections, runs TLS handshakes, reads
request headers (and waits on idle keep-alive connections) without blocking.
Each connection has a deadline for its handshake and headers (Go's
`ReadHeaderTimeout` is the model), the headers are bounded in size, and the
connections waiting here are bounded in number (past the bound, the oldest is
closed, unless it is being answered or is an idle connection that asked with known
credentials: a connect flood cannot cut a scrape or Prometheus's kept-alive
connection). A slow client costs a socket and a buffer, never a thread.

A complete request goes to the workers (`http_server`) through a bounded
`RequestQueue` in which known credentials go first, then probes, then the rest
(full: 503 at once). A worker gives its connection back with what the socket
did not take at once: this stage writes the rest under a write deadline, and
waits for the next request on kept-alive connections. A client that reads
slowly holds its answer's bytes (bounded in all), never a worker.

What a worker could only refuse, this stage answers itself: 401 without
credentials, 429 when a password would need checking and `basicauth` admits no
more checks. So floods of wrong passwords, or of none, cost the workers nothing
(and bcrypt one core), while credentials seen before skip bcrypt and go first.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

from exporter.access import (
    NO_CREDENTIALS,
    OPEN_PATHS,
    TOO_MANY_CHECKS,
    InForce,
    Refusal,
    request_path,
)
from exporter.basicauth import has_basic_credentials

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0  # from accept (or a kept-alive request's first byte) to "\r\n\r\n"
IDLE_TIMEOUT_SECONDS = 120.0  # a kept-alive connection waiting for its next request
WRITE_TIMEOUT_SECONDS = 30.0  # writing one response
MAX_UNSENT_BYTES = 64 * 1024 * 1024  # answers held for clients that read slowly, in all
MAX_HEADER_BYTES = 64 * 1024
MAX_WAITING_CONNECTIONS = 1000  # in the front stage: handshaking, reading headers, idle
MAX_QUEUED_REQUESTS = 1000  # past it, only known credentials and probes are queued (to 2x)
SHUTDOWN_POLL_SECONDS = 0.1  # how often the front stage looks at deadlines and stop()
LINGER_SECONDS = 1.0  # after refusing a request, how long its unread bytes are drained
MAX_LINGER_BYTES = 1024 * 1024  # and how many at most
# A connection refused by the front stage once (401, 429) that asks again at once is held
# this long before its next answer: a flood on kept-alive connections then costs some 300
# answers a second per 300 connections, not tens of thousands (429 says Retry-After: 1).
REPEAT_REFUSAL_HOLD_SECONDS = 1.0
_SEND_CHUNK = 256 * 1024
_LANE_STOP, _LANE_KNOWN, _LANE_PROBES, _LANE_OTHERS = -1, 0, 1, 2  # the request queue's order
_HEADER_END = re.compile(rb"\n\r?\n")
_AUTHORIZATION = re.compile(rb"\nauthorization:([^\r\n]*)", re.IGNORECASE)
_REQUEST_LINE = re.compile(rb"(GET|HEAD) (\S+) HTTP/1\.[01]\r?\n")
_CONNECTION = re.compile(rb"\nconnection:([^\r\n]*)", re.IGNORECASE)


class Connection:
    """A client connection while the front stage holds it, or a worker answers it."""

    HANDSHAKE, READING, IDLE, WRITING, LINGER = "handshake", "reading", "idle", "writing", "linger"
    HELD = "held"  # an answer waits out REPEAT_REFUSAL_HOLD_SECONDS, the socket unwatched

    def __init__(self, sock: socket.socket, peer: str, state: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.state = state
        self.deadline = deadline
        self.buffer = bytearray()
        self.scanned = 0  # how much of `buffer` is known to hold no end of headers
        self.events = 0  # the selector events it is registered for; 0 when not registered
        self.outgoing: list[memoryview] | None = None  # the rest of an answer, while WRITING
        self.keep_alive = False  # after the answer, another request may follow
        self.rest = b""  # bytes read past the request being answered
        self.refused = 0  # answers the front stage gave it itself
        self.authorization: str | None = None  # of the last request a worker answered
        self.drained = 0  # bytes dropped while lingering


@dataclass(frozen=True)
class Limits:
    """How long the front stage waits on a client, and on how many clients at once."""

    header_timeout: float
    idle_timeout: float
    write_timeout: float
    max_waiting_connections: int


Request = tuple[Connection, bytes, bytes]  # the connection, its head, bytes read past it


class RequestQueue:
    """Complete requests for the workers: known credentials first, then probes, then the rest."""

    def __init__(self) -> None:
        # (lane, order, request); None tells a worker to stop.
        self._queue: queue.PriorityQueue[tuple[int, int, Request | None]] = queue.PriorityQueue()
        self._order = itertools.count()

    def has_room(self, lane: int) -> bool:
        bound = MAX_QUEUED_REQUESTS if lane == _LANE_OTHERS else 2 * MAX_QUEUED_REQUESTS
        return self._queue.qsize() < bound

    def put(self, lane: int, request: Request) -> None:
        self._queue.put((lane, next(self._order), request))

    def get(self) -> Request | None:
        """The next request, waiting for one; None when the worker is to stop."""
        return self._queue.get()[2]

    def stop_one(self) -> None:
        """Tell one worker to stop, once the requests before it are answered."""
        self._queue.put((_LANE_STOP, next(self._order), None))

    def close_queued(self) -> None:
        """Close the connections of the requests no worker has taken."""
        with contextlib.suppress(queue.Empty):
            while True:
                if (request := self._queue.get_nowait()[2]) is not None:
                    request[0].sock.close()


class FrontStage:
    """The selector thread: every connection that waits on its client waits here."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        in_force: Callable[[], InForce],
        requests: RequestQueue,
        stopping: threading.Event,
        limits: Limits,
    ) -> None:
        self._in_force = in_force
        self._requests = requests
        self._stopping = stopping
        self.limits = limits
        self._listener = _listen(address)
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[int, Connection] = {}  # by id(); oldest first
        self._returned: collections.deque[Connection] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def open(self) -> None:
        """Get ready to run: before `run` starts, and before any worker can give anything back."""
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)

    def give_back(self, connection: Connection) -> None:
        """From a worker: the connection, with the rest of its answer or none, for this stage."""
        self._returned.append(connection)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake, or stopped
            self._wake_w.send(b"x")

    def close(self) -> None:
        """After `run` has returned: close every connection held here, and the listener."""
        for connection in list(self._waiting.values()):
            self._close(connection)
        while self._returned:
            self._returned.popleft().sock.close()
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # -- one thread, no blocking call ---------------------------------------------------------

    def run(self) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            for key, mask in self._selector.select(SHUTDOWN_POLL_SECONDS):
                if key.data is None:
                    self._accept()
                elif key.data is self._wake_r:
                    self._take_returned()
                else:
                    self._advance(key.data, mask)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SHUTDOWN_POLL_SECONDS
                for connection in [c for c in self._waiting.values() if c.deadline <= now]:
                    if connection.state == Connection.HELD:
                        self._write_held(connection)
                        continue
                    log.debug("%s: %s deadline passed", connection.peer, connection.state)
                    self._close(connection)

    def _accept(self) -> None:
        for _ in range(64):  # then let the others have a turn
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors: make room
                log.warning("cannot accept a connection: %s", exc)
                self._evict()
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._waiting) >= self.limits.max_waiting_connections and not self._evict():
                log.debug("%s: refused: every waiting connection is in use", address[0])
                sock.close()
                continue
            deadline = time.monotonic() + self.limits.header_timeout
            context = self._in_force().ssl_context
            if context is None:
                self._keep(Connection(sock, address[0], Connection.READING, deadline))
                continue
            try:
                tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                continue
            self._keep(Connection(tls, address[0], Connection.HANDSHAKE, deadline))

    def _keep(self, connection: Connection, events: int = selectors.EVENT_READ) -> None:
        """Wait for `events` on the connection, in the front stage."""
        if connection.events == 0:
            self._waiting[id(connection)] = connection
            self._selector.register(connection.sock, events, connection)
        elif connection.events != events:
            self._selector.modify(connection.sock, events, connection)
        connection.events = events

    def _release(self, connection: Connection) -> None:
        """Take the connection out of the front stage (to a worker, or to be closed)."""
        if connection.events:
            self._selector.unregister(connection.sock)
            connection.events = 0
        self._waiting.pop(id(connection), None)

    def _close(self, connection: Connection) -> None:
        self._release(connection)
        connection.sock.close()

    def _broken(self, connection: Connection) -> None:
        """Called from an `except`: a reset or a failed read or write is the client's problem."""
        log.debug("%s: connection ended with an error", connection.peer, exc_info=True)
        self._close(connection)

    def _evict(self) -> bool:
        """Close the oldest connection that may go to make room; False when none may.

        An answer being written, and an idle connection that asked with known
        credentials (Prometheus's kept-alive one), are never cut: a flood of plain
        connects then costs only the flood's own connections, and new ones once every
        place is taken by such connections."""
        verifier = self._in_force().verifier
        for connection in self._waiting.values():
            trusted = verifier.enabled and verifier.known(connection.authorization)
            if evictable(connection, trusted=trusted):
                log.debug("%s: closed to make room for a new connection", connection.peer)
                self._close(connection)
                return True
        return False

    def _advance(self, connection: Connection, mask: int) -> None:
        if connection.state == Connection.WRITING:
            return self._write(connection)
        if connection.state == Connection.HANDSHAKE:
            assert isinstance(connection.sock, ssl.SSLSocket)
            try:
                connection.sock.do_handshake()
            except ssl.SSLWantReadError:
                return self._keep(connection, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._keep(connection, selectors.EVENT_WRITE)
            except (OSError, ValueError) as exc:
                log.debug("%s: TLS handshake failed: %s", connection.peer, exc)
                return self._close(connection)
            connection.state = Connection.READING
            self._keep(connection, selectors.EVENT_READ)
        self._read(connection)
        return None

    def _read(self, connection: Connection) -> None:
        """Read what is there; hand over a complete request, refuse an oversized one."""
        while True:
            try:
                chunk = connection.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                return self._keep(connection, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._keep(connection, selectors.EVENT_WRITE)
            except OSError:
                return self._broken(connection)
            if not chunk:
                return self._close(connection)
            if connection.state == Connection.LINGER:
                connection.drained += len(chunk)
                if connection.drained > MAX_LINGER_BYTES:
                    return self._close(connection)
                continue  # drained and dropped
            if connection.state == Connection.IDLE:
                connection.state = Connection.READING
                connection.deadline = time.monotonic() + self.limits.header_timeout
            connection.buffer += chunk
            if self._dispatch_if_complete(connection):
                return None
            if len(connection.buffer) > MAX_HEADER_BYTES:
                line_ends = b"\n" in connection.buffer
                status = (
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                    if line_ends
                    else HTTPStatus.REQUEST_URI_TOO_LONG
                )
                return self._refuse(connection, status)

    def _dispatch_if_complete(self, connection: Connection) -> bool:
        buffer = connection.buffer
        end = _HEADER_END.search(buffer, max(0, connection.scanned - 2))
        if end is None:
            connection.scanned = len(buffer)
            return False
        head, rest = bytes(buffer[: end.end()]), bytes(buffer[end.end() :])
        connection.buffer, connection.scanned = bytearray(), 0
        # Other methods go to a worker, whose error answer (501, 400) closes the connection.
        problem = framing_problem(head) if _REQUEST_LINE.match(head) else None
        if problem is not None:
            log.debug("%s: bad request framing (%s): 400 and close", connection.peer, problem)
            self._refuse(connection, HTTPStatus.BAD_REQUEST)
            return True
        lane, answer = self._triage(head)
        if answer is not None:
            self._answer_here(connection, answer, rest, keep_alive=keeps_alive(head))
            return True
        if not self._requests.has_room(lane):
            log.debug("%s: every worker is busy and the queue is full: 503", connection.peer)
            self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE)
            return True
        connection.refused = 0  # it asked for something a worker answers
        connection.authorization = authorization_of(head)
        self._release(connection)
        self._requests.put(lane, (connection, head, rest))
        return True

    def _triage(self, head: bytes) -> tuple[int, bytes | None]:
        """The queue lane for a request, or the answer the front stage gives it itself.

        Known credentials go first, then probes, then the rest, so a flood of other
        requests, however long the queue it makes, delays neither Prometheus (whose
        credentials are cached) nor the kubelet. A request a worker could only
        refuse (no credentials; or a password to check while no check can start) is
        answered here, so a flood of those costs the workers nothing.
        """
        line = _REQUEST_LINE.match(head)
        if line is None:
            return _LANE_OTHERS, None  # a worker says what is wrong with it
        if request_path(line.group(2).decode("latin-1")) in OPEN_PATHS:
            return _LANE_PROBES, None
        verifier = self._in_force().verifier
        if not verifier.enabled:
            return _LANE_OTHERS, None
        authorization = authorization_of(head)
        if verifier.known(authorization):
            return _LANE_KNOWN, None
        head_only = line.group(1) == b"HEAD"
        if not has_basic_credentials(authorization):
            return _LANE_OTHERS, self._response(NO_CREDENTIALS, head_only=head_only)
        if verifier.busy:
            return _LANE_OTHERS, self._response(TOO_MANY_CHECKS, head_only=head_only)
        return _LANE_OTHERS, None

    def _answer_here(
        self, connection: Connection, response: bytes, rest: bytes, *, keep_alive: bool
    ) -> None:
        """Answer from the front stage; keep the connection for the next request unless the
        client said it would not send one. A connection refused before waits a while first."""
        connection.outgoing, connection.keep_alive, connection.rest = (
            outgoing((response,)),
            keep_alive,
            rest,
        )
        connection.refused += 1
        if connection.refused > 1:
            self._hold(connection)
        else:
            self._write_held(connection)

    def _hold(self, connection: Connection) -> None:
        """Keep the answer back for a while; nothing is read or written meanwhile."""
        if connection.events:
            self._selector.unregister(connection.sock)
            connection.events = 0
        connection.state = Connection.HELD
        connection.deadline = time.monotonic() + REPEAT_REFUSAL_HOLD_SECONDS
        self._waiting[id(connection)] = connection

    def _write_held(self, connection: Connection) -> None:
        """Start writing the answer the front stage gave."""
        connection.state = Connection.WRITING
        connection.deadline = time.monotonic() + self.limits.write_timeout
        self._keep(connection, selectors.EVENT_WRITE)  # written when the selector says so:
        # writing now could answer a pipelined request, and the next, all in one call stack

    def _refuse(self, connection: Connection, status: HTTPStatus) -> None:
        """Answer with an error, best effort, then drain what the client still sends.

        Closing with unread bytes would reset the connection, and the client could
        lose the answer; Go calls this a lingering close.
        """
        body = f"{status.value} {status.phrase}\n".encode()
        response = self._response(Refusal(status, body, {"Connection": "close"}))
        try:
            connection.sock.send(response)
            connection.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            return self._close(connection)
        connection.state = Connection.LINGER
        connection.deadline = time.monotonic() + LINGER_SECONDS
        self._keep(connection)
        return None

    def _response(self, refusal: Refusal, *, head_only: bool = False) -> bytes:
        """A small plain-text response written by the front stage itself."""
        return refusal.response(self._in_force().config.headers, head_only=head_only)

    def _take_returned(self) -> None:
        """Connections back from the workers: finish writing, then wait for the next request."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while self._returned:
            connection = self._returned.popleft()
            if connection.outgoing:
                self._make_room_to_write(connection.outgoing)
                connection.state = Connection.WRITING
                connection.deadline = time.monotonic() + self.limits.write_timeout
                self._keep(connection, selectors.EVENT_WRITE)
            else:
                self._await_request(connection)

    def _write(self, connection: Connection) -> None:
        assert connection.outgoing is not None
        try:
            connection.outgoing = send_some(connection.sock, connection.outgoing)
        except (OSError, ValueError):
            return self._broken(connection)
        if connection.outgoing:
            return self._keep(connection, selectors.EVENT_WRITE)
        if not connection.keep_alive:
            return self._close(connection)
        return self._await_request(connection)

    def _await_request(self, connection: Connection) -> None:
        """A kept-alive connection whose answer went out: read (or wait for) its next request."""
        connection.outgoing = None
        rest, connection.rest = connection.rest, b""
        if rest:
            connection.state = Connection.READING
            connection.deadline = time.monotonic() + self.limits.header_timeout
            connection.buffer = bytearray(rest)
            if self._dispatch_if_complete(connection):
                return
        else:
            connection.state = Connection.IDLE
            connection.deadline = time.monotonic() + self.limits.idle_timeout
        self._keep(connection)
        self._read(connection)  # TLS may hold decrypted bytes the selector cannot see

    def _make_room_to_write(self, answer: list[memoryview]) -> None:
        """Bound the memory answers hold for slow readers: past it, drop the oldest reader.

        Answers share the cached body, so memory is counted per buffer, not per view: a
        thousand readers of one 14 MiB body hold 14 MiB, and dropping one frees nothing."""
        writing = [c for c in self._waiting.values() if c.state == Connection.WRITING]
        while writing and held_bytes([answer, *(c.outgoing for c in writing)]) > MAX_UNSENT_BYTES:
            oldest = writing.pop(0)
            log.debug("%s: closed: reads too slowly while answers pile up", oldest.peer)
            self._close(oldest)


def evictable(connection: Connection, *, trusted: bool) -> bool:
    """Whether the connection cap may close this connection for a new one; `trusted`: its
    last request's credentials are known. Without basic auth nothing tells Prometheus
    from a flood, so idle connections stay evictable: an idle flood cannot lock out
    new connections."""
    if connection.state == Connection.WRITING:
        return False
    return not (connection.state == Connection.IDLE and trusted)


def authorization_of(head: bytes) -> str | None:
    """The Authorization header of a request head, if it has one."""
    found = _AUTHORIZATION.search(head)
    return found.group(1).strip().decode("latin-1") if found else None


def outgoing(chunks: Iterable[bytes]) -> list[memoryview]:
    """An answer's pieces, ready for `send_some`: views, never copies; empty ones dropped."""
    return [memoryview(chunk) for chunk in chunks if chunk]


def held_bytes(answers: Iterable[list[memoryview] | None]) -> int:
    """The memory the answers keep alive: each underlying buffer once, whole (a view of
    its tail keeps all of it), however many answers share it."""
    buffers = {id(view.obj): view.obj for answer in answers for view in answer or ()}
    return sum(memoryview(buffer).nbytes for buffer in buffers.values())


def send_some(sock: socket.socket, data: list[memoryview]) -> list[memoryview]:
    """Send what a non-blocking socket takes now, piece by piece; what is left.

    After a would-block, TLS must be retried with the same bytes: the slice sent
    is always the first `_SEND_CHUNK` bytes of what is left of the first piece, so it is.
    """
    left = list(data)
    while left:
        try:
            sent = sock.send(left[0][:_SEND_CHUNK])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return left
        left[0] = left[0][sent:]
        if not left[0]:
            del left[0]
    return left


def keeps_alive(head: bytes) -> bool:
    """Whether a request leaves its connection open for another, by the HTTP rules: HTTP/1.1
    unless it says `Connection: close`, HTTP/1.0 only when it says `Connection: keep-alive`."""
    options = {
        option.strip().lower()
        for found in _CONNECTION.finditer(head)
        for option in found.group(1).split(b",")
    }
    if b"close" in options:
        return False
    first_line = head.split(b"\n", 1)[0]
    return b"keep-alive" in options or not first_line.rstrip().endswith(b"HTTP/1.0")


def framing_problem(head: bytes) -> str | None:
    """Why a request head cannot be framed safely, or None when it can.

    Only GET and HEAD are served, and neither has a body, so a request that declares
    one (a Content-Length above 0, any Transfer-Encoding) is refused and its
    connection closed: were its body left unread, it would be read as the next
    request, and a proxy sharing the connection would answer one client's request to
    another (request smuggling). Headers that parsers read differently (a repeated
    Content-Length, whitespace before the colon, an obsolete folded line) are
    refused for the same reason: the front stage, the workers and a proxy in front
    must all see the same requests.
    """
    lengths: list[bytes] = []
    for line in head.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            return "folded header line"
        name, colon, field = line.partition(b":")
        if not colon or not name or name != name.strip():
            return "malformed header name"
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return "Transfer-Encoding"
        if lowered == b"content-length":
            lengths.append(field.strip())
    if len(lengths) > 1:
        return "repeated Content-Length"
    if lengths and (not lengths[0].isdigit() or lengths[0].strip(b"0")):  # no int(): 64 KiB
        return "a request body"
    return None


def _listen(address: tuple[str, int]) -> socket.socket:
    """A listening socket; `[::]` takes IPv4 too where the system allows, as Go does."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock
