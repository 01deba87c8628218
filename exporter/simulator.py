"""A fake Notte API on loopback: `--demo`, the tests and the benchmarks talk to it.

`SimulatedNotte` is the world: sessions as the raw JSON objects the API
returns, a seeded random generator and an injectable clock, so a seed and a
controlled clock give the same world every time. `tick()` lets sessions live:
traffic and steps grow, idle timers run, sessions end as closed, error or
timed_out, and new ones start. Faults (status codes, Retry-After, hangs, slow
or non-JSON bodies, per endpoint, for N requests or until cleared) and a
request log serve the fault-injection tests. `SimulatorServer` serves the two
endpoints over HTTP with bearer auth and paging.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

BROWSERS = ("chromium", "chrome", "firefox", "chrome-nightly", "chrome-turbo")
ERRORS = (
    "Browser crashed: Target closed",
    "Navigation timeout of 30000 ms exceeded",
    "net::ERR_CONNECTION_RESET at https://example.com/checkout",
    "Proxy authentication failed",
)
ENDED = ("closed", "error", "timed_out")
MAX_PAGE_SIZE = 1000


def iso(seconds: float) -> str:
    """Unix seconds as the API's ISO-8601 date-time."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_duration(seconds: float) -> str:
    return f"PT{max(seconds, 0.0):.6f}S"


@dataclass
class Fault:
    """An injected misbehaviour for the next `count` matching requests (None: until cleared)."""

    endpoint: str = "any"
    status: int | None = None
    retry_after: str | None = None
    hang: float = 0.0
    slow_body: float = 0.0
    body: bytes | None = None
    count: int | None = None

    def matches(self, endpoint: str) -> bool:
        return self.endpoint in ("any", endpoint) and (self.count is None or self.count > 0)


@dataclass(frozen=True)
class RequestRecord:
    endpoint: str
    path: str
    query: dict[str, str]
    status: int
    authorised: bool


@dataclass
class _Session:
    data: dict[str, Any]
    system: bool = False
    created: float = 0.0
    accessed: float = 0.0


@dataclass
class _Faults:
    rules: list[Fault] = field(default_factory=list)

    def take(self, endpoint: str) -> Fault | None:
        for rule in self.rules:
            if rule.matches(endpoint):
                if rule.count is not None:
                    rule.count -= 1
                return rule
        return None


