"""The simulated Notte world: sessions that live, faults to inject, a request log.

`SimulatedNotte` keeps sessions as the raw JSON objects the API returns, a
seeded random generator and an injectable clock, so a seed and a controlled
clock give the same world every time. `tick()` lets sessions live: traffic and
steps grow, idle timers run, sessions end as closed, error or timed_out, and
new ones start. Faults (status codes, Retry-After, hangs, slow or non-JSON
bodies, per endpoint, for N requests or until cleared) and a request log serve
the fault-injection tests.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.labels import ENDPOINTS

BROWSERS = ("chromium", "chrome", "firefox", "chrome-nightly", "chrome-turbo")
ERRORS = (
    "Browser crashed: Target closed",
    "Navigation timeout of 30000 ms exceeded",
    "net::ERR_CONNECTION_RESET at https://shop.example.com/checkout",
    "Proxy authentication failed (407)",
)
STEP_ACTIONS = ("goto", "click", "fill", "scroll", "scrape", "wait")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"
ENDED = ("closed", "error", "timed_out")
MAX_PAGE_SIZE = 1000
LIST_ORDERS = ("newest", "oldest", "shuffled")
MAX_STEPS = 200
IDLE_TIMEOUTS = ((1, 2, 3, 5), (3, 2, 3, 1))  # minutes, weights
MAX_DURATIONS = ((5, 15, 30), (1, 6, 2))

# Rates per second of world time for one session. An in-use session works
# about every 2 s and ends after ~45 s on average: closed by its client,
# crashed, or abandoned, after which its idle timer runs out (timed_out).
# With a dozen sessions, a demo shows all three endings within a minute or two.
ACTIVITY_RATE = 0.5
END_RATE = 1 / 45
FATES = (("closed", "error", "abandoned"), (50, 25, 25))
BIRTH_RATE = 0.3  # for each session missing from the target population
SURGE_RATE = 1 / 30  # an extra session now and then, so the population hovers
POPULATED_ABANDONED = 0.3


def iso(seconds: float) -> str:
    """Unix seconds as the API's ISO-8601 date-time."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    return stamp.removesuffix("+00:00") + "Z"  # isoformat: several times faster than strftime


def iso_duration(seconds: float) -> str:
    """Seconds as the API's ISO-8601 duration, e.g. PT41.286072S."""
    return f"PT{max(seconds, 0.0):.6f}S"


def parse_timestamp(value: Any) -> float | None:
    """Unix seconds from an ISO date-time (or a number); None for injected nonsense."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _minutes(value: Any) -> float | None:
    """A timeout in minutes, or None when the field holds something else."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _chance(rate: float, seconds: float) -> float:
    """Probability that an event of this rate happens within `seconds`."""
    return 1.0 - math.exp(-rate * max(seconds, 0.0))


