"""One client connection, spoken through h11: the exporter's one HTTP/1.1 parser.

Each accepted connection is a coroutine on the server's event loop (`http_server`),
from the moment its first request head may be whole (`Arrival`, with `headgate.Doorman`
holding its bytes until then). h11 frames every request, so no second parser can read a
request differently (request smuggling needs two). Around it, the limits Go's `http.Server` has:

- TLS through `ssl`, the handshake within the first head's deadline;
- a request head within `header_timeout` (10 s) of accept, or of the first byte of a
  kept-alive connection's next request; at most `MAX_HEADER_BYTES` and `MAX_HEADERS`
  fields (431; a request line that alone is too long, 414); a kept-alive connection
  waits `idle_timeout` for its next request;
- only GET and HEAD without a body are read on. A body (`Content-Length` above 0, any
  `Transfer-Encoding`) or a framing h11 refuses (conflicting lengths, whitespace before
  a colon, ...) gets 400, another method 501, and the connection is closed after a
  lingering drain bounded in time and bytes: no body is ever read as the next request;
- an answer goes out in pieces of `SEND_PIECE` bytes under `write_timeout`: the cached
  body is never joined or copied whole, and a slow reader holds only its own buffers;
- a connection refused (401, 429) that asks again at once waits a second for its next
  answer, so a flood on kept-alive connections costs one answer a second per connection;
- between two requests the coroutine ends and the connection rests in its gate (`Rest`),
  so an idle or a paced connection costs no task and no parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import h11

from exporter.web import authorisation as access
from exporter.web.authorisation import OPEN_PATHS, SERVER, InForce, request_path
from exporter.web.connections import Connection, ConnectionTable
from exporter.web.headgate import HeadGate
from exporter.web.passwordchecks import PasswordChecks
from exporter.web.routes import Answer, Endpoints, Request

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0  # from accept (or a kept-alive request's first byte) to its head
IDLE_TIMEOUT_SECONDS = 120.0  # a kept-alive connection waiting for its next request
WRITE_TIMEOUT_SECONDS = 30.0  # writing one answer
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
LINGER_SECONDS = 1.0  # after an error answer, how long the client's unread bytes are drained
MAX_LINGER_BYTES = 1024 * 1024  # and how many at most
LINGER_QUIET_SECONDS = 0.1  # and how long without one
CLOSE_SECONDS = 1.0  # waiting for a TLS goodbye
# A connection refused (401, 429) that asks again at once is held this long before its next
# answer: a flood on kept-alive connections then costs some 300 answers a second per 300
# connections, not tens of thousands (429 says Retry-After: 1).
REPEAT_REFUSAL_HOLD_SECONDS = 1.0
READ_SIZE = 64 * 1024
SEND_PIECE = 256 * 1024
_ONE_WRITE = 64 * 1024  # an answer up to this size goes out with its head, in one write
_REFUSED = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.TOO_MANY_REQUESTS})


@dataclass(frozen=True)
class Limits:
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    write_timeout: float = WRITE_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Service:
    """What every connection shares."""

    in_force: Callable[[], InForce]
    endpoints: Endpoints
    checks: PasswordChecks
    table: ConnectionTable
    limits: Limits


class Arrival:
    """One accepted connection until its coroutine runs (`headgate.Arriving`): it is
    counted in the cap, its first head's deadline starts, and whether it speaks TLS is
    settled, from the web config in force at accept."""

    __slots__ = ("_gate", "_timer", "connection", "deadline", "resumed", "service", "ssl_context")

    def __init__(self, service: Service, gate: Callable[[Arrival], HeadGate]) -> None:
        self.service = service
        self._gate = gate
        self.connection: Connection | None = None
        self.deadline = 0.0
        self.ssl_context = service.in_force().ssl_context
        self._timer: asyncio.TimerHandle | None = None
        self.resumed: Resumed | None = None  # set for a coroutine that follows a rest

    @property
    def at_once(self) -> bool:
        return self.ssl_context is not None

    def arrived(self, transport: asyncio.Transport) -> bool:
        peername = transport.get_extra_info("peername")
        connection = Connection(
            peer=str(peername[0]) if peername else "?",
            abort=transport.abort,
            buffered=transport.get_write_buffer_size,
        )
        if not self.service.table.open(connection):
            log.debug("%s: refused: every connection is in use", connection.peer)
            return False
        loop = asyncio.get_running_loop()
        self.connection = connection
        self.deadline = loop.time() + self.service.limits.header_timeout
        self._timer = loop.call_at(self.deadline, transport.abort)
        return True

    def hand_over(self, transport: asyncio.Transport) -> HeadGate:
        if self._timer is not None:
            self._timer.cancel()  # the coroutine keeps the deadline
        return self._gate(self)

    def lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self.connection is not None
        self.service.table.close(self.connection)


@dataclass(frozen=True)
class Resumed:
    """Where a connection's conversation was when its coroutine ended between requests."""

    deadline: float  # for the head that woke it
    refused: int  # refusals in a row so far
    paced: bool  # its next answer was held already, before the head was read