class SimulatedNotte:
    """The simulated world of sessions; every method is thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        target_active: int = 12,
    ) -> None:
        self._rng = random.Random(seed)
        self._clock = clock
        self._target_active = target_active
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._raw_items: list[Any] = []
        self._faults = _Faults()
        self._log: list[RequestRecord] = []

    # -- building the world --------------------------------------------------
    def add_session(
        self,
        session_id: str | None = None,
        *,
        status: str = "active",
        system: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            session_id = session_id or f"sess-{self._rng.getrandbits(48):012x}"
            if status == "active":
                data = self._new_session(session_id, now)
            else:  # an ended session lived and ended in the past
                started = now - self._rng.uniform(120, 900)
                data = self._new_session(session_id, started)
                self._finish(data, status, started + self._rng.uniform(5, 110))
            data.update(fields)
            self._sessions[session_id] = _Session(data, system, now, now)
            return dict(data)

    def populate(self, *, active: int, ended: int = 0) -> None:
        """`active` live sessions, and `ended` ones spread over closed, error and timed_out."""
        for _ in range(active):
            self.add_session()
        for index in range(ended):
            self.add_session(status=ENDED[index % len(ENDED)])

    def update_session(self, session_id: str, **fields: Any) -> None:
        with self._lock:
            self._sessions[session_id].data.update(fields)

    def end_session(
        self, session_id: str, status: str = "closed", error: str | None = None
    ) -> None:
        with self._lock:
            data = self._sessions[session_id].data
            self._finish(data, status, self._clock(), error)

    def delete_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def add_raw_list_item(self, item: Any) -> None:
        with self._lock:
            self._raw_items.append(item)

    def clear_raw_list_items(self) -> None:
        with self._lock:
            self._raw_items.clear()

    def session(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._sessions.get(session_id)
            return dict(found.data) if found else None

    def session_ids(self, status: str | None = None) -> list[str]:
        with self._lock:
            return [sid for sid, s in self._sessions.items() if status in (None, s.data["status"])]

    # -- life ------------------------------------------------------------------
    def tick(self, seconds: float) -> None:
        """Advance the world's life by `seconds` (timestamps come from the clock)."""
        with self._lock:
            now = self._clock()
            active = [s for s in self._sessions.values() if s.data["status"] == "active"]
            for session in active:
                self._live(session, seconds, now)
            alive = sum(1 for s in self._sessions.values() if s.data["status"] == "active")
            births = max(0, self._target_active - alive)
            births += 1 if self._rng.random() < seconds / 20 else 0
            for _ in range(births):
                sid = f"sess-{self._rng.getrandbits(48):012x}"
                self._sessions[sid] = _Session(self._new_session(sid, now), False, now, now)

    def _live(self, session: _Session, seconds: float, now: float) -> None:
        data = session.data
        if self._rng.random() < min(1.0, seconds / 4):  # busy: traffic, a step, an access
            data["network_request_bytes"] += self._rng.randint(200, 20_000)
            data["network_response_bytes"] += self._rng.randint(2_000, 400_000)
            if self._rng.random() < 0.5:
                data["steps"].append({"action": "goto", "at": iso(now)})
            if self._rng.random() < 0.6:
                data["last_accessed_at"] = iso(now)
                session.accessed = now
        idle_deadline = session.accessed + data["idle_timeout_minutes"] * 60
        max_deadline = session.created + data["max_duration_minutes"] * 60
        roll = self._rng.random() * 60 / max(seconds, 1e-9)
        if now >= idle_deadline or now >= max_deadline:
            self._finish(data, "timed_out", now)
        elif roll < 1.2:
            self._finish(data, "closed", now)
        elif roll < 1.6:
            self._finish(data, "error", now, self._rng.choice(ERRORS))

    def _new_session(self, session_id: str, now: float) -> dict[str, Any]:
        rng = self._rng
        return {
            "session_id": session_id,
            "status": "active",
            "created_at": iso(now),
            "last_accessed_at": iso(now),
            "closed_at": None,
            "idle_timeout_minutes": rng.choice([1, 2, 3, 5]),
            "max_duration_minutes": rng.choice([5, 15, 30]),
            "duration": None,
            "steps": [],
            "error": None,
            "proxies": rng.random() < 0.3,
            "browser_type": rng.choice(BROWSERS),
            "use_file_storage": rng.random() < 0.2,
            "network_request_bytes": 0,
            "network_response_bytes": 0,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) notte-simulator",
            "viewport_width": 1280,
            "viewport_height": 720,
            "headless": rng.random() < 0.8,
            "solve_captchas": rng.choice([True, False, None]),
            "cdp_url": f"wss://cdp.notte.invalid/{session_id}",
            "viewer_url": f"https://viewer.notte.invalid/{session_id}",
            "web_bot_auth": rng.random() < 0.1,
        }

    @staticmethod
    def _finish(data: dict[str, Any], status: str, now: float, error: str | None = None) -> None:
        created = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")).timestamp()
        data.update(
            status=status,
            closed_at=iso(now),
            duration=iso_duration(now - created),
            error=error if status == "error" and error else data.get("error"),
        )
        if status == "error" and not data["error"]:
            data["error"] = ERRORS[0]

    # -- serving ---------------------------------------------------------------
    def list_page(
        self, *, page: int, page_size: int, only_active: bool, include_system: bool
    ) -> tuple[list[Any], int]:
        """One page of the list (and the total), in a stable order."""
        with self._lock:
            items: list[Any] = [
                dict(s.data)
                for s in self._sessions.values()
                if (not only_active or s.data["status"] == "active")
                and (include_system or not s.system)
            ]
            items += self._raw_items
        start = (page - 1) * page_size
        return items[start : start + page_size], len(items)

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.rules.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.rules.clear()

    def take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            return self._faults.take(endpoint)

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def requests_total(self, endpoint: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self._log if endpoint in (None, r.endpoint))

    def reset_requests(self) -> None:
        with self._lock:
            self._log.clear()


