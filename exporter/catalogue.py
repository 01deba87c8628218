"""The metric catalogue: every family derived from the sessions, declared once.

Each entry holds a family's name, help, type and labels side by side with the
function that fills it from a snapshot, as kube-state-metrics' family
generators do. The renderer (`render.py`), the prometheus-client oracle of the
tests and the docs checks all read these tuples; a family is added, renamed or
documented here and nowhere else. The exporter's own metrics (API requests,
poll timings) are ordinary prometheus-client metrics in `selfmetrics.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Final, Literal

from exporter.snapshot import INFO_LABELS, Counts, SessionValues, Snapshot

Kind = Literal["gauge", "counter"]
# One series of a session family: the values of the family's own labels, and the value.
Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class Family:
    """What a family's header and series names need: its name, help, type and labels.

    A counter's name ends in `_total`, as its samples are named.
    """

    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SessionFamily(Family):
    """A family labelled `session_id` plus `labels`; `samples` gives a session's series."""

    samples: Callable[[SessionValues], Iterable[Sample]]


@dataclass(frozen=True)
class AggregateFamily(Family):
    """A family without `session_id`: `counts` maps label values (in `labels` order) to a count."""

    counts: Callable[[Snapshot], Counts]


def _value(attribute: str) -> Callable[[SessionValues], Iterable[Sample]]:
    """One series per session holding `attribute`, absent when it is None."""
    read = attrgetter(attribute)

    def samples(values: SessionValues) -> Iterable[Sample]:
        value = read(values)
        return () if value is None else (((), value),)

    return samples


def _gauge(name: str, help: str, attribute: str) -> SessionFamily:
    return SessionFamily(name, help, "gauge", (), _value(attribute))


def _counter(name: str, help: str, attribute: str) -> SessionFamily:
    return SessionFamily(name, help, "counter", (), _value(attribute))


def _status(values: SessionValues) -> Iterable[Sample]:
    return (((status,), 1.0 if status == values.status else 0.0) for status in values.statuses)


def _info(values: SessionValues) -> Iterable[Sample]:
    return ((values.info, 1.0),)


def _labelled_one(attribute: str) -> Callable[[SessionValues], Iterable[Sample]]:
    """1 with the attribute's text as a label, when the attribute is set."""
    read = attrgetter(attribute)

    def samples(values: SessionValues) -> Iterable[Sample]:
        text = read(values)
        return () if text is None else (((text,), 1.0),)

    return samples


SESSION_FAMILIES: Final = (
    SessionFamily(
        "notte_session_status",
        "Session status as a state set: 1 for the current status, 0 for the others.",
        "gauge",
        ("status",),
        _status,
    ),
    _counter(
        "notte_session_network_request_bytes_total",
        "Network bytes the session's browser sent.",
        "request_bytes",
    ),
    _counter(
        "notte_session_network_response_bytes_total",
        "Network bytes the session's browser received.",
        "response_bytes",
    ),
    _gauge(
        "notte_session_duration_seconds",
        "Live: seconds since created_at. Ended: closed_at - created_at (or the duration).",
        "duration",
    ),
    _gauge("notte_session_idle_timeout_seconds", "Idle timeout of the session.", "idle_timeout"),
    _gauge(
        "notte_session_idle_remaining_seconds",
        "Live sessions: seconds left before the idle timeout, not below 0.",
        "idle_remaining",
    ),
    _gauge(
        "notte_session_idle_deadline_timestamp_seconds",
        "Live sessions: when the idle timeout hits, Unix seconds.",
        "idle_deadline",
    ),
    _gauge(
        "notte_session_max_duration_seconds", "Maximum duration of the session.", "max_duration"
    ),
    _gauge(
        "notte_session_max_duration_remaining_seconds",
        "Live sessions: seconds left before the maximum duration, not below 0.",
        "max_duration_remaining",
    ),
    _gauge(
        "notte_session_created_timestamp_seconds",
        "When the session was created, Unix seconds.",
        "created",
    ),
    _gauge(
        "notte_session_last_accessed_timestamp_seconds",
        "When the session was last accessed, Unix seconds.",
        "last_accessed",
    ),
    _gauge(
        "notte_session_closed_timestamp_seconds",
        "When the session was closed, Unix seconds.",
        "closed",
    ),
    _gauge("notte_session_steps", "Number of steps the session has taken.", "steps"),
    SessionFamily(
        "notte_session_info",
        "Session properties as labels; always 1.",
        "gauge",
        INFO_LABELS,
        _info,
    ),
    SessionFamily(
        "notte_session_close_reason",
        "1 for an ended session, labelled with the reason the API gave for its end.",
        "gauge",
        ("close_reason",),
        _labelled_one("close_reason"),
    ),
    SessionFamily(
        "notte_session_error_info",
        "1 when the session carries an error; the message cut to 200 characters.",
        "gauge",
        ("error",),
        _labelled_one("error"),
    ),
)

AGGREGATE_FAMILIES: Final = (
    AggregateFamily(
        "notte_sessions",
        "Tracked sessions by status.",
        "gauge",
        ("status",),
        attrgetter("by_status"),
    ),
    AggregateFamily(
        "notte_sessions_ended_total",
        "Sessions this process saw end, by final status and close reason.",
        "counter",
        ("status", "close_reason"),
        attrgetter("ended_total"),
    ),
    AggregateFamily(
        "notte_exporter_tracked_sessions",
        "Tracked sessions by source.",
        "gauge",
        ("source",),
        attrgetter("tracked_by_source"),
    ),
    AggregateFamily(
        "notte_exporter_sessions_dropped_total",
        "Sessions no longer exported, by reason.",
        "counter",
        ("reason",),
        attrgetter("dropped_total"),
    ),
)