class Rest:
    """A connection between two requests, without a coroutine (`headgate.Resting`).

    An idle kept-alive connection, or one that was refused and asks again, then costs
    its transport, streams and gate, some 5.7 KiB, not also a task, its frames and an h11
    parser (10 KiB in all; measured with 600 connections). The deadlines are kept here:
    `idle_timeout` for the next request's first byte, `header_timeout` from it for a
    head. A connection refused twice in a row has its next head read no sooner than
    `REPEAT_REFUSAL_HOLD_SECONDS` after its last answer; its bytes wait meanwhile in the
    gate and the reader, within their bounds, as during any answer."""

    __slots__ = ("_arrival", "_deadline", "_gate", "_not_before", "_refused", "_timer")

    def __init__(self, arrival: Arrival, gate: HeadGate, refused: int) -> None:
        loop = asyncio.get_running_loop()
        self._arrival, self._gate, self._refused = arrival, gate, refused
        self._not_before = loop.time() + REPEAT_REFUSAL_HOLD_SECONDS if refused > 1 else 0.0
        self._deadline: float | None = None
        self._timer = loop.call_later(arrival.service.limits.idle_timeout, self._abort)

    def first_byte(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer.cancel()
        self._deadline = loop.time() + self._arrival.service.limits.header_timeout
        self._timer = loop.call_at(self._deadline, self._abort)

    def head_ready(self) -> None:
        self._timer.cancel()
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._arrival.service.limits.header_timeout
        if loop.time() < self._not_before:
            self._timer = loop.call_at(self._not_before, self._resume)
        else:
            self._resume()

    def lost(self) -> None:
        self._timer.cancel()
        assert self._arrival.connection is not None
        self._arrival.service.table.close(self._arrival.connection)

    def _resume(self) -> None:
        assert self._deadline is not None
        paced = self._not_before > 0
        self._arrival.resumed = Resumed(self._deadline, self._refused, paced)
        if not self._gate.resume():
            self.lost()  # closed while its answer was held: no coroutine will see it

    def _abort(self) -> None:
        assert self._arrival.connection is not None
        self._arrival.connection.abort()


async def serve(writer: asyncio.StreamWriter, gate: HeadGate, arrival: Arrival) -> None:
    """One accepted connection, once handed over by its `Doorman`, until it closes or
    rests between requests (`Rest`: a new coroutine takes it on from there)."""
    service, connection = arrival.service, arrival.connection
    assert connection is not None
    rests = False
    try:
        rests = await _converse(writer, gate, connection, arrival)
    except TimeoutError:
        log.debug("%s: deadline passed", connection.peer)
    except Exception:  # a reset, a failed handshake: the client's problem
        log.debug("%s: connection ended with an error", connection.peer, exc_info=True)
    finally:
        if not rests:
            service.table.close(connection)
            if not writer.transport.is_closing():
                writer.transport.abort()


async def _converse(
    writer: asyncio.StreamWriter, gate: HeadGate, connection: Connection, arrival: Arrival
) -> bool:
    """Requests and answers until the connection closes (False) or rests (True)."""
    service, resumed, arrival.resumed = arrival.service, arrival.resumed, None
    head_deadline = arrival.deadline if resumed is None else resumed.deadline
    if resumed is None:
        await _begin(writer, arrival, head_deadline)
    deadline: float | None = head_deadline
    async with asyncio.timeout_at(deadline):
        first = await gate.read(READ_SIZE)
    # Made once the client spoke: a connect flood's silent connections cost no parser.
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    parser.receive_data(first)  # b"": closed without a word, seen as such below
    refused, paced = (0, False) if resumed is None else (resumed.refused, resumed.paced)
    while True:
        got = await _next_request(parser, gate, service.limits, deadline)
        if got is None:
            await _close(writer)
            return False
        request, error = got
        service.table.busy(connection)
        head_only = request is not None and request.method == b"HEAD"
        answer, trusted = error, False
        if request is not None and answer is None:
            answer, trusted = await _answer(request, connection.peer, service)
            log.debug("%s %s %r %d", connection.peer, request.method, request.target, answer.status)
        assert answer is not None
        refused = refused + 1 if answer.status in _REFUSED else 0
        if refused > 1 and not paced:
            service.table.waiting(connection)  # held, and the cap may close it meanwhile
            await asyncio.sleep(REPEAT_REFUSAL_HOLD_SECONDS)
            service.table.busy(connection)
        paced = False
        await _write(parser, writer, connection, service, answer, head_only=head_only)
        if answer.close:
            gate.pass_all()
            await _linger(gate, writer)
        if answer.close or parser.our_state is not h11.DONE:
            await _close(writer)  # the client asked for it, or HTTP/1.0
            return False
        parser.start_next_cycle()
        service.table.waiting(connection, trusted=trusted)
        if not parser.trailing_data[0] and gate.rest(Rest(arrival, gate, refused)):
            return True
        deadline = None
        await asyncio.sleep(0)  # pipelined requests are in h11's buffer: let others go first


async def _begin(writer: asyncio.StreamWriter, arrival: Arrival, deadline: float) -> None:
    """A new connection's TLS handshake, or its plain transport's write buffer."""
    if arrival.ssl_context is not None:
        async with asyncio.timeout_at(deadline):
            await writer.start_tls(
                arrival.ssl_context, ssl_handshake_timeout=arrival.service.limits.header_timeout
            )
    else:
        # At most about one piece queued beyond the kernel's buffer: enough that the kernel
        # seldom waits for the loop between pieces (with none queued, a 14 MiB answer took
        # 1.6x a static file's time, 1.2x now), little enough that a reader that never
        # reads holds at most two pieces' copy, 512 KiB (counted: `Connection.buffered`:
        # asyncio pauses the writer past one piece queued). TLS copies anyway.
        writer.transport.set_write_buffer_limits(high=SEND_PIECE)


async def _next_request(
    parser: h11.Connection,
    gate: HeadGate,
    limits: Limits,
    deadline: float | None,
) -> tuple[h11.Request | None, Answer | None] | None:
    """The next request with no answer yet, or with the error answer of one the server will
    not read on from; None when the client closed between requests. `deadline`: for the
    head, or None to wait `idle_timeout` for the first byte."""
    request = None
    try:
        event = await _next_event(parser, gate, limits, deadline)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        request, error = event, _unread(event)
        if error is None:
            assert isinstance(parser.next_event(), h11.EndOfMessage)  # no body: at once
        return request, error
    except h11.RemoteProtocolError as exc:
        log.debug("bad request framing: %s", exc)
        status = HTTPStatus.BAD_REQUEST
        if exc.error_status_hint == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            line_ends = b"\n" in parser.trailing_data[0]
            status = (
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                if line_ends
                else HTTPStatus.REQUEST_URI_TOO_LONG
            )
        return request, Answer.error(status)


async def _next_event(
    parser: h11.Connection,
    gate: HeadGate,
    limits: Limits,
    deadline: float | None,
) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    """The parser's next event, read on until it has one; `gate` wakes this only when the
    bytes may end a head, and at the first byte of a kept-alive connection's next one."""
    loop = asyncio.get_running_loop()
    idle = deadline is None and not parser.trailing_data[0]
    if deadline is None:
        deadline = loop.time() + (limits.idle_timeout if idle else limits.header_timeout)
    event = parser.next_event()
    if event is not h11.NEED_DATA:
        return event
    if idle:
        gate.pass_next()
    async with asyncio.timeout_at(deadline) as timeout:  # one timer a head, not one a read
        while event is h11.NEED_DATA:
            data = await gate.read(READ_SIZE)
            if idle:  # the next request's first byte: its head has the header deadline
                idle = False
                timeout.reschedule(loop.time() + limits.header_timeout)
            parser.receive_data(data)  # b"": the client closed
            event = parser.next_event()
    return event


def _unread(request: h11.Request) -> Answer | None:
    """The error answer for a request not to be read on from, or None to answer it."""
    if request.method not in (b"GET", b"HEAD"):
        return Answer.error(HTTPStatus.NOT_IMPLEMENTED)
    # h11 bounds a head still incomplete after a read; one that came whole in the read
    # that crossed the bound (at most READ_SIZE more) is measured here.
    size = len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)
    if len(request.target) > MAX_HEADER_BYTES:
        return Answer.error(HTTPStatus.REQUEST_URI_TOO_LONG)
    if len(request.headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
        return Answer.error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.lstrip(b"0")):
            return Answer.error(HTTPStatus.BAD_REQUEST)  # a body: it would be the next request
    return None


