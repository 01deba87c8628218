"""The session collector: turns a snapshot into metric families.

A custom prometheus-client Collector, as the library's own process and GC
collectors are: every `collect()` builds fresh families from the snapshot it
is given, so a session that is no longer tracked simply stops appearing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.snapshot import INFO_LABELS, SessionValues, Snapshot

ID = ["session_id"]

# name -> (help, attribute of SessionValues). All gauges with the one label session_id.
SESSION_GAUGES: dict[str, tuple[str, str]] = {
    "notte_session_duration_seconds": (
        "Active: seconds since created_at. Ended: the session's duration.",
        "duration",
    ),
    "notte_session_idle_timeout_seconds": ("Idle timeout of the session.", "idle_timeout"),
    "notte_session_idle_remaining_seconds": (
        "Active sessions: seconds left before the idle timeout, not below 0.",
        "idle_remaining",
    ),
    "notte_session_idle_deadline_timestamp_seconds": (
        "Active sessions: when the idle timeout hits, Unix seconds.",
        "idle_deadline",
    ),
    "notte_session_max_duration_seconds": ("Maximum duration of the session.", "max_duration"),
    "notte_session_max_duration_remaining_seconds": (
        "Active sessions: seconds left before the maximum duration, not below 0.",
        "max_duration_remaining",
    ),
    "notte_session_created_timestamp_seconds": (
        "When the session was created, Unix seconds.",
        "created",
    ),
    "notte_session_last_accessed_timestamp_seconds": (
        "When the session was last accessed, Unix seconds.",
        "last_accessed",
    ),
    "notte_session_closed_timestamp_seconds": (
        "When the session was closed, Unix seconds.",
        "closed",
    ),
    "notte_session_steps": ("Number of steps the session has taken.", "steps"),
}

STATUS_HELP = "Session status as a state set: 1 for the current status, 0 for the others."
INFO_HELP = "Session properties as labels; always 1."
ERROR_HELP = "1 when the session carries an error; the message cut to 200 characters."

# name -> (help, type, label, attribute of Snapshot): the families without session_id.
AGGREGATES: dict[str, tuple[str, str, str, str]] = {
    "notte_sessions": ("Tracked sessions by status.", "gauge", "status", "by_status"),
    "notte_sessions_ended_total": (
        "Sessions this process saw end, by final status.",
        "counter",
        "status",
        "ended_total",
    ),
    "notte_exporter_tracked_sessions": (
        "Tracked sessions by source.",
        "gauge",
        "source",
        "tracked_by_source",
    ),
    "notte_exporter_sessions_dropped_total": (
        "Sessions no longer exported, by reason.",
        "counter",
        "reason",
        "dropped_total",
    ),
}

SESSION_COUNTERS: dict[str, tuple[str, str]] = {
    "notte_session_network_request_bytes_total": (
        "Network bytes the session's browser sent.",
        "request_bytes",
    ),
    "notte_session_network_response_bytes_total": (
        "Network bytes the session's browser received.",
        "response_bytes",
    ),
}


class SnapshotCollector(Collector):
    """Renders whatever snapshot `source` returns at collect time."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        yield _status_family(snapshot.sessions)
        yield from _counter_families(snapshot.sessions)
        yield from _gauge_families(snapshot.sessions)
        yield _info_family(snapshot.sessions)
        yield _error_family(snapshot.sessions)
        yield from _aggregate_families(snapshot)


def _status_family(sessions: tuple[SessionValues, ...]) -> Metric:
    family = GaugeMetricFamily(
        "notte_session_status",
        STATUS_HELP,
        labels=["session_id", "status"],
    )
    for values in sessions:
        for status in values.statuses:
            family.add_metric([values.session_id, status], 1.0 if status == values.status else 0.0)
    return family


def _counter_families(sessions: tuple[SessionValues, ...]) -> Iterator[Metric]:
    for name, (documentation, attribute) in SESSION_COUNTERS.items():
        family = CounterMetricFamily(name, documentation, labels=ID)
        for values in sessions:
            value = getattr(values, attribute)
            if value is not None:
                family.add_metric([values.session_id], float(value))
        yield family


def _gauge_families(sessions: tuple[SessionValues, ...]) -> Iterator[Metric]:
    for name, (documentation, attribute) in SESSION_GAUGES.items():
        family = GaugeMetricFamily(name, documentation, labels=ID)
        for values in sessions:
            value = getattr(values, attribute)
            if value is not None:
                family.add_metric([values.session_id], float(value))
        yield family


def _info_family(sessions: tuple[SessionValues, ...]) -> Metric:
    family = GaugeMetricFamily(
        "notte_session_info",
        INFO_HELP,
        labels=["session_id", *INFO_LABELS],
    )
    for values in sessions:
        family.add_metric([values.session_id, *(text for _, text in values.info)], 1.0)
    return family


def _error_family(sessions: tuple[SessionValues, ...]) -> Metric:
    family = GaugeMetricFamily(
        "notte_session_error_info",
        ERROR_HELP,
        labels=["session_id", "error"],
    )
    for values in sessions:
        if values.error is not None:
            family.add_metric([values.session_id, values.error], 1.0)
    return family


def _aggregate_families(snapshot: Snapshot) -> Iterator[Metric]:
    for name, (documentation, kind, label, attribute) in AGGREGATES.items():
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(name, documentation, labels=[label])
        values: Mapping[str, int] = getattr(snapshot, attribute)
        for label_value, value in values.items():
            family.add_metric([label_value], float(value))
        yield family
