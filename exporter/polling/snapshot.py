"""The snapshot: an immutable picture of every exported value, made once per cycle.

Built from the tracker's state and a clock reading at the end of a poll cycle
(failed ones too, so remaining-time gauges keep counting down through an
outage). The HTTP side only ever reads the current snapshot; a cycle swaps in
a new one, so a scrape never sees half an update.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.labels import (
    CLOSE_REASONS,
    CONFIGURED,
    DISCOVERED,
    DROP_REASONS,
    ENDED_STATUSES,
    SOURCES,
    STATUSES,
)
from exporter.notte.model import Session, timestamp
from exporter.polling.tracker import Tracked, TrackerState

ERROR_LABEL_MAX_CHARS = 200
# `notte_session_info`'s labels besides session_id: the session fields they show.
INFO_LABELS = ("browser_type", "proxies", "solve_captchas", "web_bot_auth")

# An aggregate: label values (in the family's label order) -> count.
Counts = Mapping[tuple[str, ...], int]


# `notte_sessions_ended_total`'s fixed label sets: (status, close_reason), exported from the start.
ENDED_LABELS = tuple((status, reason) for status in ENDED_STATUSES for reason in CLOSE_REASONS)


def _zeros(keys: Iterable[tuple[str, ...]]) -> Counts:
    return MappingProxyType(dict.fromkeys(keys, 0))


@dataclass(frozen=True)
class SessionValues:
    """Every exported value of one session; None means the series is absent."""

    session_id: str
    status: str
    statuses: tuple[str, ...]
    request_bytes: int | None
    response_bytes: int | None
    duration: float | None
    idle_timeout: float | None
    idle_remaining: float | None
    idle_deadline: float | None
    max_duration: float
    max_duration_remaining: float | None
    created: float | None
    last_accessed: float | None
    closed: float | None
    steps: int
    info: tuple[str, ...]  # in INFO_LABELS order
    close_reason: str | None  # ended sessions only
    error: str | None


@dataclass(frozen=True)
class Snapshot:
    """What `/metrics` shows of the sessions; `generation` changes with every new snapshot."""

    generation: int = 0
    sessions: tuple[SessionValues, ...] = ()
    by_status: Counts = field(default_factory=lambda: _zeros((s,) for s in STATUSES))
    ended_total: Counts = field(default_factory=lambda: _zeros(ENDED_LABELS))
    dropped_total: Counts = field(default_factory=lambda: _zeros((r,) for r in DROP_REASONS))
    tracked_by_source: Counts = field(default_factory=lambda: _zeros((s,) for s in SOURCES))


def build_snapshot(state: TrackerState, now: float, generation: int) -> Snapshot:
    """Compute every value from the tracker state as of `now`."""
    tracked = sorted(state.sessions.values(), key=lambda item: item.session.session_id)
    by_status: Counter[tuple[str, ...]] = Counter(_zeros((s,) for s in STATUSES))
    by_source: Counter[tuple[str, ...]] = Counter(_zeros((s,) for s in SOURCES))
    for item in tracked:
        by_status[(item.session.status,)] += 1
        by_source[(CONFIGURED if item.configured else DISCOVERED,)] += 1
    ended = dict(_zeros(ENDED_LABELS)) | dict(state.ended_total)
    dropped: Counts = {(reason,): state.dropped_total.get(reason, 0) for reason in DROP_REASONS}
    return Snapshot(
        generation=generation,
        sessions=tuple(session_values(item, now) for item in tracked),
        by_status=MappingProxyType(dict(by_status)),
        ended_total=MappingProxyType(ended),
        dropped_total=MappingProxyType(dropped),
        tracked_by_source=MappingProxyType(dict(by_source)),
    )


def session_values(tracked: Tracked, now: float) -> SessionValues:
    """The exported values of one session at `now`, following the contract's rules."""
    session = tracked.session
    created = timestamp(session.created_at)
    last_accessed = timestamp(session.last_accessed_at)
    live = not session.ended
    idle_timeout = _minutes(session.idle_timeout_minutes)
    idle_deadline = _idle_deadline(last_accessed or created, idle_timeout) if live else None
    max_duration = session.max_duration_minutes * 60.0
    return SessionValues(
        session_id=session.session_id,
        status=session.status,
        statuses=STATUSES + tracked.unknown_statuses,
        request_bytes=session.network_request_bytes,
        response_bytes=session.network_response_bytes,
        duration=_duration(session, created, last_accessed, now),
        idle_timeout=idle_timeout,
        idle_remaining=None if idle_deadline is None else max(0.0, idle_deadline - now),
        idle_deadline=idle_deadline,
        max_duration=max_duration,
        max_duration_remaining=(
            max(0.0, created + max_duration - now) if live and created is not None else None
        ),
        created=created,
        last_accessed=last_accessed,
        closed=timestamp(session.closed_at),
        steps=len(session.steps or ()),
        info=tuple(label_text(getattr(session, name)) for name in INFO_LABELS),
        close_reason=session.close_reason if session.ended else None,
        error=session.error[:ERROR_LABEL_MAX_CHARS] if session.error else None,
    )


def _minutes(value: float | None) -> float | None:
    return None if value is None else value * 60.0


def _idle_deadline(since: float | None, idle_timeout: float | None) -> float | None:
    if since is None or idle_timeout is None:
        return None
    return since + idle_timeout


def _duration(
    session: Session, created: float | None, last_accessed: float | None, now: float
) -> float | None:
    """Live (any status but an ended one): time since creation. Ended: closed - created,
    else the payload's `duration`, else last_accessed - created.

    `closed_at` comes first because the API may send a live-style `duration` for an
    ended session.
    """
    if not session.ended:
        return None if created is None else max(0.0, now - created)
    closed = timestamp(session.closed_at)
    if closed is not None and created is not None:
        return max(0.0, closed - created)
    if session.duration is not None:
        return session.duration.total_seconds()
    if last_accessed is None or created is None:
        return None
    return max(0.0, last_accessed - created)


def label_text(value: Any) -> str:
    """A field as a label value: booleans as true/false, a null as '', and lists and
    objects as true when non-empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return "true" if value else "false"
    return str(value)


class SnapshotStore:
    """Holds the current snapshot; the poll job swaps it, scrapes read it.

    A reference swap is atomic in CPython, the lock only makes the
    ready/generation pair consistent for readers of both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._ready = False

    @property
    def current(self) -> Snapshot:
        return self._snapshot

    @property
    def ready(self) -> bool:
        """True once a poll cycle has succeeded; never false again."""
        return self._ready

    def publish(self, snapshot: Snapshot, *, succeeded: bool) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._ready = self._ready or succeeded