async def _answer(request: h11.Request, peer: str, service: Service) -> tuple[Answer, bool]:
    """The answer, and whether the connection is now trusted (authorised with basic auth on)."""
    fields: dict[bytes, str] = {}
    for name, value in request.headers:
        text = value.decode("latin-1")
        fields[name] = f"{fields[name]}, {text}" if name in fields else text
    path = request_path(request.target.decode("latin-1"))
    in_force = service.in_force()
    refusal = await access.refusal(
        path, fields.get(b"authorization"), peer, in_force, service.checks
    )
    if refusal is not None:
        return Answer.refused(refusal), False
    method = request.method.decode("ascii")
    answer = await service.endpoints.answer(
        Request(method, path, fields.get(b"accept"), fields.get(b"accept-encoding"))
    )
    return answer, in_force.verifier.enabled and path not in OPEN_PATHS


async def _write(
    parser: h11.Connection,
    writer: asyncio.StreamWriter,
    connection: Connection,
    service: Service,
    answer: Answer,
    *,
    head_only: bool,
) -> None:
    """The answer's head from h11, then its body as it is, piece by piece, under the deadline."""
    body = () if head_only else answer.body
    head = parser.send(_response(answer, service.in_force()))
    for chunk in body:
        parser.send_with_data_passthrough(h11.Data(data=chunk))  # h11 counts; we send it
    parser.send(h11.EndOfMessage())
    service.table.writing(connection, (head, *body))
    async with asyncio.timeout(service.limits.write_timeout):
        if sum(map(len, body)) <= _ONE_WRITE:
            writer.write(b"".join((head, *body)))
        else:
            writer.write(head)
            for chunk in body:
                view = memoryview(chunk)
                for start in range(0, len(view), SEND_PIECE):
                    writer.write(view[start : start + SEND_PIECE])
                    await writer.drain()
        await writer.drain()
    service.table.written(connection)


