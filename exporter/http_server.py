"""The HTTP side: `/metrics`, `/healthz`, `/readyz` and the landing page.

It only reads: the exposition (cached session part, live self part) and the
store's readiness. Two stages, so that no client can deny scrapes by being slow:

- the *front* stage, one thread with a selector, accepts connections, runs TLS
  handshakes, and reads request headers (and waits on idle keep-alive
  connections) without blocking. Each connection has a deadline for its
  handshake and headers (Go's `ReadHeaderTimeout` is the model), the headers
  are bounded in size, and the connections waiting here are bounded in number
  (past the bound, the one waiting longest is closed). A slow client costs a
  socket and a buffer, never a thread;
- a fixed pool of *worker* threads gets only complete requests, through a
  bounded queue in which known credentials go first, then probes, then the
  rest (full: 503 at once), builds each answer and writes what the socket
  takes at once; the front stage writes the rest under a write deadline, and
  waits for the next request on kept-alive connections. A client that reads
  slowly holds its answer's bytes (bounded in all), never a worker.

What a worker could only refuse, the front stage answers itself: 401 without
credentials, 429 when a password would need checking and `basicauth` admits no
more checks. So floods of wrong passwords, or of none, cost the workers nothing
(and bcrypt one core), while credentials seen before skip bcrypt and go first.
The web config (TLS, users, headers) is looked up for each new connection and
each request, so a changed file applies without a restart.
"""

from __future__ import annotations

import collections
import contextlib
import html
import io
import itertools
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import MappingProxyType
from typing import Any

from exporter import __version__
from exporter.basicauth import BasicAuthVerifier, VerifierBusy, has_basic_credentials
from exporter.exposition import Exposition
from exporter.negotiation import wants_gzip, wants_openmetrics
from exporter.snapshot import SnapshotStore
from exporter.webconfig import WebConfig, WebConfigError, WebConfigWatcher, build_ssl_context

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0  # from accept (or a kept-alive request's first byte) to "\r\n\r\n"
IDLE_TIMEOUT_SECONDS = 120.0  # a kept-alive connection waiting for its next request
WRITE_TIMEOUT_SECONDS = 30.0  # writing one response
MAX_UNSENT_BYTES = 64 * 1024 * 1024  # answers held for clients that read slowly, in all
MAX_HEADER_BYTES = 64 * 1024
MAX_WAITING_CONNECTIONS = 1000  # in the front stage: handshaking, reading headers, idle
WORKERS = 8  # more would only contend for the GIL: the work is Python, not I/O
MAX_QUEUED_REQUESTS = 1000  # past it, only known credentials and probes are queued (to 2x)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SHUTDOWN_POLL_SECONDS = 0.1  # how often the front stage looks at deadlines and stop()
LINGER_SECONDS = 1.0  # after refusing a request, how long its unread bytes are drained
_SEND_CHUNK = 256 * 1024
_LANE_STOP, _LANE_KNOWN, _LANE_PROBES, _LANE_OTHERS = -1, 0, 1, 2  # the request queue's order
_HEADER_END = re.compile(rb"\n\r?\n")
_AUTHORIZATION = re.compile(rb"\nauthorization:([^\r\n]*)", re.IGNORECASE)
_SERVER = f"notte-exporter/{__version__}"
_PLAIN = "text/plain; charset=utf-8"
_TOO_MANY_CHECKS = b"too many password checks at once\n"
_RETRY = MappingProxyType({"Retry-After": "1"})
_UNAUTHORISED = b"unauthorised\n"
_CHALLENGE = MappingProxyType({"WWW-Authenticate": 'Basic realm="notte-exporter", charset="UTF-8"'})
_REQUEST_LINE = re.compile(rb"(GET|HEAD) (\S+) HTTP/1\.[01]\r?\n")


_Request = tuple["_Connection", bytes, bytes]  # the connection, its head, bytes read past it


@dataclass(frozen=True)
class _InForce:
    """One web config and what the server builds from it."""

    config: WebConfig
    ssl_context: ssl.SSLContext | None
    verifier: BasicAuthVerifier


