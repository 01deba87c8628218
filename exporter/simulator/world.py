"""The simulated Notte world: sessions that live, faults to inject, a request log.

`SimulatedNotte` keeps sessions as the raw JSON objects the API returns (shaped
as `notte_sdk._generated.models.SessionResponse`, which the conformance tests
hold it to), a seeded random generator and an injectable clock, so a seed and a
controlled clock give the same world every time. `tick()` lets sessions live:
managed-auth logins finish, traffic and steps grow, idle timers run, sessions
end as closed, error or timed_out (each with its `close_reason`), new ones
start, and now and then one lives only a few seconds, shorter than a poll
interval. Faults (status codes, Retry-After, hangs, slow or non-JSON bodies,
per endpoint, for N requests or until cleared) and a request log serve the
fault-injection tests.
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
from typing import Any, Final

from exporter.labels import (
    ACTIVE,
    AUTHENTICATING,
    CLOSED,
    ENDED_STATUSES,
    ENDPOINTS,
    ERROR,
    ERROR_CLOSE,
    IDLE_TIMEOUT,
    MANUAL,
    MAX_DURATION,
    STATUSES,
    TIMED_OUT,
)
from exporter.simulator.account import SimulatedAccount, unhealthy_runtime

BROWSERS = ("chromium", "chrome", "firefox", "chrome-nightly", "chrome-turbo")
ERRORS = (
    "Browser crashed: Target closed",
    "Navigation timeout of 30000 ms exceeded",
    "net::ERR_CONNECTION_RESET at https://shop.example.com/checkout",
    "Proxy authentication failed (407)",
)
AUTH_ERROR = "Managed auth login failed: invalid credentials"
STEP_ACTIONS = ("goto", "click", "fill", "scroll", "scrape", "wait")
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"
ENDED: Final = ENDED_STATUSES
# Sessions the API lists with only_active=true: every status before an ending.
LIVE: Final = tuple(status for status in STATUSES if status not in ENDED_STATUSES)
# close_reason of an ending that does not depend on which deadline passed.
CLOSE_REASON_OF: Final = {CLOSED: MANUAL, ERROR: ERROR_CLOSE}
LIST_ORDERS: Final = ("newest", "oldest", "shuffled")
MAX_STEPS = 200
IDLE_TIMEOUTS = ((1, 2, 3, 5), (3, 2, 3, 1))  # minutes, weights
MAX_DURATIONS = ((5, 15, 30), (1, 6, 2))

# Rates per second of world time for one session. An in-use session works
# about every 2 s and ends after ~45 s on average: closed by its client,
# crashed, or abandoned, after which its idle timer runs out (timed_out).
# With a dozen sessions, a demo shows all three endings within a minute or two.
ACTIVITY_RATE = 0.5
END_RATE = 1 / 45
FATES = ((CLOSED, ERROR, "abandoned"), (50, 25, 25))
BIRTH_RATE = 0.3  # for each session missing from the target population
SURGE_RATE = 1 / 30  # an extra session now and then, so the population hovers
POPULATED_ABANDONED = 0.3
# A quarter of new sessions wait a few seconds for a managed-auth login; a few
# of those logins fail.
AUTH_SHARE = 0.25
AUTH_RATE = 1 / 3
AUTH_FAILURE = 0.1
# Sessions that live less than a poll interval (an agent whose browser fails at
# start-up): about one every 12 s, most of them errors. Only the exporter's
# sweep of `only_active=false` can see them.
FLASH_RATE = 1 / 12
FLASH_SECONDS = (0.5, 4.0)
FLASH_FATES = ((ERROR, CLOSED), (60, 40))


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
    """A misbehaviour for the next `count` matching requests (None: until cleared).

    The hostile-body modes shape how the answer's body goes out: `gzip`
    compresses it (Content-Encoding: gzip), `repeat` sends it that many times
    back to back, streamed (a 200 MB answer costs the simulator one copy), and
    `endless` sends it in chunks until the client goes away or the server stops.
    `headers` are added to the answer (a Location for a redirect, say).
    """

    endpoint: str = "any"
    status: int | None = None
    retry_after: str | None = None
    hang: float = 0.0
    slow_body: float = 0.0
    body: bytes | None = None
    count: int | None = None
    gzip: bool = False
    repeat: int = 1
    endless: bool = False
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.endpoint not in ("any", *ENDPOINTS):
            raise ValueError(f"Fault endpoint must be 'any' or one of {ENDPOINTS}")
        if self.repeat < 1:
            raise ValueError("Fault repeat must be 1 or more")

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
    abandoned: bool = False
    ends_at: float | None = None  # a short-lived session's planned end
    fate: str = CLOSED  # ...and how it ends
    system: bool = False
    created: float | None = None
    accessed: float | None = None

    def reindex(self) -> None:
        """Re-read what the JSON says after it changed (odd values give None)."""
        self.created = parse_timestamp(self.data.get("created_at"))
        self.accessed = parse_timestamp(self.data.get("last_accessed_at"))
        self.system = self.data.get("system_hidden") is True

    @property
    def live(self) -> bool:
        """Listed with only_active=true and ticked by the life (unknown statuses are neither)."""
        return self.data.get("status") in LIVE

    def snapshot(self) -> dict[str, Any]:
        """A copy safe to serialise outside the lock (the life only appends to lists)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self.data.items()}