@dataclass
class Fault:
    """A misbehaviour for the next `count` matching requests (None: until cleared)."""

    endpoint: str = "any"
    status: int | None = None
    retry_after: str | None = None
    hang: float = 0.0
    slow_body: float = 0.0
    body: bytes | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.endpoint not in ("any", *ENDPOINTS):
            raise ValueError(f"Fault endpoint must be 'any' or one of {ENDPOINTS}")

    def matches(self, endpoint: str) -> bool:
        live = self.count is None or self.count > 0
        return live and self.endpoint in ("any", endpoint)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it; `path` is raw (still percent-encoded)."""

    endpoint: str
    path: str
    query: dict[str, str]
    status: int
    authorised: bool


@dataclass
class _Session:
    """A session's JSON plus what the life needs that the JSON may not say reliably."""

    session_id: str
    data: dict[str, Any]
    system: bool = False
    abandoned: bool = False
    created: float | None = None
    accessed: float | None = None
    order: tuple[bool, float, str] = (True, 0.0, "")

    def reindex(self) -> None:
        """Re-read the timestamps after the JSON changed (odd values give None)."""
        self.created = parse_timestamp(self.data.get("created_at"))
        self.accessed = parse_timestamp(self.data.get("last_accessed_at"))
        self.order = (self.created is None, self.created or 0.0, self.session_id)

    @property
    def active(self) -> bool:
        return bool(self.data.get("status") == "active")

    def snapshot(self) -> dict[str, Any]:
        """A copy safe to serialise outside the lock (the life only appends to lists)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self.data.items()}


class SimulatedNotte:
    """The simulated world of sessions; every public method is thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        target_active: int = 12,
        list_order: str = "oldest",
    ) -> None:
        if list_order not in LIST_ORDERS:
            raise ValueError(f"list_order must be one of {LIST_ORDERS}")
        self._list_order = list_order
        self._rng = random.Random(seed)
        self._clock = clock
        self._target_active = target_active
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._active: dict[str, None] = {}  # insertion-ordered set, for a cheap tick
        self._raw_items: list[Any] = []
        self._listings: dict[tuple[bool, bool], list[_Session]] = {}
        self._faults: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._counts: Counter[str] = Counter()

    # -- building the world ---------------------------------------------------
    def add_session(
        self,
        session_id: str | None = None,
        *,
        status: str = "active",
        system: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        """Add a realistic session (ended ones ended in the past); `fields` override."""
        with self._lock:
            now = self._clock()
            sid = session_id if session_id is not None else self._new_id()
            session = _Session(sid, self._new_data(sid, now), system)
            if status in ENDED:
                self._end_in_past(session, status, now)
            else:
                session.data["status"] = status
            session.data.update(copy.deepcopy(fields))
            self._store(session)
            return session.snapshot()

    def populate(self, *, active: int, ended: int = 0) -> None:
        """`active` sessions of various ages, and `ended` ones spread over the end statuses."""
        with self._lock:
            now = self._clock()
            for _ in range(active):
                self._store(self._aged_session(now))
            for index in range(ended):
                session = _Session(sid := self._new_id(), self._new_data(sid, now))
                self._end_in_past(session, ENDED[index % len(ENDED)], now)
                self._store(session)

    def update_session(self, session_id: str, **fields: Any) -> None:
        """Overwrite raw fields with any value, to feed the exporter odd data."""
        with self._lock:
            session = self._sessions[session_id]
            session.data.update(copy.deepcopy(fields))
            self._store(session)

    def end_session(
        self, session_id: str, status: str = "closed", error: str | None = None
    ) -> None:
        """End a session now, as the API would after a close, a crash or a timeout."""
        with self._lock:
            session = self._sessions[session_id]
            self._finish(session, status, self._clock(), error)
            self._store(session)

    def delete_session(self, session_id: str) -> None:
        """Forget a session: GET answers 404 and the list omits it."""
        with self._lock:
            self._sessions.pop(session_id, None)
            self._active.pop(session_id, None)
            self._listings.clear()

    def add_raw_list_item(self, item: Any) -> None:
        """Append any JSON value to every list answer, until cleared."""
        with self._lock:
            self._raw_items.append(copy.deepcopy(item))

    def clear_raw_list_items(self) -> None:
        with self._lock:
            self._raw_items.clear()

    # -- reading ---------------------------------------------------------------
    def session(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._sessions.get(session_id)
            return found.snapshot() if found else None

    def session_ids(self, status: str | None = None) -> list[str]:
        with self._lock:
            return [
                sid
                for sid, s in self._sessions.items()
                if status is None or s.data.get("status") == status
            ]

    def list_page(
        self, *, page: int, page_size: int, only_active: bool, include_system: bool
    ) -> list[Any]:
        """One page of the list, ordered by created_at then ID so pages never overlap."""
        return self.page_and_total(
            page=page, page_size=page_size, only_active=only_active, include_system=include_system
        )[0]

    def page_and_total(
        self, *, page: int, page_size: int, only_active: bool, include_system: bool
    ) -> tuple[list[Any], int]:
        """A page and the list's length, read under one lock so they agree."""
        with self._lock:
            listing = self._listing(only_active, include_system)
            total = len(listing) + len(self._raw_items)
            start = (page - 1) * page_size
            end = start + page_size
            items: list[Any] = [s.snapshot() for s in listing[start:end]]
            raw_start, raw_end = max(start - len(listing), 0), max(end - len(listing), 0)
            items += self._raw_items[raw_start:raw_end]
            return items, total

    def _listing(self, only_active: bool, include_system: bool) -> list[_Session]:
        """The sorted list, cached until the next change, so paging is O(page)."""
        key = (only_active, include_system)
        if key not in self._listings:
            chosen = (
                s
                for s in self._sessions.values()
                if (s.active or not only_active) and (include_system or not s.system)
            )
            self._listings[key] = sorted(chosen, key=self._list_key)
        return self._listings[key]

    def _list_key(self, session: _Session) -> tuple[Any, ...]:
        """Oldest or newest first by created_at (then ID), or a stable order unrelated to time."""
        if self._list_order == "shuffled":
            return (hashlib.sha256(session.session_id.encode()).digest(),)
        if self._list_order == "newest":
            return (session.created is None, -(session.created or 0.0), session.session_id)
        return session.order

    # -- life ------------------------------------------------------------------
    def tick(self, seconds: float) -> None:
        """Live `seconds` of world time; events are drawn from the rng, times from the clock."""
        with self._lock:
            now = self._clock()
            for sid in list(self._active):
                session = self._sessions[sid]
                self._live(session, seconds, now)
                if not session.active:
                    del self._active[sid]
            for _ in range(self._births(seconds)):
                self._store(_Session(sid := self._new_id(), self._new_data(sid, now)))
            self._listings.clear()

    def _live(self, session: _Session, seconds: float, now: float) -> None:
        """One session's share of a tick: work, then perhaps an ending."""
        rng = self._rng
        if not session.abandoned:
            if rng.random() < _chance(ACTIVITY_RATE, seconds):
                self._work(session, now)
            if rng.random() < _chance(END_RATE, seconds):
                fate = rng.choices(FATES[0], FATES[1])[0]
                if fate == "abandoned":
                    session.abandoned = True
                else:
                    self._finish(session, fate, now, rng.choice(ERRORS))
                    return
        deadline = self._deadline(session)
        if deadline is not None and now >= deadline:
            self._finish(session, "timed_out", now, None)

    def _work(self, session: _Session, now: float) -> None:
        """Traffic, maybe a step, maybe an access; fields holding odd values are left alone."""
        data, rng = session.data, self._rng
        for name, top in (("network_request_bytes", 20_000), ("network_response_bytes", 400_000)):
            if type(data.get(name)) is int:
                data[name] += rng.randint(top // 100, top)
        steps = data.get("steps")
        if rng.random() < 0.5 and isinstance(steps, list) and len(steps) < MAX_STEPS:
            steps.append({"type": rng.choice(STEP_ACTIONS), "timestamp": iso(now)})
        if rng.random() < 0.7:
            data["last_accessed_at"] = iso(now)
            session.accessed = now

    @staticmethod
    def _deadline(session: _Session) -> float | None:
        """When the API would time the session out: idle or max duration, whichever first."""
        data = session.data
        idle = _minutes(data.get("idle_timeout_minutes", data.get("timeout_minutes")))
        longest = _minutes(data.get("max_duration_minutes"))
        deadlines = []
        if idle is not None and session.accessed is not None:
            deadlines.append(session.accessed + idle * 60)
        if longest is not None and session.created is not None:
            deadlines.append(session.created + longest * 60)
        return min(deadlines, default=None)

    def _births(self, seconds: float) -> int:
        """New sessions: refill towards the target, plus a surge now and then."""
        missing = max(self._target_active - len(self._active), 0)
        births = sum(self._rng.random() < _chance(BIRTH_RATE, seconds) for _ in range(missing))
        return births + (self._rng.random() < _chance(SURGE_RATE, seconds))

    # -- making sessions -------------------------------------------------------
    def _new_id(self) -> str:
        while (sid := f"sess-{self._rng.getrandbits(48):012x}") in self._sessions:
            pass
        return sid

    def _new_data(self, session_id: str, now: float) -> dict[str, Any]:
        """A fresh active session as the API returns it."""
        rng = self._rng
        return {
            "session_id": session_id,
            "status": "active",
            "created_at": iso(now),
            "last_accessed_at": iso(now),
            "closed_at": None,
            "idle_timeout_minutes": rng.choices(*IDLE_TIMEOUTS)[0],
            "max_duration_minutes": rng.choices(*MAX_DURATIONS)[0],
            "duration": None,
            "steps": [],
            "error": None,
            "proxies": rng.random() < 0.3,
            "browser_type": rng.choice(BROWSERS),
            "use_file_storage": rng.random() < 0.2,
            "network_request_bytes": 0,
            "network_response_bytes": 0,
            "user_agent": USER_AGENT,
            "viewport_width": rng.choice((1280, 1366, 1920)),
            "viewport_height": rng.choice((720, 768, 1080)),
            "headless": rng.random() < 0.8,
            "solve_captchas": rng.choice((True, False, None)),
            "cdp_url": f"wss://cdp.notte.invalid/{session_id}",
            "viewer_url": f"https://viewer.notte.invalid/{session_id}",
            "web_bot_auth": rng.random() < 0.1,
        }

    def _aged_session(self, now: float) -> _Session:
        """An active session that started a while ago, so a fresh world looks lived-in."""
        rng = self._rng
        session = _Session(sid := self._new_id(), self._new_data(sid, now))
        data = session.data
        age = rng.uniform(0, 240)
        idle_seconds = data["idle_timeout_minutes"] * 60
        session.abandoned = rng.random() < POPULATED_ABANDONED
        quiet = rng.uniform(0, idle_seconds * 0.95) if session.abandoned else rng.uniform(0, 3)
        data.update(
            created_at=iso(now - age),
            last_accessed_at=iso(now - min(quiet, age)),
            network_request_bytes=int(age * rng.uniform(100, 5_000)),
            network_response_bytes=int(age * rng.uniform(5_000, 100_000)),
            steps=[
                {"type": rng.choice(STEP_ACTIONS), "timestamp": iso(now - age + i * 30)}
                for i in range(int(age // 30))
            ],
        )
        return session

    def _end_in_past(self, session: _Session, status: str, now: float) -> None:
        """End a session long enough ago that an exporter starting now sees it as history."""
        rng, data = self._rng, session.data
        started = now - rng.uniform(900, 1800)
        last_access = started + rng.uniform(5, 110)
        data.update(created_at=iso(started), last_accessed_at=iso(last_access))
        session.reindex()
        ended = last_access + (data["idle_timeout_minutes"] * 60 if status == "timed_out" else 0)
        self._finish(session, status, ended, rng.choice(ERRORS))

    @staticmethod
    def _finish(session: _Session, status: str, when: float, error: str | None) -> None:
        """Set the fields an ending sets; `error` only lands on an error ending."""
        data = session.data
        data.update(status=status, closed_at=iso(when))
        if session.created is not None:
            data["duration"] = iso_duration(when - session.created)
        if status == "error":
            data["error"] = error or data.get("error") or ERRORS[0]

    def _store(self, session: _Session) -> None:
        """(Re)index a session after any change; drops the cached listings."""
        session.reindex()
        self._sessions[session.session_id] = session
        if session.active:
            self._active[session.session_id] = None
        else:
            self._active.pop(session.session_id, None)
        self._listings.clear()

    # -- faults and accounting (the server's side) -----------------------------
    def inject(self, fault: Fault) -> None:
        """Add a fault (a copy: its count runs down here, not in the caller's object)."""
        with self._lock:
            self._faults.append(dataclasses.replace(fault))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, endpoint: str) -> Fault | None:
        """The first live fault for this endpoint, counted as used."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(endpoint):
                    if fault.count is not None:
                        fault.count -= 1
                    return dataclasses.replace(fault)
            return None

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._counts[record.endpoint] += 1

    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def requests_total(self, endpoint: str | None = None) -> int:
        with self._lock:
            return len(self._log) if endpoint is None else self._counts[endpoint]

    def reset_requests(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()
