"""The simulated Notte API over HTTP/1.1 on loopback: the sessions' two endpoints and the
account's (functions, runs, the functions runtime, usage), bearer auth, paging, and the
faults the world says to inject.

It answers as the API's FastAPI app does: the list at `/sessions/` (and a 307
from `/sessions` to it, as Starlette's `redirect_slashes`), query parameters
validated as `ListSessionsParametersQuery`, `ListFunctionsParametersQuery` and
`ListFunctionRunsByFunctionIdParametersQuery` (422 with FastAPI's list `detail`),
and pages of `{items, page, page_size, has_next, has_previous}`."""

from __future__ import annotations

import contextlib
import gzip
import hmac
import json
import logging
import math
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field, ValidationError

from exporter.labels import (
    FUNCTIONS_HEALTH,
    GET_FUNCTION,
    GET_FUNCTION_RUN,
    GET_SESSION,
    GET_USAGE,
    LIST_FUNCTION_RUNS,
    LIST_FUNCTIONS,
    LIST_SESSIONS,
)
from exporter.settings import MAX_PAGE_SIZE
from exporter.simulator.world import Fault, RequestRecord, SimulatedNotte

logger = logging.getLogger(__name__)
SERVE_POLL_INTERVAL = 0.05  # how quickly serve_forever notices shutdown()
LIST_PATH = "/sessions/"
SESSION_PREFIX = "/sessions/"
FUNCTIONS_PATH = "/functions/"
FUNCTIONS_HEALTH_PATH = "/functions/health"
USAGE_PATH = "/usage"


class ListQuery(BaseModel):
    """`ListSessionsParametersQuery` as the API validates it: FastAPI reads query
    parameters with pydantic's lax mode, so pydantic here answers exactly as there."""

    page: int = Field(1, ge=1)
    page_size: int = Field(10, ge=1, le=MAX_PAGE_SIZE)
    only_active: bool = True
    only_current_token: bool = False
    include_system: bool = True


class RunsQuery(ListQuery):
    """`ListFunctionRunsByFunctionIdParametersQuery`: runs of any status by default."""

    only_active: bool = False
    source: Literal["console", "anything", "cli", "node-sdk", "python-sdk", "rest-api"] | None = (
        None
    )


