"""The metric catalogue: every family derived from the sessions and the account, declared once.

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

from exporter.labels import (
    BALANCE_KINDS,
    COST_KINDS,
    LIMIT_KINDS,
    RUN_ENDED_STATUSES,
    RUN_STATUSES,
    RUNTIME_STATUSES,
)
from exporter.polling.accountsnapshot import FUNCTION_INFO_LABELS, AccountSnapshot
from exporter.polling.functions import Histogram
from exporter.polling.snapshot import INFO_LABELS, Counts, SessionValues, Snapshot

# Session and aggregate families are gauges and counters; only the account has histograms.
Kind = Literal["gauge", "counter", "histogram"]
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


# --- the account: functions, their runs, the functions runtime, usage ------------------------

# One series of an account family: its label values, and a value (a histogram for histograms).
AccountSample = tuple[tuple[str, ...], float | Histogram]


@dataclass(frozen=True)
class AccountFamily(Family):
    """A family of the account snapshot (any kind, histograms too); `series` gives every
    series it has."""

    series: Callable[[AccountSnapshot], Iterable[AccountSample]]


def _function_info(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return (((f.function_id, *f.info), 1.0) for f in snapshot.functions)


def _runs_active(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return (((f.function_id,), float(f.runs_active)) for f in snapshot.functions)


def _runs_total(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return (
        ((f.function_id, status), float(f.ended_total[status]))
        for f in snapshot.functions
        for status in RUN_ENDED_STATUSES
    )


def _run_durations(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return (((f.function_id,), f.durations) for f in snapshot.functions)


def _last_run(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return (
        ((f.function_id, status), f.last_run[status])
        for f in snapshot.functions
        for status in RUN_STATUSES
        if status in f.last_run
    )


def _next_run(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return (((f.function_id,), f.next_run) for f in snapshot.functions if f.next_run is not None)


def _run_sessions(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    return ((link, 1.0) for link in snapshot.run_sessions)


def _runtime_status(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    runtime = snapshot.runtime
    if runtime is None:
        return ()
    statuses = RUNTIME_STATUSES + (() if runtime.status in RUNTIME_STATUSES else (runtime.status,))
    return (((status,), 1.0 if status == runtime.status else 0.0) for status in statuses)


def _runtime_reachable(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    runtime = snapshot.runtime
    return () if runtime is None else (((), 1.0 if runtime.reachable else 0.0),)


def _runtime_latency(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    runtime = snapshot.runtime
    if runtime is None or runtime.latency_ms is None:
        return ()
    return (((), runtime.latency_ms / 1000.0),)


def _usage_kinds(
    kinds: tuple[str, ...], field_of: Callable[[str], str]
) -> Callable[[AccountSnapshot], Iterable[AccountSample]]:
    """One series per kind, read from the usage answer's field for that kind."""

    def series(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
        usage = snapshot.usage
        if usage is None:
            return ()
        return (((kind,), float(getattr(usage, field_of(kind)))) for kind in kinds)

    return series


def _usage_value(attribute: str) -> Callable[[AccountSnapshot], Iterable[AccountSample]]:
    def series(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
        usage = snapshot.usage
        return () if usage is None else (((), float(getattr(usage, attribute))),)

    return series


def _usage_info(snapshot: AccountSnapshot) -> Iterable[AccountSample]:
    usage = snapshot.usage
    return () if usage is None else (((usage.plan_type or "", usage.period or ""), 1.0),)


_COST_FIELDS = {
    kind: "total_cost" if kind == "total" else f"{kind}_usage_cost" for kind in COST_KINDS
}
_BALANCE_FIELDS = {
    kind: "balance_amount" if kind == "total" else f"{kind}_balance_amount"
    for kind in BALANCE_KINDS
}
CURRENCY = "in the account's currency"

ACCOUNT_FAMILIES: Final = (
    AccountFamily(
        "notte_function_info",
        "A function's properties as labels (schedule: its EventBridge expression); always 1.",
        "gauge",
        ("function_id", *FUNCTION_INFO_LABELS),
        _function_info,
    ),
    AccountFamily(
        "notte_function_runs_active",
        "Runs of the function under way.",
        "gauge",
        ("function_id",),
        _runs_active,
    ),
    AccountFamily(
        "notte_function_runs_total",
        "Runs of the function this process saw end, by final status.",
        "counter",
        ("function_id", "status"),
        _runs_total,
    ),
    AccountFamily(
        "notte_function_run_duration_seconds",
        "Duration of the function's ended runs (updated_at - created_at).",
        "histogram",
        ("function_id",),
        _run_durations,
    ),
    AccountFamily(
        "notte_function_last_run_timestamp_seconds",
        "Start of the function's newest run of each status, Unix seconds.",
        "gauge",
        ("function_id", "status"),
        _last_run,
    ),
    AccountFamily(
        "notte_function_next_run_timestamp_seconds",
        "Enabled schedules: the first run due after the newest run seen, Unix seconds; "
        "in the past while a run is late.",
        "gauge",
        ("function_id",),
        _next_run,
    ),
    AccountFamily(
        "notte_function_run_session_info",
        "Active runs: the browser session each one drives; always 1.",
        "gauge",
        ("function_id", "function_run_id", "session_id"),
        _run_sessions,
    ),
    AccountFamily(
        "notte_functions_runtime_status",
        "The functions runtime's health as a state set: 1 for the current status.",
        "gauge",
        ("status",),
        _runtime_status,
    ),
    AccountFamily(
        "notte_functions_runtime_reachable",
        "1 when the functions runtime answered the API's probe, else 0.",
        "gauge",
        (),
        _runtime_reachable,
    ),
    AccountFamily(
        "notte_functions_runtime_latency_seconds",
        "Round trip from the API to the functions runtime.",
        "gauge",
        (),
        _runtime_latency,
    ),
    AccountFamily(
        "notte_usage_cost",
        f"Cost of this usage period so far, by kind, {CURRENCY}.",
        "gauge",
        ("kind",),
        _usage_kinds(COST_KINDS, _COST_FIELDS.__getitem__),
    ),
    AccountFamily(
        "notte_usage_sessions",
        "Sessions started in this usage period.",
        "gauge",
        (),
        _usage_value("session_count"),
    ),
    AccountFamily(
        "notte_usage_functions",
        "Functions counted in this usage period.",
        "gauge",
        (),
        _usage_value("function_count"),
    ),
    AccountFamily(
        "notte_usage_balance",
        f"Balance left, by kind, {CURRENCY}.",
        "gauge",
        ("kind",),
        _usage_kinds(BALANCE_KINDS, _BALANCE_FIELDS.__getitem__),
    ),
    AccountFamily(
        "notte_usage_limit",
        f"Usage limit of this period, by kind, {CURRENCY}.",
        "gauge",
        ("kind",),
        _usage_kinds(LIMIT_KINDS, "{}_limit_amount".format),
    ),
    AccountFamily(
        "notte_usage_limit_exceeded",
        "1 when the account's usage limit is reached: new sessions and runs fail.",
        "gauge",
        (),
        _usage_value("is_usage_limit_exceeded"),
    ),
    AccountFamily(
        "notte_usage_info",
        "The account's plan and the usage period the usage families describe; always 1.",
        "gauge",
        ("plan", "period"),
        _usage_info,
    ),
)