class SimulatorServer:
    """Serves a `SimulatedNotte` on 127.0.0.1 (port 0: a free one)."""

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
        self.world = world
        self.api_key = api_key
        self.list_shape = list_shape
        self.released = threading.Event()
        self._tick_interval = tick_interval
        self._httpd = _SimulatorHTTPServer((host, port), _SimulatorHandler, self)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._spawn(self._httpd.serve_forever, "simulator-http")
        if self._tick_interval:
            self._spawn(self._tick_forever, "simulator-life")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick_forever(self) -> None:
        assert self._tick_interval is not None
        while not self.released.wait(self._tick_interval):
            self.world.tick(self._tick_interval)

    def stop(self) -> None:
        """Release hanging answers, stop serving and ticking; idempotent."""
        if self.released.is_set():
            return
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=2)

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


class _SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Any, owner: SimulatorServer) -> None:
        super().__init__(address, handler)
        self.owner = owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is expected in fault tests."""


class _SimulatorHandler(BaseHTTPRequestHandler):
    server: _SimulatorHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        endpoint, session_id = _route(url.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        authorised = self.headers.get("Authorization") == f"Bearer {owner.api_key}"
        fault = owner.world.take_fault(endpoint) if endpoint != "other" else None
        status, body, headers = self._answer(endpoint, session_id, query, authorised, fault)
        owner.world.record(RequestRecord(endpoint, url.path, query, status, authorised))
        if fault is not None and fault.hang and owner.released.wait(fault.hang):
            return
        self._send(status, body, headers, fault.slow_body if fault else 0.0)

    def _answer(
        self,
        endpoint: str,
        session_id: str,
        query: dict[str, str],
        authorised: bool,
        fault: Fault | None,
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Retry-After": fault.retry_after} if fault and fault.retry_after else {}
        if fault is not None and fault.status is not None:
            body = fault.body if fault.body is not None else _json({"detail": "injected"})
            return fault.status, body, headers
        if endpoint == "other":
            return 404, _json({"detail": "Not Found"}), headers
        if not authorised:
            return 401, _json({"detail": "Invalid API key"}), headers
        status, body = self._get(session_id) if endpoint == "get_session" else self._list(query)
        if fault is not None and fault.body is not None:
            body = fault.body
        return status, body, headers

    def _get(self, session_id: str) -> tuple[int, bytes]:
        found = self.server.owner.world.session(session_id)
        if found is None:
            return 404, _json({"detail": "Session not found"})
        return 200, _json(found)

    def _list(self, query: dict[str, str]) -> tuple[int, bytes]:
        try:
            page = int(query.get("page", "1"))
            page_size = int(query.get("page_size", "10"))
        except ValueError:
            return 422, _json({"detail": "page and page_size must be integers"})
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            return 422, _json({"detail": "page or page_size out of range"})
        owner = self.server.owner
        items, total = owner.world.list_page(
            page=page,
            page_size=page_size,
            only_active=query.get("only_active") == "true",
            include_system=query.get("include_system") == "true",
        )
        if owner.list_shape == "list":
            return 200, _json(items)
        has_next = page * page_size < total
        body = {"items": items, "page": page, "page_size": page_size, "total": total}
        return 200, _json({**body, "has_next": has_next})

    def _send(self, status: int, body: bytes, headers: dict[str, str], slow: float) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not slow:
            self.wfile.write(body)
            return
        chunks = max(1, min(len(body), 10))
        size = -(-len(body) // chunks)
        for start in range(0, len(body), size):
            if self.server.owner.released.wait(slow / chunks):
                return
            self.wfile.write(body[start : start + size])
            self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is kept in the world instead."""


def _route(path: str) -> tuple[str, str]:
    if path == "/sessions":
        return "list_sessions", ""
    if path.startswith("/sessions/") and len(path) > len("/sessions/"):
        return "get_session", unquote(path[len("/sessions/") :])
    return "other", ""


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
