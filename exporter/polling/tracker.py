"""The tracker: which sessions are watched, and what state each is in.

Pure functions over an immutable `TrackerState`. A poll cycle asks
`plan_fetches` which sessions need `GET /sessions/{id}` (those whose data is
oldest first), gathers the answers into a `CycleResult`, and `apply_cycle`
returns the next state. Every rule of the contract's lifecycle lives here:
configured versus discovered (by the active list or the sweep), the one final
fetch of a session that left the active list, retention, 404 drops, the
`max_sessions` cap, and when a session counts as ended.

Per-session events (a session ended, a 404) are logged at debug, with one
line per cycle at info: thousands of sessions may end in one cycle.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.labels import (
    DROP_REASONS,
    LIMIT,
    NOT_FOUND,
    RETENTION,
    STATUSES,
    UNKNOWN_CLOSE_REASON,
)
from exporter.notte.model import Session, timestamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracked:
    """A watched session: its last known state and what this process has seen of it."""

    session: Session
    configured: bool
    seen_unended: bool
    ended_at: float | None = None
    counted_ended: bool = False
    unknown_statuses: tuple[str, ...] = ()
    refreshed_at: float = 0.0  # when its data last came from the API (wall time)


@dataclass(frozen=True)
class TrackerState:
    """Everything the tracker remembers between cycles; each cycle makes a new one."""

    sessions: Mapping[str, Tracked] = field(default_factory=lambda: MappingProxyType({}))
    not_found: frozenset[str] = frozenset()
    # by (final status, close_reason); `unknown` stands for a missing close_reason
    ended_total: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    dropped_total: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    configured_over_cap: bool = False
    # Configured IDs never answered yet, and since when they are wanted (wall time).
    waiting_since: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class CycleResult:
    """What one poll cycle learned from the API.

    `listed` is None when the whole active list is unknown this cycle (discovery
    off, or listing failed or was cut short): then no session is taken to have
    left the list. `seen` holds sessions the cycle saw besides: the sweep's
    finds and the pages of an active list it could not finish.
    """

    configured_ids: Sequence[str]
    listed: Sequence[Session] | None
    fetched: Mapping[str, Session]
    not_found: frozenset[str] = frozenset()
    seen: Sequence[Session] = ()


def plan_fetches(
    state: TrackerState, configured_ids: Sequence[str], listed_ids: frozenset[str] | None
) -> list[str]:
    """Session IDs that need `GET /sessions/{id}` this cycle, oldest data first.

    Never answered comes first, then by when each was last refreshed, ties in
    the order given: so under any slowness every session is refreshed in turn,
    within `ceil(sessions / fetches per cycle)` cycles, and what a cycle had no
    time for (or a blocked cycle never asked) is first next time. A session in
    the active list is never fetched again; an ended one is never fetched
    again; a configured ID that answered 404 waits until it leaves the
    configuration. Besides configured sessions the list did not return, the
    only fetch is the one that records the final state of a discovered session
    that left the active list. Linear but for the sort.
    """
    wanted = _wanted(state, configured_ids, listed_ids)
    sessions = state.sessions
    never = float("-inf")
    return sorted(wanted, key=lambda i: sessions[i].refreshed_at if i in sessions else never)


def oldest_refresh(state: TrackerState) -> float | None:
    """When the stalest data still refreshed was fetched, or a configured ID first waited
    for its first answer (wall time); None when no session is refreshed any more."""
    times = [t.refreshed_at for t in state.sessions.values() if not t.session.ended]
    return min([*times, *state.waiting_since.values()], default=None)


def _wanted(
    state: TrackerState, configured_ids: Sequence[str], listed_ids: frozenset[str] | None
) -> list[str]:
    configured = set(configured_ids)
    wanted: list[str] = []
    for session_id in configured_ids:
        if session_id in state.not_found or _is_listed(session_id, listed_ids):
            continue
        tracked = state.sessions.get(session_id)
        if tracked is None or not tracked.session.ended:
            wanted.append(session_id)
    if listed_ids is None:
        return wanted
    for session_id, tracked in state.sessions.items():
        if session_id in configured or tracked.session.ended or session_id in listed_ids:
            continue
        wanted.append(session_id)
    return wanted


def _is_listed(session_id: str, listed_ids: frozenset[str] | None) -> bool:
    return listed_ids is not None and session_id in listed_ids


def apply_cycle(
    state: TrackerState,
    result: CycleResult,
    *,
    now: float,
    process_start: float,
    retention: float,
    max_sessions: int,
) -> TrackerState:
    """The state after a cycle: updates, retention, 404 drops and the cap, applied in that order."""
    configured = frozenset(result.configured_ids)
    listed = {session.session_id: session for session in result.listed or ()}
    seen = {session.session_id: session for session in result.seen}
    ended_total: Counter[tuple[str, str]] = Counter(state.ended_total)
    dropped: Counter[str] = Counter(state.dropped_total)

    # plan_fetches never asks again for an ID in state.not_found, so each 404 here is new.
    dropped[NOT_FOUND] += len(result.not_found)
    _log_not_found(result.not_found)
    sessions: dict[str, Tracked] = {}
    for session_id, tracked in state.sessions.items():
        if session_id in result.not_found:
            continue
        latest = result.fetched.get(session_id) or listed.get(session_id) or seen.get(session_id)
        if session_id not in configured and latest is None and tracked.configured:
            continue  # left the configuration and was not discovered
        sessions[session_id] = _observe(
            tracked, latest, session_id in configured, now, process_start, ended_total
        )

    dropped[RETENTION] += _expire(sessions, now, retention)
    newcomers = _newcomers(result, configured, {**seen, **listed}, sessions)
    for session in newcomers.configured:
        sessions[session.session_id] = _first_sight(session, True, now, process_start, ended_total)
    dropped[LIMIT] += _admit_discovered(
        sessions, newcomers.discovered, max_sessions, now, process_start, ended_total
    )
    not_found = (state.not_found | result.not_found) & configured
    next_state = TrackerState(
        sessions=MappingProxyType(sessions),
        not_found=not_found,
        ended_total=MappingProxyType(dict(ended_total)),
        dropped_total=MappingProxyType({reason: dropped[reason] for reason in DROP_REASONS}),
        configured_over_cap=_warn_over_cap(state, sessions, max_sessions),
        waiting_since=_waiting_since(state, result.configured_ids, sessions, not_found, now),
    )
    _log_ended(state.ended_total, ended_total)
    return next_state


def _waiting_since(
    state: TrackerState,
    configured_ids: Sequence[str],
    sessions: Mapping[str, Tracked],
    not_found: frozenset[str],
    now: float,
) -> Mapping[str, float]:
    """Configured IDs with no answer yet (nor a 404): since when each has waited."""
    waiting = {
        session_id: state.waiting_since.get(session_id, now)
        for session_id in configured_ids
        if session_id not in sessions and session_id not in not_found
    }
    return MappingProxyType(waiting)


def _log_not_found(not_found: frozenset[str]) -> None:
    for session_id in sorted(not_found):
        log.debug("session %s answered 404, no longer exported", session_id)
    if not_found:
        log.info("sessions that answered 404, no longer exported: %d", len(not_found))


def _log_ended(before: Mapping[tuple[str, str], int], after: Mapping[tuple[str, str], int]) -> None:
    """One line for every session this cycle saw end, by status and close reason."""
    ended = {key: after[key] - before.get(key, 0) for key in sorted(after)}
    ended = {key: count for key, count in ended.items() if count}
    if ended:
        parts = ", ".join(f"{status}/{reason} {count}" for (status, reason), count in ended.items())
        log.info("sessions seen ending this cycle: %d (%s)", sum(ended.values()), parts)


def _observe(
    tracked: Tracked,
    latest: Session | None,
    configured: bool,
    now: float,
    process_start: float,
    ended_total: Counter[tuple[str, str]],
) -> Tracked:
    """Fold a fresh answer (or none) into what is known of a tracked session."""
    if latest is None:
        return replace(tracked, configured=configured)
    updated = replace(
        tracked,
        session=latest,
        configured=configured,
        unknown_statuses=_with_unknown(tracked.unknown_statuses, latest.status),
        refreshed_at=now,
    )
    if not latest.ended:
        return replace(updated, seen_unended=True, ended_at=None)
    if tracked.session.ended and tracked.ended_at is not None:
        return updated
    return _mark_ended(updated, now, process_start, ended_total)


def _first_sight(
    session: Session,
    configured: bool,
    now: float,
    process_start: float,
    ended_total: Counter[tuple[str, str]],
) -> Tracked:
    tracked = Tracked(
        session=session,
        configured=configured,
        seen_unended=not session.ended,
        unknown_statuses=_with_unknown((), session.status),
        refreshed_at=now,
    )
    return _mark_ended(tracked, now, process_start, ended_total) if session.ended else tracked


def _mark_ended(
    tracked: Tracked, now: float, process_start: float, ended_total: Counter[tuple[str, str]]
) -> Tracked:
    """Record that this process saw the session end, and count it when the contract says so."""
    session = tracked.session
    closed_at = timestamp(session.closed_at)
    countable = tracked.seen_unended or (closed_at is not None and closed_at > process_start)
    if countable and not tracked.counted_ended:
        reason = session.close_reason or UNKNOWN_CLOSE_REASON
        ended_total[(session.status, reason)] += 1
        log.debug("session %s ended: %s (%s)", session.session_id, session.status, reason)
        return replace(tracked, ended_at=now, counted_ended=True)
    return replace(tracked, ended_at=now)


def _with_unknown(seen: tuple[str, ...], status: str) -> tuple[str, ...]:
    if status in STATUSES or status in seen:
        return seen
    log.warning("unknown session status %r, exported as a status of its own", status)
    return (*seen, status)


def _expire(sessions: dict[str, Tracked], now: float, retention: float) -> int:
    """Drop ended discovered sessions seen ending at least `retention` seconds ago."""
    expired = [
        session_id
        for session_id, tracked in sessions.items()
        if not tracked.configured
        and tracked.ended_at is not None
        and now - tracked.ended_at >= retention
    ]
    for session_id in expired:
        del sessions[session_id]
    return len(expired)


@dataclass(frozen=True)
class _Newcomers:
    configured: list[Session]
    discovered: list[Session]


def _newcomers(
    result: CycleResult,
    configured: frozenset[str],
    listed: Mapping[str, Session],
    sessions: Mapping[str, Tracked],
) -> _Newcomers:
    """Sessions not tracked before this cycle, split by where they came from."""
    fresh = {**listed, **result.fetched}
    fresh_configured = [
        session
        for session_id, session in fresh.items()
        if session_id in configured and session_id not in sessions
    ]
    discovered = [
        session
        for session_id, session in listed.items()
        if session_id not in configured
        and session_id not in sessions
        and session_id not in result.not_found
    ]
    return _Newcomers(fresh_configured, discovered)


def _admit_discovered(
    sessions: dict[str, Tracked],
    candidates: Sequence[Session],
    max_sessions: int,
    now: float,
    process_start: float,
    ended_total: Counter[tuple[str, str]],
) -> int:
    """Add newly discovered sessions within the cap; returns how many were dropped for it.

    Ended discovered sessions make room, earliest seen-ending first; newcomers
    that still do not fit are not added.
    """
    needed = len(sessions) + len(candidates) - max_sessions
    evicted = _evict_ended(sessions, needed) if needed > 0 else 0
    room = max(0, max_sessions - len(sessions))
    for session in candidates[:room]:
        sessions[session.session_id] = _first_sight(session, False, now, process_start, ended_total)
    rejected = max(0, len(candidates) - room)
    if rejected:
        log.warning("max_sessions reached: %d newly discovered sessions not tracked", rejected)
    return evicted + rejected


def _evict_ended(sessions: dict[str, Tracked], count: int) -> int:
    """Evict up to `count` ended discovered sessions, earliest seen-ending first."""
    ended = sorted(
        (
            (tracked.ended_at, session_id)
            for session_id, tracked in sessions.items()
            if not tracked.configured and tracked.ended_at is not None
        ),
    )
    for _, session_id in ended[:count]:
        del sessions[session_id]
    return min(count, len(ended))


def _warn_over_cap(state: TrackerState, sessions: Mapping[str, Tracked], max_sessions: int) -> bool:
    """Configured sessions alone above the cap: warn once when it starts."""
    configured_count = sum(1 for tracked in sessions.values() if tracked.configured)
    over = configured_count > max_sessions
    if over and not state.configured_over_cap:
        log.warning(
            "%d configured sessions exceed max_sessions (%d); they are never evicted",
            configured_count,
            max_sessions,
        )
    return over