class SimulatedNotte:
    """The simulated world of sessions; every public method is thread-safe.

    `list_order` is the order of both listings (`only_active` true and false):
    "newest" (created_at descending), "oldest" (ascending), or "shuffled" (a
    permutation fixed by the seed, in no time order), because the API does not
    document its order and the exporter's sweep must cope with each.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        target_active: int = 12,
        list_order: str = "newest",
    ) -> None:
        if list_order not in LIST_ORDERS:
            raise ValueError(f"list_order must be one of {LIST_ORDERS}")
        self._seed = seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._target_active = target_active
        self._list_order = list_order
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._live: dict[str, None] = {}  # insertion-ordered set, for a cheap tick
        self._raw_items: list[Any] = []
        self._listings: dict[tuple[bool, bool], list[_Session]] = {}
        self._faults: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._counts: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        # Its own random stream: a world without functions lives exactly as before.
        self._account = SimulatedAccount(
            random.Random(f"account-{seed}"),
            clock,
            start_session=self._run_session,
            end_session=self._end_run_session,
        )

    # -- building the world ---------------------------------------------------
    def add_session(
        self,
        session_id: str | None = None,
        *,
        status: str = ACTIVE,
        system: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        """Add a realistic session (ended ones ended in the past); `fields` override."""
        with self._lock:
            now = self._clock()
            sid = session_id if session_id is not None else self._new_id()
            session = _Session(sid, self._new_data(sid, now, system=system))
            if status in ENDED:
                self._end_in_past(session, status, now)
            else:
                session.data["status"] = status
            self._overwrite(session, fields)
            return session.snapshot()

    def populate(self, *, active: int, ended: int = 0, authenticating: int = 0) -> None:
        """`active` sessions of various ages, `authenticating` ones just started, and
        `ended` ones spread over the end statuses."""
        with self._lock:
            now = self._clock()
            for _ in range(active):
                self._store(self._aged_session(now))
            for _ in range(authenticating):
                self._store(self._born(now, authenticating=True))
            for index in range(ended):
                session = _Session(sid := self._new_id(), self._new_data(sid, now))
                self._end_in_past(session, ENDED[index % len(ENDED)], now)
                self._store(session)

    def update_session(self, session_id: str, **fields: Any) -> None:
        """Overwrite raw fields with any value, to feed the exporter odd data."""
        with self._lock:
            self._overwrite(self._sessions[session_id], fields)

    def end_session(
        self,
        session_id: str,
        status: str = CLOSED,
        error: str | None = None,
        *,
        close_reason: str | None = None,
    ) -> None:
        """End a session now, as the API would after a close, a crash or a timeout.

        `close_reason` defaults to what the API gives that ending (for timed_out,
        the deadline that comes first)."""
        with self._lock:
            session = self._sessions[session_id]
            reason = close_reason or self._close_reason(session, status)
            self._finish(session, status, self._clock(), error, reason)
            self._store(session)

    def delete_session(self, session_id: str) -> None:
        """Forget a session: GET answers 404 and the list omits it."""
        with self._lock:
            self._sessions.pop(session_id, None)
            self._live.pop(session_id, None)
            self._listings.clear()

    def add_raw_list_item(self, item: Any) -> None:
        """Append any JSON value to every list answer, until cleared."""
        with self._lock:
            self._raw_items.append(copy.deepcopy(item))

    def clear_raw_list_items(self) -> None:
        with self._lock:
            self._raw_items.clear()

    def _overwrite(self, session: _Session, fields: dict[str, Any]) -> None:
        """Raw fields over a session; the older `timeout_minutes` follows the idle timeout,
        as the API sends both."""
        fields = copy.deepcopy(fields)
        if "idle_timeout_minutes" in fields and "timeout_minutes" not in fields:
            fields["timeout_minutes"] = fields["idle_timeout_minutes"]
        session.data.update(fields)
        self._store(session)

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

    def page(
        self, *, page: int, page_size: int, only_active: bool, include_system: bool
    ) -> tuple[list[Any], bool]:
        """One page of the listing (raw items last) and whether another page follows,
        read under one lock so they agree."""
        with self._lock:
            listing = self._listing(only_active, include_system)
            start = (page - 1) * page_size
            end = start + page_size
            items: list[Any] = [s.snapshot() for s in listing[start:end]]
            raw_start, raw_end = max(start - len(listing), 0), max(end - len(listing), 0)
            items += self._raw_items[raw_start:raw_end]
            return items, end < len(listing) + len(self._raw_items)

    def _listing(self, only_active: bool, include_system: bool) -> list[_Session]:
        """The ordered listing, cached until the next change, so paging is O(page)."""
        key = (only_active, include_system)
        if key not in self._listings:
            chosen = (
                s
                for s in self._sessions.values()
                if (s.live or not only_active) and (include_system or not s.system)
            )
            self._listings[key] = sorted(chosen, key=self._order_key())
        return self._listings[key]

    def _order_key(self) -> Callable[[_Session], tuple[bool, float | bytes, str]]:
        """The sort key of the listing order; sessions without a usable created_at go last."""
        if self._list_order == "shuffled":
            seed = self._seed

            def scattered(s: _Session) -> tuple[bool, bytes, str]:
                digest = hashlib.blake2b(f"{seed}:{s.session_id}".encode(), digest_size=8)
                return False, digest.digest(), s.session_id

            return scattered
        sign = -1.0 if self._list_order == "newest" else 1.0

        def by_creation(s: _Session) -> tuple[bool, float, str]:
            return s.created is None, sign * (s.created or 0.0), s.session_id

        return by_creation

    # -- life ------------------------------------------------------------------
    def tick(self, seconds: float) -> None:
        """Live `seconds` of world time; events are drawn from the rng, times from the clock."""
        with self._lock:
            now = self._clock()
            for sid in list(self._live):
                session = self._sessions[sid]
                self._live_through(session, seconds, now)
                if not session.live:
                    del self._live[sid]
            for _ in range(self._births(seconds)):
                self._store(self._born(now, authenticating=self._rng.random() < AUTH_SHARE))
            if self._rng.random() < _chance(FLASH_RATE, seconds):
                self._store(self._flash(now))
            self._account.tick(seconds)
            self._listings.clear()

    def _live_through(self, session: _Session, seconds: float, now: float) -> None:
        """One session's share of a tick: its end if due (a deadline that passed since
        the last tick comes before any work in it), else a login or work."""
        deadline = self._deadline(session)
        if session.ends_at is not None and now >= session.ends_at:
            reason = CLOSE_REASON_OF[session.fate]
            error = self._rng.choice(ERRORS)
            self._finish(session, session.fate, session.ends_at, error, reason)
        elif deadline is not None and now >= deadline[0]:
            self._finish(session, TIMED_OUT, now, None, deadline[1])
        elif session.data.get("status") == AUTHENTICATING:
            self._authenticate(session, seconds, now)
        elif not session.abandoned and session.ends_at is None:
            self._use(session, seconds, now)  # a short-lived session does nothing but end
        duration = session.data.get("duration")
        if session.live and session.created is not None and isinstance(duration, str):
            session.data["duration"] = iso_duration(now - session.created)

    def _authenticate(self, session: _Session, seconds: float, now: float) -> None:
        """A managed-auth login finishes: the session turns active, or the login fails."""
        rng = self._rng
        if rng.random() < _chance(AUTH_RATE, seconds):
            if rng.random() < AUTH_FAILURE:
                self._finish(session, ERROR, now, AUTH_ERROR, CLOSE_REASON_OF[ERROR])
            else:
                session.data["status"] = ACTIVE
                session.data["last_accessed_at"] = iso(now)
                session.accessed = now

    def _use(self, session: _Session, seconds: float, now: float) -> None:
        """An in-use session works, and may be closed, crash, or be abandoned."""
        rng = self._rng
        if rng.random() < _chance(ACTIVITY_RATE, seconds):
            self._work(session, now)
        if rng.random() < _chance(END_RATE, seconds):
            fate = rng.choices(FATES[0], FATES[1])[0]
            if fate == "abandoned":
                session.abandoned = True
            else:
                self._finish(session, fate, now, rng.choice(ERRORS), CLOSE_REASON_OF[fate])

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
    def _deadline(session: _Session) -> tuple[float, str] | None:
        """When the API would time the session out, and the close_reason it would give:
        the idle or the max-duration deadline, whichever comes first."""
        data = session.data
        idle = _minutes(data.get("idle_timeout_minutes", data.get("timeout_minutes")))
        longest = _minutes(data.get("max_duration_minutes"))
        deadlines = []
        if idle is not None and session.accessed is not None:
            deadlines.append((session.accessed + idle * 60, IDLE_TIMEOUT))
        if longest is not None and session.created is not None:
            deadlines.append((session.created + longest * 60, MAX_DURATION))
        return min(deadlines, default=None)

    def _close_reason(self, session: _Session, status: str) -> str:
        """The close_reason the API gives an ending; `unknown` when nothing tells."""
        if status == TIMED_OUT:
            deadline = self._deadline(session)
            return deadline[1] if deadline else "unknown"
        return CLOSE_REASON_OF.get(status, "unknown")

    def _births(self, seconds: float) -> int:
        """New sessions: refill towards the target, plus a surge now and then."""
        missing = max(self._target_active - len(self._live), 0)
        births = sum(self._rng.random() < _chance(BIRTH_RATE, seconds) for _ in range(missing))
        return births + (self._rng.random() < _chance(SURGE_RATE, seconds))

    # -- making sessions -------------------------------------------------------
    def _new_id(self) -> str:
        while (sid := f"sess-{self._rng.getrandbits(48):012x}") in self._sessions:
            pass
        return sid

    def _new_data(self, session_id: str, now: float, *, system: bool = False) -> dict[str, Any]:
        """A fresh active session as the API returns it (`SessionResponse`)."""
        rng = self._rng
        idle = rng.choices(*IDLE_TIMEOUTS)[0]
        return {
            "session_id": session_id,
            "status": ACTIVE,
            "created_at": iso(now),
            "last_accessed_at": iso(now),
            "closed_at": None,
            "idle_timeout_minutes": idle,
            "timeout_minutes": idle,
            "max_duration_minutes": rng.choices(*MAX_DURATIONS)[0],
            "duration": iso_duration(0),
            "close_reason": None,
            "steps": [],
            "error": None,
            "proxies": rng.random() < 0.3,
            "browser_type": rng.choice(BROWSERS),
            "network_request_bytes": 0,
            "network_response_bytes": 0,
            "user_agent": USER_AGENT,
            "viewport_width": rng.choice((1280, 1366, 1920)),
            "viewport_height": rng.choice((720, 768, 1080)),
            "solve_captchas": rng.choice((True, False, None)),
            "cdp_url": f"wss://cdp.notte.invalid/{session_id}",
            "viewer_url": f"https://viewer.notte.invalid/{session_id}",
            "web_bot_auth": rng.random() < 0.1,
            "auth_ids": [],
            "system_hidden": system,
        }

    def _born(self, now: float, *, authenticating: bool) -> _Session:
        """A session starting now; with managed auth it waits for its login first."""
        session = _Session(sid := self._new_id(), self._new_data(sid, now))
        if authenticating:
            session.data["status"] = AUTHENTICATING
            session.data["auth_ids"] = [f"auth-{self._rng.getrandbits(32):08x}"]
        return session

    def _flash(self, now: float) -> _Session:
        """A session that will end within seconds, before any poll interval passes."""
        session = self._born(now, authenticating=False)
        session.ends_at = now + self._rng.uniform(*FLASH_SECONDS)
        session.fate = self._rng.choices(FLASH_FATES[0], FLASH_FATES[1])[0]
        return session

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
            duration=iso_duration(age),
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
        deadline = self._deadline(session)
        ended = deadline[0] if status == TIMED_OUT and deadline else last_access
        reason = self._close_reason(session, status)
        self._finish(session, status, ended, rng.choice(ERRORS), reason)

    @staticmethod
    def _finish(
        session: _Session, status: str, when: float, error: str | None, reason: str
    ) -> None:
        """Set the fields an ending sets; `error` only lands on an error ending."""
        data = session.data
        data.update(status=status, closed_at=iso(when), close_reason=reason)
        if session.created is not None:
            data["duration"] = iso_duration(when - session.created)
        if status == ERROR:
            data["error"] = error or data.get("error") or ERRORS[0]

    def _store(self, session: _Session) -> None:
        """(Re)index a session after any change; drops the cached listings."""
        session.reindex()
        self._sessions[session.session_id] = session
        if session.live:
            self._live[session.session_id] = None
        else:
            self._live.pop(session.session_id, None)
        self._listings.clear()

    # -- the account: functions, runs, runtime, usage ---------------------------
    def add_function(self, function_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """A function (`name`, `schedule_cron`, `schedule_state` and raw fields override)."""
        with self._lock:
            return self._account.add_function(function_id, **fields)

    def update_function(self, function_id: str, **fields: Any) -> None:
        with self._lock:
            self._account.update_function(function_id, **fields)

    def delete_function(self, function_id: str) -> None:
        with self._lock:
            self._account.delete_function(function_id)

    def start_run(
        self,
        function_id: str,
        *,
        seconds: float | None = None,
        fails: bool = False,
        session: bool = True,
    ) -> str:
        """Start a run now, with its browser session unless `session` is false; it ends by
        itself after `seconds` (on a tick) if given, else when `end_run` says."""
        with self._lock:
            lasts = math.inf if seconds is None else seconds
            return self._account.start_run(function_id, lasts, fails, session)

    def backfill_runs(self, function_id: str, *, every: float, count: int) -> None:
        """`count` runs that ended in the past, one each `every` seconds before now."""
        with self._lock:
            self._account.backfill(function_id, every=every, count=count)

    def end_run(self, function_id: str, run_id: str, status: str = "closed") -> None:
        with self._lock:
            self._account.end_run(function_id, run_id, status)
            self._listings.clear()

    def set_runtime(self, status: str | None = None, *, raw: Any = None) -> None:
        """The functions runtime's health: `ok`, `degraded`, `unreachable`, or any raw JSON."""
        with self._lock:
            self._account.health = raw if raw is not None else unhealthy_runtime(status or "ok")

    def start_usage(self, *, balance: float = 42.0) -> None:
        """A usage period under way, `balance` left; it falls as functions run."""
        with self._lock:
            self._account.start_usage(balance=balance)

    def set_usage(self, usage: Any) -> None:
        """Any JSON for `GET /usage`, frozen (None: the API answers 404)."""
        with self._lock:
            self._account.set_usage(copy.deepcopy(usage))

    def functions_page(
        self, *, page: int, page_size: int, only_active: bool
    ) -> tuple[list[Any], bool]:
        with self._lock:
            return _paged(self._account.functions(only_active=only_active), page, page_size)

    def function(self, function_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._account.function(function_id)

    def runs_page(
        self, function_id: str, *, page: int, page_size: int, only_active: bool
    ) -> tuple[list[Any], bool] | None:
        """A page of a function's runs, in the world's list order; None: no such function."""
        with self._lock:
            runs = self._account.runs(function_id, only_active=only_active, order=self._list_order)
            return None if runs is None else _paged(runs, page, page_size)

    def run(self, function_id: str, run_id: str, *, inline: bool) -> dict[str, Any] | None:
        with self._lock:
            return self._account.run(function_id, run_id, inline=inline)

    def runtime_health(self) -> Any:
        with self._lock:
            return copy.deepcopy(self._account.health)

    def usage(self) -> Any:
        with self._lock:
            return copy.deepcopy(self._account.usage)

    def _run_session(self, now: float) -> str:
        """A run's browser session: it lives as long as the run, then ends with it."""
        session = self._born(now, authenticating=False)
        session.ends_at = math.inf
        session.data.update(idle_timeout_minutes=15, timeout_minutes=15, max_duration_minutes=30)
        self._store(session)
        return session.session_id

    def _end_run_session(self, session_id: str, succeeded: bool, when: float) -> None:
        session = self._sessions.get(session_id)
        if session is None or not session.live:
            return
        status = CLOSED if succeeded else ERROR
        self._finish(session, status, when, self._rng.choice(ERRORS), CLOSE_REASON_OF[status])
        self._store(session)

    # -- faults and accounting (the server's side) -----------------------------
    def inject(self, fault: Fault) -> None:
        """Add a fault (a copy: its count runs down here, not in the caller's object)."""
        with self._lock:
            self._faults.append(dataclasses.replace(fault))

    def take_fault(self, endpoint: str) -> Fault | None:
        """The first live fault for this endpoint, counted as used."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(endpoint):
                    if fault.count is not None:
                        fault.count -= 1
                    return dataclasses.replace(fault)
            return None

    def clear_faults(self) -> None:
        """Take back every fault still in force (the test's side)."""
        with self._lock:
            self._faults.clear()

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._counts[record.endpoint] += 1

    def request_began(self) -> None:
        """A request is being served (from its head read to its answer sent, or dropped)."""
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def request_ended(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def max_in_flight(self) -> int:
        """The most requests served at once since the last `reset_requests`: the API's view
        of the client's concurrency, counting requests the client gave up on."""
        with self._lock:
            return self._max_in_flight

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
            self._max_in_flight = self._in_flight


def _paged(items: list[Any], page: int, page_size: int) -> tuple[list[Any], bool]:
    start = (page - 1) * page_size
    return items[start : start + page_size], start + page_size < len(items)


DEMO_TICK_SECONDS = 1.0  # how often a served demo world lives a step


def demo_world(seed: int) -> SimulatedNotte:
    """The lived-in world `--demo` and `python -m exporter.simulator` start from: active
    sessions of various ages, a few waiting for their login, a few already ended."""
    world = SimulatedNotte(seed=seed)
    world.populate(active=12, authenticating=2, ended=3)
    populate_account(world)
    return world


def populate_account(world: SimulatedNotte) -> None:
    """A few functions (one on a one-minute rate, one on a weekday cron, one paused, one run
    by hand), a few runs under way, and a usage period whose balance falls as they run."""
    monitor = world.add_function(
        "7c1e5a0f-0d1e-4b8e-9a59-5b0f3c2d1a01",
        name="checkout-monitor",
        schedule_cron="rate(1 minute)",
        schedule_state="enabled",
    )
    world.backfill_runs(monitor["function_id"], every=60.0, count=5)
    world.add_function(
        "7c1e5a0f-0d1e-4b8e-9a59-5b0f3c2d1a02",
        name="daily-report",
        schedule_cron="cron(0 8 ? * MON-FRI *)",
        schedule_state="enabled",
        default_runtime="extended",
    )
    world.add_function(
        "7c1e5a0f-0d1e-4b8e-9a59-5b0f3c2d1a03",
        name="lead-enricher",
        schedule_cron="cron(30 */6 * * ? *)",
        schedule_state="paused",
    )
    scraper = world.add_function(
        "7c1e5a0f-0d1e-4b8e-9a59-5b0f3c2d1a04", name="price-scraper", by_hand=True
    )
    for seconds in (20.0, 75.0):
        world.start_run(scraper["function_id"], seconds=seconds, fails=seconds > 60)
    world.start_usage(balance=42.0)