def _response(answer: Answer, in_force: InForce) -> h11.Response:
    fields = {
        "Server": SERVER,
        "Date": formatdate(usegmt=True),
        "Content-Type": answer.content_type,
        "Content-Length": str(sum(map(len, answer.body))),
        **answer.headers,
        **in_force.config.headers,
    }
    if answer.close:
        fields["Connection"] = "close"
    return h11.Response(
        status_code=answer.status.value,
        headers=list(fields.items()),
        reason=answer.status.phrase.encode(),
    )


async def _linger(gate: HeadGate, writer: asyncio.StreamWriter) -> None:
    """Drain what the client still sends, for a while: closing with unread bytes would
    reset the connection, and the client could lose the answer (Go's lingering close).
    It ends at the client's EOF, after `LINGER_QUIET_SECONDS` without a byte (a TLS client,
    which cannot be sent half a close, waits for ours), or at the bounds."""
    if writer.can_write_eof():
        writer.write_eof()
    loop = asyncio.get_running_loop()
    until, drained = loop.time() + LINGER_SECONDS, 0
    with contextlib.suppress(TimeoutError, OSError):
        while drained <= MAX_LINGER_BYTES:
            async with asyncio.timeout(min(LINGER_QUIET_SECONDS, until - loop.time())):
                data = await gate.read(READ_SIZE)
            if not data:
                return
            drained += len(data)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close, waiting a bounded time for a TLS goodbye."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass  # reset meanwhile: closed all the same