class _Connection:
    """A client connection while the front stage holds it."""

    HANDSHAKE, READING, IDLE, WRITING, LINGER = "handshake", "reading", "idle", "writing", "linger"

    def __init__(self, sock: socket.socket, peer: str, state: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.state = state
        self.deadline = deadline
        self.buffer = bytearray()
        self.scanned = 0  # how much of `buffer` is known to hold no end of headers
        self.events = 0  # the selector events it is registered for; 0 when not registered
        self.outgoing: memoryview | None = None  # the rest of an answer, while WRITING
        self.keep_alive = False  # after the answer, another request may follow
        self.rest = b""  # bytes read past the request being answered


class MetricsServer:
    """Serves the exporter's endpoints; `start()` runs the front stage and the workers."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        exposition: Exposition,
        store: SnapshotStore,
        web_config: WebConfigWatcher | WebConfig | None = None,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        max_waiting_connections: int = MAX_WAITING_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self.exposition = exposition
        self.store = store
        self._web_config = web_config if web_config is not None else WebConfig()
        self._in_force_lock = threading.Lock()
        self._serving = self._build(self._config_now(), previous=None)
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self._max_waiting = max_waiting_connections
        self._listener = _listen(address)
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[int, _Connection] = {}  # by id(); oldest first
        self._returned: collections.deque[_Connection] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        # (lane, order, request); None tells a worker to stop.
        self._requests: queue.PriorityQueue[tuple[int, int, _Request | None]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._workers = workers
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- configuration ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def scheme(self) -> str:
        return "https" if self._in_force().config.tls is not None else "http"

    def _in_force(self) -> _InForce:
        """The web config in force now, with its SSL context and password checker."""
        config = self._config_now()
        if config is not self._serving.config:
            with self._in_force_lock:
                if config is not self._serving.config:
                    self._serving = self._build(config, previous=self._serving)
        return self._serving

    def reload_web_config(self) -> bool:
        """Re-read the web config file now (SIGHUP); False when it is bad and the old stays."""
        if not isinstance(self._web_config, WebConfigWatcher):
            return True
        reloaded = self._web_config.reload()
        self._in_force()
        return reloaded

    def _config_now(self) -> WebConfig:
        source = self._web_config
        return source.current() if isinstance(source, WebConfigWatcher) else source

    def _build(self, config: WebConfig, previous: _InForce | None) -> _InForce:
        """Derive from `config`; the same users keep the verifier, and its cache, alive."""
        context = None
        if config.tls is not None:
            try:
                context = build_ssl_context(config.tls)
            except WebConfigError as exc:
                if previous is None:
                    raise
                log.error("%s; the TLS files in force stay", exc)
                context = previous.ssl_context
        if previous is not None and previous.config.basic_auth_users == config.basic_auth_users:
            verifier = previous.verifier
        else:
            verifier = BasicAuthVerifier(config.basic_auth_users)
        return _InForce(config, context, verifier)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._threads = [threading.Thread(target=self._front, name="metrics-http", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"metrics-http-{index}", daemon=True)
            for index in range(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop accepting, let each worker finish its request, close every connection."""
        self._stopping.set()
        self._wake()
        front, workers = self._threads[:1], self._threads[1:]
        self._threads = []
        for thread in front:
            thread.join(timeout=2)
        with contextlib.suppress(queue.Empty):
            while True:
                if (request := self._requests.get_nowait()[2]) is not None:
                    request[0].sock.close()
        for _ in workers:
            self._requests.put((_LANE_STOP, next(self._order), None))
        deadline = time.monotonic() + 2
        for thread in workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for connection in list(self._waiting.values()):
            self._close(connection)
        while self._returned:
            self._returned.popleft().sock.close()
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # -- the front stage: one thread, no blocking call ----------------------------------------

    def _front(self) -> None:
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
                self._evict_oldest()
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._waiting) >= self._max_waiting:
                self._evict_oldest()
            deadline = time.monotonic() + self.header_timeout
            context = self._in_force().ssl_context
            if context is None:
                self._keep(_Connection(sock, address[0], _Connection.READING, deadline))
                continue
            try:
                tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                continue
            self._keep(_Connection(tls, address[0], _Connection.HANDSHAKE, deadline))

    def _keep(self, connection: _Connection, events: int = selectors.EVENT_READ) -> None:
        """Wait for `events` on the connection, in the front stage."""
        if connection.events == 0:
            self._waiting[id(connection)] = connection
            self._selector.register(connection.sock, events, connection)
        elif connection.events != events:
            self._selector.modify(connection.sock, events, connection)
        connection.events = events

    def _release(self, connection: _Connection) -> None:
        """Take the connection out of the front stage (to a worker, or to be closed)."""
        if connection.events:
            self._selector.unregister(connection.sock)
            connection.events = 0
        self._waiting.pop(id(connection), None)

    def _close(self, connection: _Connection) -> None:
        self._release(connection)
        connection.sock.close()

    def _broken(self, connection: _Connection) -> None:
        """Called from an `except`: a reset or a failed read or write is the client's problem."""
        log.debug("%s: connection ended with an error", connection.peer, exc_info=True)
        self._close(connection)

    def _evict_oldest(self) -> None:
        oldest = next(iter(self._waiting.values()), None)
        if oldest is not None:
            log.debug("%s: closed to make room for a new connection", oldest.peer)
            self._close(oldest)

    def _advance(self, connection: _Connection, mask: int) -> None:
        if connection.state == _Connection.WRITING:
            return self._write(connection)
        if connection.state == _Connection.HANDSHAKE:
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
            connection.state = _Connection.READING
            self._keep(connection, selectors.EVENT_READ)
        self._read(connection)
        return None

    def _read(self, connection: _Connection) -> None:
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
            if connection.state == _Connection.LINGER:
                continue  # drained and dropped
            if connection.state == _Connection.IDLE:
                connection.state = _Connection.READING
                connection.deadline = time.monotonic() + self.header_timeout
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

    def _dispatch_if_complete(self, connection: _Connection) -> bool:
        buffer = connection.buffer
        end = _HEADER_END.search(buffer, max(0, connection.scanned - 2))
        if end is None:
            connection.scanned = len(buffer)
            return False
        head, rest = bytes(buffer[: end.end()]), bytes(buffer[end.end() :])
        connection.buffer, connection.scanned = bytearray(), 0
        lane, answer = self._triage(head)
        if answer is not None:
            self._answer_here(connection, answer, rest)
            return True
        bound = MAX_QUEUED_REQUESTS if lane == _LANE_OTHERS else 2 * MAX_QUEUED_REQUESTS
        if self._requests.qsize() >= bound:
            log.debug("%s: every worker is busy and the queue is full: 503", connection.peer)
            self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE)
            return True
        self._release(connection)
        self._requests.put((lane, next(self._order), (connection, head, rest)))
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
        if _path(line.group(2)) in OPEN_PATHS:
            return _LANE_PROBES, None
        verifier = self._in_force().verifier
        if not verifier.enabled:
            return _LANE_OTHERS, None
        found = _AUTHORIZATION.search(head)
        authorization = found.group(1).strip().decode("latin-1") if found else None
        if verifier.known(authorization):
            return _LANE_KNOWN, None
        head_only = line.group(1) == b"HEAD"
        if not has_basic_credentials(authorization):
            return _LANE_OTHERS, self._response(
                HTTPStatus.UNAUTHORIZED, _UNAUTHORISED, _CHALLENGE, head_only=head_only
            )
        if verifier.busy:
            return _LANE_OTHERS, self._response(
                HTTPStatus.TOO_MANY_REQUESTS, _TOO_MANY_CHECKS, _RETRY, head_only=head_only
            )
        return _LANE_OTHERS, None

    def _answer_here(self, connection: _Connection, response: bytes, rest: bytes) -> None:
        """Answer from the front stage and keep the connection for the next request."""
        connection.outgoing, connection.keep_alive, connection.rest = (
            memoryview(response),
            True,
            rest,
        )
        connection.state = _Connection.WRITING
        connection.deadline = time.monotonic() + self.write_timeout
        self._keep(connection, selectors.EVENT_WRITE)  # written when the selector says so:
        # writing now could answer a pipelined request, and the next, all in one call stack

    def _refuse(self, connection: _Connection, status: HTTPStatus) -> None:
        """Answer with an error, best effort, then drain what the client still sends.

        Closing with unread bytes would reset the connection, and the client could
        lose the answer; Go calls this a lingering close.
        """
        body = f"{status.value} {status.phrase}\n".encode()
        response = self._response(status, body, {"Connection": "close"})
        try:
            connection.sock.send(response)
            connection.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            return self._close(connection)
        connection.state = _Connection.LINGER
        connection.deadline = time.monotonic() + LINGER_SECONDS
        self._keep(connection)
        return None

    def _response(
        self,
        status: HTTPStatus,
        body: bytes,
        headers: Mapping[str, str],
        *,
        head_only: bool = False,
    ) -> bytes:
        """A small plain-text response written by the front stage itself."""
        fields = {"Server": _SERVER, "Content-Type": _PLAIN, "Content-Length": str(len(body))}
        fields.update(headers)
        fields.update(self._in_force().config.headers)
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        response = f"HTTP/1.1 {status.value} {status.phrase}\r\n{head}\r\n".encode("latin-1")
        return response if head_only else response + body

    def _take_returned(self) -> None:
        """Connections back from the workers: finish writing, then wait for the next request."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while self._returned:
            connection = self._returned.popleft()
            if connection.outgoing:
                self._make_room_to_write(len(connection.outgoing))
                connection.state = _Connection.WRITING
                connection.deadline = time.monotonic() + self.write_timeout
                self._keep(connection, selectors.EVENT_WRITE)
            else:
                self._await_request(connection)

    def _write(self, connection: _Connection) -> None:
        assert connection.outgoing is not None
        try:
            connection.outgoing = _send_some(connection.sock, connection.outgoing)
        except (OSError, ValueError):
            return self._broken(connection)
        if connection.outgoing:
            return self._keep(connection, selectors.EVENT_WRITE)
        if not connection.keep_alive:
            return self._close(connection)
        return self._await_request(connection)

    def _await_request(self, connection: _Connection) -> None:
        """A kept-alive connection whose answer went out: read (or wait for) its next request."""
        connection.outgoing = None
        rest, connection.rest = connection.rest, b""
        if rest:
            connection.state = _Connection.READING
            connection.deadline = time.monotonic() + self.header_timeout
            connection.buffer = bytearray(rest)
            if self._dispatch_if_complete(connection):
                return
        else:
            connection.state = _Connection.IDLE
            connection.deadline = time.monotonic() + self.idle_timeout
        self._keep(connection)
        self._read(connection)  # TLS may hold decrypted bytes the selector cannot see

    def _make_room_to_write(self, size: int) -> None:
        """Bound the answers held for slow readers: past the bound, drop the oldest reader."""
        writing = [c for c in self._waiting.values() if c.state == _Connection.WRITING]
        held = sum(len(c.outgoing or b"") for c in writing)
        for oldest in writing:
            if held + size <= MAX_UNSENT_BYTES:
                return
            held -= len(oldest.outgoing or b"")
            log.debug("%s: closed: reads too slowly while answers pile up", oldest.peer)
            self._close(oldest)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake, or stopped
            self._wake_w.send(b"x")

    # -- the workers --------------------------------------------------------------------------

    def _work(self) -> None:
        """Answer a request, write what the socket takes at once, leave the rest to the front.

        A client that reads slowly (or not at all) then holds no worker.
        """
        while (item := self._requests.get()[2]) is not None:
            connection, head, rest = item
            connection.rest = rest
            try:
                response, connection.keep_alive = self._answer(connection, head)
                connection.sock.setblocking(False)
                connection.outgoing = _send_some(connection.sock, memoryview(response))
            except Exception as exc:  # a broken client (reset, timeout) is the client's problem
                log.debug(
                    "%s: connection ended with an error: %r", connection.peer, exc, exc_info=True
                )
                connection.sock.close()
                continue
            if self._stopping.is_set() or not (connection.outgoing or connection.keep_alive):
                connection.sock.close()
            else:
                self._returned.append(connection)
                self._wake()

    def _answer(self, connection: _Connection, head: bytes) -> tuple[bytes, bool]:
        """The whole response to one request, and whether the connection may carry another."""
        handler = _Handler(connection, head, self)
        return handler.response.getvalue(), not handler.close_connection


def _send_some(sock: socket.socket, data: memoryview) -> memoryview:
    """Send what a non-blocking socket takes now; what is left.

    After a would-block, TLS must be retried with the same bytes: the slice sent
    is always the first `_SEND_CHUNK` bytes of what is left, so it is.
    """
    while data:
        try:
            sent = sock.send(data[:_SEND_CHUNK])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return data
        data = data[sent:]
    return data


class _Handler(BaseHTTPRequestHandler):
    """One request, parsed from its complete head; the answer is written to `wfile`."""

    server: MetricsServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    server_version = _SERVER

    def __init__(self, connection: _Connection, head: bytes, server: MetricsServer) -> None:
        self._head = head
        self._settings = server._in_force()  # one config for the whole request
        super().__init__(connection.sock, (connection.peer, 0), server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.response = io.BytesIO()
        self.wfile = self.response

    def handle(self) -> None:
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (headers.get("Content-Length") or "0") != "0":
            self.close_connection = True  # its body would be read as the next request
        if headers is not None and headers.get("Transfer-Encoding"):
            self.close_connection = True

    def finish(self) -> None:
        pass  # the server writes `wfile` out, with a deadline

    def version_string(self) -> str:
        """`Server: notte-exporter/<version>`, without Python's version after it."""
        return self.server_version

    def end_headers(self) -> None:
        for name, value in self._settings.config.headers.items():
            self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in OPEN_PATHS and not self._authorised():
            return
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._send(200, b"ok\n", _PLAIN)
        elif path == "/readyz":
            self._readyz()
        elif path == "/":
            self._send(200, _landing_page(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", _PLAIN)

    do_HEAD = do_GET

    def _authorised(self) -> bool:
        verifier = self._settings.verifier
        if not verifier.enabled:
            return True
        try:
            if verifier.check(self.headers.get("Authorization")):
                return True
        except VerifierBusy:
            self._send(429, _TOO_MANY_CHECKS, _PLAIN, _RETRY)
            return False
        self._send(401, _UNAUTHORISED, _PLAIN, _CHALLENGE)
        return False

    def _metrics(self) -> None:
        openmetrics = wants_openmetrics(", ".join(self.headers.get_all("Accept", [])))
        gzip = wants_gzip(", ".join(self.headers.get_all("Accept-Encoding", [])))
        exposition = self.server.exposition
        body = exposition.body(openmetrics=openmetrics, gzip=gzip)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, exposition.content_type(openmetrics), headers)

    def _readyz(self) -> None:
        if self.server.store.ready:
            self._send(200, b"ready\n", _PLAIN)
        else:
            self._send(503, b"not ready: no poll cycle has succeeded yet\n", _PLAIN)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _path(target: bytes) -> str:
    """The path of a request target, as `BaseHTTPRequestHandler` and `do_GET` read it."""
    path = target.decode("latin-1").split("?", 1)[0]
    return "/" + path.lstrip("/") if path.startswith("//") else path


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


def _landing_page() -> bytes:
    version = html.escape(__version__)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>notte-exporter</title></head>"
        f"<body><h1>notte-exporter {version}</h1>"
        "<p>Prometheus exporter for Notte cloud-browser sessions.</p><ul>"
        "<li><a href='/metrics'>/metrics</a></li>"
        "<li><a href='/healthz'>/healthz</a></li>"
        "<li><a href='/readyz'>/readyz</a></li>"
        "</ul></body></html>\n"
    ).encode()
