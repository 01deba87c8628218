"""One client connection, spoken through h11: the exporter's one HTTP/1.1 parser.

Each connection that has spoken (`lobby` holds those that have not) is a
`Conversation`, an asyncio protocol that feeds h11 what its client sends (through a
`headgate.HeadGate`, which holds bytes until they may end a head). h11 frames every
request, so no second parser can read a request differently (request smuggling needs
two). Around it, the limits Go's `http.Server` has:

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
  answer, so a flood on kept-alive connections costs one answer a second per connection.

A connection has a task only while a request is answered (or its TLS handshake runs),
and an h11 parser only while its client is in the middle of a request: a slow, an
idle or a held connection is its transport, this protocol and the bytes it sent,
some 3.3 KiB (a task with streams and a parser cost 10 KiB; measured with 600
connections). Every deadline is one timer of the protocol's.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from ssl import SSLContext
from typing import Any

import h11

from exporter.web import authorisation as access
from exporter.web.authorisation import OPEN_PATHS, InForce, request_path
from exporter.web.connections import Connection, ConnectionTable
from exporter.web.headgate import HeadGate
from exporter.web.messages import MAX_HEADER_BYTES, framing_error, not_read_on, response
from exporter.web.passwordchecks import PasswordChecks
from exporter.web.routes import Answer, Endpoints, Request

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SECONDS = 10.0  # from accept (or a kept-alive request's first byte) to its head
IDLE_TIMEOUT_SECONDS = 120.0  # a kept-alive connection waiting for its next request
WRITE_TIMEOUT_SECONDS = 30.0  # writing one answer
LINGER_SECONDS = 1.0  # after an error answer, how long the client's unread bytes are drained
MAX_LINGER_BYTES = 1024 * 1024  # and how many at most
LINGER_QUIET_SECONDS = 0.1  # and how long without one
CLOSE_SECONDS = 1.0  # waiting for a TLS goodbye
# A connection refused (401, 429) that asks again at once is held this long before its next
# answer: a flood on kept-alive connections then costs some 300 answers a second per 300
# connections, not tens of thousands (429 says Retry-After: 1).
REPEAT_REFUSAL_HOLD_SECONDS = 1.0
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


class Stage(enum.Enum):
    READING = "reading"  # a request head, or the first byte of the next one (`idle`)
    BUSY = "busy"  # a TLS handshake, or a request held or being answered
    LINGERING = "lingering"  # after an answer that closes: draining the client's bytes
    CLOSING = "closing"  # closed by us, waiting for the transport to end
    CLOSED = "closed"


class Conversation(asyncio.Protocol):
    """One connection, from accept to close: its client's bytes through h11, requests
    answered one at a time, in order, each in a task of its own."""

    __slots__ = (
        "_due",
        "_eof",
        "_eof_told",
        "_gate",
        "_idle",
        "_linger_until",
        "_lingered",
        "_not_before",
        "_parser",
        "_record",
        "_refused",
        "_service",
        "_ssl_context",
        "_stage",
        "_task",
        "_timer",
        "_transport",
        "_writable",
    )

    def __init__(self, service: Service, record: Connection, due: float) -> None:
        """`record` is counted in the table already; the first head is due by `due`
        (loop time: accept's, plus the header deadline)."""
        self._service = service
        self._ssl_context: SSLContext | None = service.in_force().ssl_context  # at 1st byte
        self._transport: asyncio.Transport | None = None
        self._record = record
        self._due = due
        self._gate = HeadGate(MAX_HEADER_BYTES)
        self._parser: h11.Connection | None = None  # made when a request's first byte comes
        self._stage = Stage.READING
        self._idle = False  # between requests, no byte of the next yet
        self._eof = False  # the client's end came
        self._eof_told = False  # to the parser
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak one
        self._writable: asyncio.Future[None] | None = None  # while asyncio pauses our writes
        self._refused = 0  # refusals in a row
        self._not_before = 0.0  # the next head is not answered before (loop time)
        self._lingered = 0
        self._linger_until = 0.0

    # -- asyncio's callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport, record = transport, self._record
        record.abort, record.buffered = transport.abort, transport.get_write_buffer_size
        self._set_timer(asyncio.get_running_loop().call_at(self._due, self._expired))
        if self._ssl_context is None:
            # At most about one piece queued beyond the kernel's buffer: enough that the
            # kernel seldom waits for the loop between pieces (with none queued, a 14 MiB
            # answer took 1.6x a static file's time, 1.2x now), little enough that a reader
            # that never reads holds at most two pieces' copy, 512 KiB (counted:
            # `Connection.buffered`). TLS copies anyway.
            transport.set_write_buffer_limits(high=SEND_PIECE)
        else:
            self._stage = Stage.BUSY
            self._run(self._handshake(transport, self._ssl_context))

    def data_received(self, data: bytes) -> None:
        if self._stage is Stage.LINGERING:
            self._drain(len(data))
            return
        if self._stage in (Stage.CLOSING, Stage.CLOSED):
            return
        if self._idle:  # the next request's first byte: its head has the header deadline
            self._idle = False
            self._expire_in(self._service.limits.header_timeout)
        may_end_head = self._gate.add(data)
        if self._stage is Stage.READING:
            if may_end_head:
                self._proceed()
        elif len(self._gate) >= MAX_HEADER_BYTES:
            self._transport_now().pause_reading()  # until the answer in progress is written

    def eof_received(self) -> bool:
        self._eof = True
        if self._stage is Stage.LINGERING:
            self._close()
        elif self._stage is Stage.READING:
            self._proceed()
        # Plain: the transport stays open for the answer, closed by us. TLS: the client's
        # goodbye starts asyncio's own, whatever this says (it warns if asked to keep open).
        return self._ssl_context is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stage = Stage.CLOSED
        self._cancel_timer()
        self._resume_writing()  # a write waiting for room sees the closed transport
        self._service.table.close(self._record)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._resume_writing()

    # -- requests --------------------------------------------------------------------------

    def _proceed(self) -> None:
        """Parse what was held; answer a request that is whole (or its framing error)."""
        if self._parser is None:
            self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        parser = self._parser
        if len(self._gate):
            parser.receive_data(self._gate.take())
            self._transport_now().resume_reading()
        if self._eof and not self._eof_told:
            self._eof_told = True  # once: h11 refuses anything after an end
            parser.receive_data(b"")
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            self._answer_later(None, framing_error(exc, parser), paced=False)
            return
        if event is h11.NEED_DATA:
            return  # the deadline runs on
        if not isinstance(event, h11.Request):  # h11.ConnectionClosed: the client's end
            self._close()
            return
        error = not_read_on(event)
        if error is None:
            assert isinstance(parser.next_event(), h11.EndOfMessage)  # no body: at once
        paced = self._not_before > 0
        self._answer_later(event, error, paced=paced, at=self._not_before)

    def _answer_later(
        self, request: h11.Request | None, error: Answer | None, *, paced: bool, at: float = 0.0
    ) -> None:
        """Answer at loop time `at` (held until then, as the cap may close it) or now."""
        self._stage = Stage.BUSY
        loop = asyncio.get_running_loop()
        if at > loop.time():
            self._set_timer(loop.call_at(at, self._answer_now, request, error, paced))
        else:
            self._answer_now(request, error, paced)

    def _answer_now(self, request: h11.Request | None, error: Answer | None, paced: bool) -> None:
        if self._stage is not Stage.BUSY:
            return  # lost while held
        self._cancel_timer()
        self._service.table.busy(self._record)
        self._run(self._respond(request, error, paced=paced))

    async def _respond(
        self, request: h11.Request | None, error: Answer | None, *, paced: bool
    ) -> None:
        record = self._record
        answer, trusted = error, False
        if request is not None and answer is None:
            answer, trusted = await answer_for(request, record.peer, self._service)
            log.debug("%s %s %r %d", record.peer, request.method, request.target, answer.status)
        assert answer is not None
        self._refused = self._refused + 1 if answer.status in _REFUSED else 0
        if self._refused > 1 and not paced:
            self._service.table.waiting(record)  # held, and the cap may close it meanwhile
            await asyncio.sleep(REPEAT_REFUSAL_HOLD_SECONDS)
            self._service.table.busy(record)
        head_only = request is not None and request.method == b"HEAD"
        await self._write(answer, head_only=head_only)
        self._answered(answer, trusted=trusted)

    def _answered(self, answer: Answer, *, trusted: bool) -> None:
        """After an answer: close, or wait for the next request (perhaps here already)."""
        parser, record = self._parser, self._record
        assert parser is not None
        if answer.close:
            self._linger()
            return
        if parser.our_state is not h11.DONE:
            self._close()  # the client asked for it, or HTTP/1.0
            return
        parser.start_next_cycle()
        self._service.table.waiting(record, trusted=trusted)
        loop = asyncio.get_running_loop()
        self._not_before = loop.time() + REPEAT_REFUSAL_HOLD_SECONDS if self._refused > 1 else 0
        self._stage = Stage.READING
        unread, ended = parser.trailing_data
        if not unread and not ended:
            self._parser = None  # nothing of the next request yet: a new parser will read it
        self._idle = not unread and not len(self._gate)
        limits = self._service.limits
        self._expire_in(limits.idle_timeout if self._idle else limits.header_timeout)
        if unread or ended or len(self._gate) or self._eof:
            self._proceed()

    async def _write(self, answer: Answer, *, head_only: bool) -> None:
        """The answer's head from h11, then its body as it is, piece by piece, in time."""
        parser, record, service = self._parser, self._record, self._service
        assert parser is not None
        body = () if head_only else answer.body
        head = parser.send(response(answer, service.in_force()))
        for chunk in body:
            parser.send_with_data_passthrough(h11.Data(data=chunk))  # h11 counts; we send it
        parser.send(h11.EndOfMessage())
        service.table.writing(record, (head, *body))
        async with asyncio.timeout(service.limits.write_timeout):
            if sum(map(len, body)) <= _ONE_WRITE:
                self._send(b"".join((head, *body)))
            else:
                self._send(head)
                for chunk in body:
                    view = memoryview(chunk)
                    for start in range(0, len(view), SEND_PIECE):
                        self._send(view[start : start + SEND_PIECE])
                        await self._drained()
            await self._drained()
        service.table.written(record)

    def _send(self, data: bytes | memoryview) -> None:
        transport = self._transport_now()
        if transport.is_closing():
            raise ConnectionResetError("closed while its answer was written")
        transport.write(data)

    async def _drained(self) -> None:
        """Until asyncio takes more of what we write (a reader that reads slowly)."""
        if self._writable is not None:
            await self._writable
        if self._transport_now().is_closing():
            raise ConnectionResetError("closed while its answer was written")

    # -- tasks, timers and the end ---------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._guarded(work))

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except TimeoutError:
            log.debug("%s: deadline passed", self._peer())
            self._abort()
        except Exception:  # a reset, a failed handshake: the client's problem
            log.debug("%s: connection ended with an error", self._peer(), exc_info=True)
            self._abort()

    async def _handshake(self, transport: asyncio.Transport, context: SSLContext) -> None:
        """TLS, within the first head's deadline (its timer aborts a handshake that lags)."""
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._service.limits.header_timeout,
            )
        except BaseException:
            self.connection_lost(None)  # asyncio tells a protocol only after a handshake
            raise
        assert tls is not None
        self._transport = tls
        if self._stage is Stage.BUSY:
            self._stage = Stage.READING
            if len(self._gate) or self._eof:
                self._proceed()

    def _linger(self) -> None:
        """Drain what the client still sends, for a while: closing with unread bytes would
        reset the connection, and the client could lose the answer (Go's lingering close).
        It ends at the client's EOF, after `LINGER_QUIET_SECONDS` without a byte (a TLS
        client, which cannot be sent half a close, waits for ours), or at the bounds."""
        transport = self._transport_now()
        self._stage = Stage.LINGERING
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self._linger_until = asyncio.get_running_loop().time() + LINGER_SECONDS
        if self._eof:
            self._close()
        else:
            self._drain(len(self._gate.take()))

    def _drain(self, size: int) -> None:
        self._lingered += size
        loop = asyncio.get_running_loop()
        quiet_until = min(loop.time() + LINGER_QUIET_SECONDS, self._linger_until)
        if self._lingered > MAX_LINGER_BYTES or quiet_until <= loop.time():
            self._close()
        else:
            self._set_timer(loop.call_at(quiet_until, self._close))

    def _close(self) -> None:
        """Close, waiting a bounded time for a TLS goodbye (and the last bytes to leave)."""
        if self._stage in (Stage.CLOSING, Stage.CLOSED):
            return
        self._stage = Stage.CLOSING
        transport = self._transport_now()
        transport.close()
        self._set_timer(asyncio.get_running_loop().call_later(CLOSE_SECONDS, transport.abort))

    def _abort(self) -> None:
        if self._transport is not None and self._stage is not Stage.CLOSED:
            self._transport.abort()

    def _expired(self) -> None:
        log.debug("%s: deadline passed", self._peer())
        self._abort()

    def _expire_in(self, seconds: float) -> None:
        self._set_timer(asyncio.get_running_loop().call_later(seconds, self._expired))

    def _set_timer(self, timer: asyncio.TimerHandle) -> None:
        self._cancel_timer()
        self._timer = timer

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _transport_now(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def _peer(self) -> str:
        return self._record.peer


async def converse(service: Service, sock: socket.socket, record: Connection, due: float) -> None:
    """Give a connection that spoke (see `lobby`) its transport and conversation."""
    conversation = Conversation(service, record, due)
    try:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: conversation, sock)
    except OSError:  # gone before its transport was made
        service.table.close(record)
        raise


async def answer_for(request: h11.Request, peer: str, service: Service) -> tuple[Answer, bool]:
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
