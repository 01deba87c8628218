"""Unit tests of the tracker's lifecycle rules (pure functions, no I/O)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.notte.model import Session, parse_session
from exporter.polling.tracker import (
    CycleResult,
    TrackerState,
    apply_cycle,
    oldest_refresh,
    plan_fetches,
)

START = 1_800_000_000.0


def session(session_id: str, status: str = "active", **fields: Any) -> Session:
    return parse_session({"session_id": session_id, "status": status, **fields})


def cycle(
    state: TrackerState,
    *,
    configured: tuple[str, ...] = (),
    listed: list[Session] | None = None,
    fetched: dict[str, Session] | None = None,
    not_found: frozenset[str] = frozenset(),
    now: float = START + 10,
    retention: float = 900,
    max_sessions: int = 100,
) -> TrackerState:
    result = CycleResult(configured, listed, fetched or {}, not_found)
    return apply_cycle(
        state,
        result,
        now=now,
        process_start=START,
        retention=retention,
        max_sessions=max_sessions,
    )


def test_listed_sessions_are_not_fetched_again() -> None:
    state = cycle(TrackerState(), listed=[session("a"), session("b")])
    assert plan_fetches(state, [], frozenset({"a", "b"})) == []


def test_session_that_left_the_list_is_fetched_once_then_never_again() -> None:
    state = cycle(TrackerState(), listed=[session("a")])
    assert plan_fetches(state, [], frozenset()) == ["a"]
    state = cycle(state, listed=[], fetched={"a": session("a", "error", error="boom")})
    assert state.sessions["a"].session.status == "error"
    assert plan_fetches(state, [], frozenset()) == []


def test_session_still_active_after_leaving_the_list_stays_tracked() -> None:
    state = cycle(TrackerState(), listed=[session("a")])
    state = cycle(state, listed=[], fetched={"a": session("a")})
    assert "a" in state.sessions
    assert plan_fetches(state, [], frozenset()) == ["a"]


def test_configured_session_not_in_list_is_fetched_and_ended_one_is_not() -> None:
    state = TrackerState()
    assert plan_fetches(state, ["c"], frozenset({"a"})) == ["c"]
    state = cycle(state, configured=("c",), listed=[], fetched={"c": session("c", "closed")})
    assert plan_fetches(state, ["c"], frozenset()) == []
    assert state.sessions["c"].configured


def test_unknown_listing_does_not_mark_sessions_as_left() -> None:
    state = cycle(TrackerState(), listed=[session("a")])
    assert plan_fetches(state, [], None) == []


def test_active_to_error_counts_once() -> None:
    state = cycle(TrackerState(), listed=[session("a")])
    state = cycle(state, listed=[], fetched={"a": session("a", "error")})
    assert state.ended_total == {("error", "unknown"): 1}
    state = cycle(state, listed=[])
    assert state.ended_total == {("error", "unknown"): 1}


def test_ended_sessions_are_counted_by_status_and_close_reason() -> None:
    ids = ("idle", "idle2", "long", "odd")
    state = cycle(TrackerState(), listed=[session(i) for i in ids])
    ended = {
        "idle": session("idle", "timed_out", close_reason="idle_timeout"),
        "idle2": session("idle2", "timed_out", close_reason="idle_timeout"),
        "long": session("long", "timed_out", close_reason="max_duration"),
        "odd": session("odd", "closed", close_reason="a reason from the future"),
    }
    state = cycle(state, listed=[], fetched=ended)
    assert state.ended_total == {
        ("timed_out", "idle_timeout"): 2,
        ("timed_out", "max_duration"): 1,
        ("closed", "unknown"): 1,
    }


def test_first_seen_ended_counts_only_when_closed_after_start() -> None:
    before = "2020-01-01T00:00:00Z"
    after = "2027-02-01T00:00:00Z"  # START is 2027-01-15T08:00:00Z
    state = cycle(
        TrackerState(),
        configured=("old", "new", "none"),
        fetched={
            "old": session("old", "closed", closed_at=before),
            "new": session("new", "timed_out", closed_at=after),
            "none": session("none", "error"),
        },
    )
    assert state.ended_total == {("timed_out", "unknown"): 1}


def test_retention_drops_ended_discovered_sessions_only() -> None:
    state = cycle(TrackerState(), configured=("c",), listed=[session("a"), session("c")])
    ended = {"a": session("a", "closed"), "c": session("c", "closed")}
    state = cycle(state, configured=("c",), listed=[], fetched=ended, now=START + 100)
    state = cycle(state, configured=("c",), listed=[], now=START + 999)
    assert "a" in state.sessions
    state = cycle(state, configured=("c",), listed=[], now=START + 1000)
    assert "a" not in state.sessions
    assert "c" in state.sessions
    assert state.dropped_total["retention"] == 1


def test_not_found_drops_and_is_not_asked_again_until_reconfigured() -> None:
    state = cycle(TrackerState(), configured=("x",), not_found=frozenset({"x"}))
    assert "x" not in state.sessions
    assert state.dropped_total["not_found"] == 1
    assert plan_fetches(state, ["x"], frozenset()) == []
    state = cycle(state, configured=())
    assert plan_fetches(state, ["x"], frozenset()) == ["x"]


def test_tracked_session_that_answers_404_is_dropped_and_counted() -> None:
    state = cycle(TrackerState(), configured=("x",), fetched={"x": session("x")})
    state = cycle(state, configured=("x",), not_found=frozenset({"x"}))
    assert "x" not in state.sessions
    assert state.dropped_total["not_found"] == 1
    state = cycle(state, configured=("x",))
    assert state.dropped_total["not_found"] == 1


def test_session_removed_from_configuration_is_dropped() -> None:
    state = cycle(TrackerState(), configured=("c",), fetched={"c": session("c")})
    state = cycle(state, configured=(), listed=[])
    assert "c" not in state.sessions


def test_cap_evicts_ended_oldest_first_and_rejects_the_rest() -> None:
    state = cycle(TrackerState(), listed=[session("a"), session("b")], max_sessions=3)
    state = cycle(state, listed=[], fetched={"a": session("a", "closed")}, now=START + 20)
    state = cycle(state, listed=[], fetched={"b": session("b", "closed")}, now=START + 30)
    newcomers = [session("n1"), session("n2"), session("n3"), session("n4")]
    state = cycle(state, listed=newcomers, now=START + 40, max_sessions=3)
    assert set(state.sessions) == {"n1", "n2", "n3"}
    assert state.dropped_total["limit"] == 2 + 1


def test_configured_sessions_are_never_evicted() -> None:
    fetched = {i: session(i, "closed") for i in ("c1", "c2")}
    state = cycle(TrackerState(), configured=("c1", "c2"), fetched=fetched, max_sessions=1)
    assert set(state.sessions) == {"c1", "c2"}
    assert state.configured_over_cap
    state = cycle(state, configured=("c1", "c2"), listed=[session("d")], max_sessions=1)
    assert "d" not in state.sessions
    assert state.dropped_total["limit"] == 1


def test_authenticating_is_live_polled_and_not_counted_as_ended() -> None:
    state = cycle(TrackerState(), configured=("w",), fetched={"w": session("w", "authenticating")})
    assert plan_fetches(state, ["w"], frozenset()) == ["w"]
    assert state.sessions["w"].unknown_statuses == ()
    assert state.ended_total == {}
    state = cycle(state, configured=("w",), fetched={"w": session("w", "closed")})
    assert state.ended_total == {("closed", "unknown"): 1}


def test_unknown_status_is_polled_and_remembered() -> None:
    state = cycle(TrackerState(), configured=("u",), fetched={"u": session("u", "paused")})
    assert plan_fetches(state, ["u"], frozenset()) == ["u"]
    state = cycle(state, configured=("u",), fetched={"u": session("u")})
    assert state.sessions["u"].unknown_statuses == ("paused",)


def test_sessions_are_planned_oldest_data_first_never_answered_before_all() -> None:
    configured = ("a", "b", "c", "d")
    state = cycle(TrackerState(), configured=configured, fetched={"b": session("b")})
    state = cycle(state, configured=configured, fetched={"a": session("a")}, now=START + 20)
    # c and d never answered: first, in the order given; then b (+10), then a (+20).
    assert plan_fetches(state, list(configured), None) == ["c", "d", "b", "a"]
    state = cycle(state, configured=configured, fetched={"d": session("d")}, now=START + 40)
    assert plan_fetches(state, list(configured), None) == ["c", "b", "a", "d"]


def test_oldest_refresh_is_the_stalest_live_data_or_the_longest_wait_for_a_first_answer() -> None:
    assert oldest_refresh(TrackerState()) is None
    state = cycle(TrackerState(), configured=("a", "w"), fetched={"a": session("a")}, now=START)
    assert oldest_refresh(state) == START  # a was refreshed, w has waited, both since START
    state = cycle(state, configured=("a", "w"), fetched={"a": session("a")}, now=START + 30)
    assert oldest_refresh(state) == START  # w still waits for its first answer
    state = cycle(state, configured=("a", "w"), fetched={"w": session("w")}, now=START + 60)
    assert oldest_refresh(state) == START + 30  # a, last refreshed at +30
    ended = session("a", "closed", closed_at="2027-01-15T08:01:00Z")
    state = cycle(state, configured=("a", "w"), fetched={"a": ended}, now=START + 90)
    assert oldest_refresh(state) == START + 60  # an ended session is refreshed no more
    state = cycle(state, configured=("a",), now=START + 120)
    assert oldest_refresh(state) is None  # w left the configuration; a has ended


def test_a_session_the_sweep_found_ended_is_tracked_counted_and_kept_for_retention() -> None:
    after = "2027-02-01T00:00:00Z"  # START is 2027-01-15T08:00:00Z
    quick = session("quick", "error", closed_at=after, error="boom")
    old = session("old", "closed", closed_at="2020-01-01T00:00:00Z")
    result = CycleResult((), [], {}, seen=[quick, old, session("live")])
    state = apply_cycle(
        TrackerState(), result, now=START + 10, process_start=START, retention=900, max_sessions=9
    )
    assert set(state.sessions) == {"quick", "old", "live"}
    assert not any(tracked.configured for tracked in state.sessions.values())
    assert state.ended_total == {("error", "unknown"): 1}
    assert plan_fetches(state, [], frozenset({"live"})) == []
    state = cycle(state, listed=[session("live")], now=START + 909)
    assert "quick" in state.sessions
    state = cycle(state, listed=[session("live")], now=START + 910)
    assert set(state.sessions) == {"live"}
    assert state.ended_total == {("error", "unknown"): 1}


def test_many_sessions_ending_in_a_cycle_make_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.polling.tracker")
    listed = [session(f"s{i}") for i in range(500)]
    state = cycle(TrackerState(), listed=listed, max_sessions=1000)
    caplog.clear()
    ended = {f"s{i}": session(f"s{i}", "error" if i % 5 else "closed") for i in range(500)}
    cycle(state, listed=[], fetched=ended, max_sessions=1000)
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert info == ["sessions seen ending this cycle: 500 (closed/unknown 100, error/unknown 400)"]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 500


def test_many_404s_in_a_cycle_make_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.polling.tracker")
    gone = frozenset(f"x{i}" for i in range(300))
    cycle(TrackerState(), configured=tuple(gone), not_found=gone)
    assert [r.getMessage() for r in caplog.records] == [
        "sessions that answered 404, no longer exported: 300"
    ]