class RunQuery(BaseModel):
    """`FunctionRunGetMetadataParametersQuery`."""

    payload_mode: Literal["inline", "references"] = "inline"


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class SimulatorServer:
    """Serves a `SimulatedNotte` over HTTP on loopback (port 0: a free one)."""

    def __init__(
        self,
        world: SimulatedNotte,
        *,
        api_key: str = "demo-key",
        host: str = "127.0.0.1",
        port: int = 0,
        list_shape: str = "items",
        tick_interval: float | None = None,
    ) -> None:
        if list_shape not in ("items", "list"):
            raise ValueError("list_shape must be 'items' or 'list'")
        self.world = world
        self.api_key = api_key
        self.list_shape = list_shape
        self._address = (host, port)
        self._tick_interval = tick_interval
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the simulator is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread; tick the world on another if asked."""
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("a simulator server starts once")
        self._httpd = _HTTPServer(self._address, self)
        self._spawn(self._serve, "simulator-http")
        if self._tick_interval:
            self._spawn(self._tick_forever, "simulator-life")

    def _serve(self) -> None:
        assert self._httpd is not None
        self._httpd.serve_forever(poll_interval=SERVE_POLL_INTERVAL)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick_forever(self) -> None:
        """Real time drives the life; a failing tick is logged, not fatal to the demo."""
        interval = self._tick_interval or 1.0
        while not self._stopping.wait(interval):
            try:
                self.world.tick(interval)
            except Exception:
                logger.exception("simulated tick failed")

    def stop(self) -> None:
        """Release hangs, stop ticking and serving, drop open connections; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=2)

    def pause(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when the server is stopping (the wait was cut short)."""
        return self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def authorised(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        expected = self.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), expected)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- answering -------------------------------------------------------------
    def answer(
        self,
        endpoint: str,
        ids: tuple[str, ...],
        query: dict[str, str],
        authorised: bool,
        fault: Fault | None,
    ) -> _Answer:
        """What to answer: an injected status first, then routing, auth and the world."""
        headers = {"Retry-After": fault.retry_after} if fault and fault.retry_after else {}
        if fault is not None and fault.status is not None:
            body = fault.body if fault.body is not None else _json({"detail": "Injected fault"})
            return _Answer(fault.status, body, headers)
        status, body = self._route(endpoint, ids, query, authorised)
        if fault is not None and fault.body is not None:
            body = fault.body
        return _Answer(status, body, headers)

    def redirect(self, host: str | None, query: str) -> _Answer:
        """Starlette's `redirect_slashes`: 307 to the same URL with the slash, before any
        endpoint (so before authentication), with an empty body."""
        where = f"http://{host or f'127.0.0.1:{self.port}'}{LIST_PATH}"
        return _Answer(307, b"", {"Location": f"{where}?{query}" if query else where})

    def _route(
        self, endpoint: str, ids: tuple[str, ...], query: dict[str, str], authorised: bool
    ) -> tuple[int, bytes]:
        if endpoint == "other":
            return 404, _json({"detail": "Not Found"})
        if not authorised:
            return 401, _json({"detail": "Invalid API key"})
        if endpoint == GET_SESSION:
            found = self.world.session(ids[0])
            return (200, _json(found)) if found else (404, _json({"detail": "Session not found"}))
        if endpoint == LIST_SESSIONS:
            return self._list(query)
        return self._account(endpoint, ids, query)

    def _account(
        self, endpoint: str, ids: tuple[str, ...], query: dict[str, str]
    ) -> tuple[int, bytes]:
        """The functions, runs, runtime and usage endpoints."""
        world = self.world
        found: Any
        try:
            if endpoint == LIST_FUNCTIONS:
                params = ListQuery.model_validate(query)
                page = world.functions_page(
                    page=params.page, page_size=params.page_size, only_active=params.only_active
                )
                return 200, _page(page, params.page, params.page_size)
            if endpoint == LIST_FUNCTION_RUNS:
                runs_query = RunsQuery.model_validate(query)
                runs = world.runs_page(
                    ids[0],
                    page=runs_query.page,
                    page_size=runs_query.page_size,
                    only_active=runs_query.only_active,
                )
                if runs is None:
                    return 404, _json({"detail": "Function not found"})
                return 200, _page(runs, runs_query.page, runs_query.page_size)
            if endpoint == GET_FUNCTION_RUN:
                inline = RunQuery.model_validate(query).payload_mode == "inline"
                found = world.run(ids[0], ids[1], inline=inline)
                return (200, _json(found)) if found else (404, _json({"detail": "Run not found"}))
        except ValidationError as exc:
            return 422, _json({"detail": _fastapi_errors(exc)})
        if endpoint == GET_FUNCTION:
            found = world.function(ids[0])
            return (200, _json(found)) if found else (404, _json({"detail": "Function not found"}))
        if endpoint == FUNCTIONS_HEALTH:
            return 200, _json(world.runtime_health())
        found = world.usage()
        return (404, _json({"detail": "Not Found"})) if found is None else (200, _json(found))

    def _list(self, query: dict[str, str]) -> tuple[int, bytes]:
        """The list endpoint: FastAPI's validation (422), then a page in either shape."""
        try:
            params = ListQuery.model_validate(query)
        except ValidationError as exc:
            return 422, _json({"detail": _fastapi_errors(exc)})
        items, has_next = self.world.page(
            page=params.page,
            page_size=params.page_size,
            only_active=params.only_active,
            include_system=params.include_system,
        )
        if self.list_shape == "list":
            return 200, _json(items)
        return 200, _page((items, has_next), params.page, params.page_size)


class _HTTPServer(ThreadingHTTPServer):
    """Keeps hold of open connections so stop() can cut keep-alive clients off."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: SimulatorServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Shut every open connection, so no handler answers after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients going away mid-answer are normal in fault tests; anything else is a bug."""
        if not isinstance(sys.exc_info()[1], OSError):
            logger.exception("simulator failed to answer %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    # Headers and body are two writes; without this the body waits ~40 ms for
    # the client's delayed ACK, which would dominate every simulated request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._counted(routed=True)

    def _other_method(self) -> None:
        """Other methods are unknown routes; their body is unread, so the connection closes."""
        self.close_connection = True
        self._counted(routed=False)

    def _counted(self, *, routed: bool) -> None:
        world = self.server.owner.world
        world.request_began()
        try:
            self._serve(routed=routed)
        finally:
            world.request_ended()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _other_method

    def _serve(self, *, routed: bool) -> None:
        owner = self.server.owner
        if owner.stopping:
            self.close_connection = True
            return
        target = urlsplit(self.path)
        endpoint, ids = _route(target.path) if routed else ("other", ())
        query = {k: v[-1] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
        authorised = owner.authorised(self.headers.get("Authorization"))
        redirect = routed and target.path == LIST_PATH.rstrip("/")
        fault = owner.world.take_fault(endpoint) if endpoint != "other" and not redirect else None
        if redirect:
            answer = owner.redirect(self.headers.get("Host"), target.query)
        else:
            answer = owner.answer(endpoint, ids, query, authorised, fault)
        owner.world.record(RequestRecord(endpoint, target.path, query, answer.status, authorised))
        if fault is not None and fault.hang and owner.pause(fault.hang):
            self.close_connection = True
            return
        self._send(answer, fault)

    def _send(self, answer: _Answer, fault: Fault | None) -> None:
        """The answer, its body shaped by the fault: compressed, repeated, endless or slow."""
        fault = fault or Fault()
        body = gzip.compress(answer.body) if fault.gzip else answer.body
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        if fault.gzip:
            self.send_header("Content-Encoding", "gzip")
        if fault.endless:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body) * fault.repeat))
        for name, value in {**answer.headers, **fault.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault.endless:
            self._endless(body or b" ")
            return
        for _ in range(fault.repeat):
            if self.server.owner.stopping:
                self.close_connection = True
                return
            if not fault.slow_body:
                self.wfile.write(body)
            elif not self._dribble(body, fault.slow_body / fault.repeat):
                return

    def _dribble(self, body: bytes, seconds: float) -> bool:
        """Send the body in small pieces over `seconds`; False if the server stopped first."""
        pieces = max(1, min(len(body), math.ceil(seconds / 0.05)))
        size = max(1, math.ceil(len(body) / pieces))
        for start in range(0, max(len(body), 1), size):
            if self.server.owner.pause(seconds / pieces):
                self.close_connection = True
                return False
            self.wfile.write(body[start : start + size])
            self.wfile.flush()
        return True

    def _endless(self, body: bytes) -> None:
        """`body` as one HTTP chunk after another, never the last one: until the client
        goes away (the write fails) or the server stops."""
        chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n"
        self.close_connection = True
        while not self.server.owner.stopping:
            self.wfile.write(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the world keeps a request log instead."""


def _route(path: str) -> tuple[str, tuple[str, ...]]:
    """Endpoint and the percent-decoded IDs in the path, from the raw path (`/sessions`,
    which only redirects, counts as the list endpoint). `/functions/health` is matched
    before `/functions/{function_id}`, as the API's routes are."""
    if path in (LIST_PATH, LIST_PATH.rstrip("/")):
        return LIST_SESSIONS, ()
    if path.startswith(SESSION_PREFIX):
        return GET_SESSION, (unquote(path[len(SESSION_PREFIX) :]),)
    if path == USAGE_PATH:
        return GET_USAGE, ()
    if path == FUNCTIONS_HEALTH_PATH:
        return FUNCTIONS_HEALTH, ()
    if path == FUNCTIONS_PATH:
        return LIST_FUNCTIONS, ()
    if path.startswith(FUNCTIONS_PATH):
        return _function_route(path[len(FUNCTIONS_PATH) :].split("/"))
    return "other", ()


def _function_route(segments: list[str]) -> tuple[str, tuple[str, ...]]:
    """`{id}`, `{id}/runs/` and `{id}/runs/{run_id}` under `/functions/`."""
    ids = tuple(unquote(segment) for segment in segments)
    if len(ids) == 1 and ids[0]:
        return GET_FUNCTION, ids
    if len(ids) == 3 and ids[0] and ids[1] == "runs" and not ids[2]:
        return LIST_FUNCTION_RUNS, ids[:1]
    if len(ids) == 3 and ids[0] and ids[1] == "runs" and ids[2]:
        return GET_FUNCTION_RUN, (ids[0], ids[2])
    return "other", ()


def _page(page: tuple[list[Any], bool], number: int, size: int) -> bytes:
    """A FastAPI page object: `{items, page, page_size, has_next, has_previous}`."""
    items, has_next = page
    return _json(
        {
            "items": items,
            "page": number,
            "page_size": size,
            "has_next": has_next,
            "has_previous": number > 1,
        }
    )


def _fastapi_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A query validation error as FastAPI's 422 `detail`: a list of objects."""
    return [{**error, "loc": ["query", *error["loc"]]} for error in exc.errors(include_url=False)]


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()
