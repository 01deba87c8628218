"""Fast rendering of the session families, byte-for-byte what prometheus-client writes.

At 10,000 sessions the exposition has some 150,000 samples; going through
`generate_latest` builds a `Sample` and a labels dict for each and sorts the
labels every time, which costs seconds of CPU. The families here have a fixed
shape, so their lines can be written straight from the snapshot: each
session's escaped ID is computed once, and the label order (sorted by name,
as prometheus-client sorts it) is fixed in the format strings.

The text and OpenMetrics formats differ only in their `# HELP`/`# TYPE` lines
for counters (OpenMetrics names the family without `_total`); the sample lines
are the same. `SnapshotCollector` renders the same families the slow way, and
a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.utils import floatToGoString

from exporter.collector import (
    AGGREGATES,
    ERROR_HELP,
    INFO_HELP,
    SESSION_COUNTERS,
    SESSION_GAUGES,
    STATUS_HELP,
)
from exporter.snapshot import INFO_LABELS, SessionValues, Snapshot

# prometheus-client's number format (Go's), typed for mypy.
_number: Callable[[float], str] = floatToGoString

# notte_session_info's labels in prometheus-client's order: sorted by name.
_INFO_ORDER = sorted((*INFO_LABELS, "session_id"))


def escape(value: str) -> str:
    """A label value as the exposition formats escape it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _header(lines: list[str], name: str, documentation: str, kind: str, openmetrics: bool) -> None:
    """`# HELP` and `# TYPE` lines; OpenMetrics names a counter family without `_total`."""
    family = name.removesuffix("_total") if openmetrics and kind == "counter" else name
    help_text = escape(documentation) if openmetrics else _help(documentation)
    lines.append(f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n")


def render_session_families(snapshot: Snapshot, openmetrics: bool) -> bytes:
    """Every family `SnapshotCollector` yields, in the same order, as exposition text."""
    sessions = snapshot.sessions
    ids = [escape(values.session_id) for values in sessions]
    lines: list[str] = []
    _header(lines, "notte_session_status", STATUS_HELP, "gauge", openmetrics)
    _status_lines(lines, ids, sessions)
    for name, (documentation, attribute) in SESSION_COUNTERS.items():
        _header(lines, name, documentation, "counter", openmetrics)
        _value_lines(lines, name, ids, sessions, attribute)
    for name, (documentation, attribute) in SESSION_GAUGES.items():
        _header(lines, name, documentation, "gauge", openmetrics)
        _value_lines(lines, name, ids, sessions, attribute)
    _header(lines, "notte_session_info", INFO_HELP, "gauge", openmetrics)
    _info_lines(lines, ids, sessions)
    _header(lines, "notte_session_error_info", ERROR_HELP, "gauge", openmetrics)
    _error_lines(lines, ids, sessions)
    for name, (documentation, kind, label, attribute) in AGGREGATES.items():
        _header(lines, name, documentation, kind, openmetrics)
        values: Mapping[str, int] = getattr(snapshot, attribute)
        lines.extend(
            f'{name}{{{label}="{escape(key)}"}} {_number(value)}\n' for key, value in values.items()
        )
    return "".join(lines).encode("utf-8")


def _status_lines(lines: list[str], ids: list[str], sessions: Iterable[SessionValues]) -> None:
    for session_id, values in zip(ids, sessions, strict=True):
        current = values.status
        lines.extend(
            f'notte_session_status{{session_id="{session_id}",status="{escape(status)}"}} '
            f"{'1.0' if status == current else '0.0'}\n"
            for status in values.statuses
        )


def _value_lines(
    lines: list[str],
    name: str,
    ids: list[str],
    sessions: Iterable[SessionValues],
    attribute: str,
) -> None:
    prefix = name + '{session_id="'
    fmt = _number
    for session_id, values in zip(ids, sessions, strict=True):
        value = getattr(values, attribute)
        if value is not None:
            lines.append(f'{prefix}{session_id}"}} {fmt(value)}\n')


def _info_lines(lines: list[str], ids: list[str], sessions: Iterable[SessionValues]) -> None:
    for session_id, values in zip(ids, sessions, strict=True):
        labels = dict(values.info)
        labels["session_id"] = session_id
        text = ",".join(
            f'{name}="{labels[name] if name == "session_id" else escape(labels[name])}"'
            for name in _INFO_ORDER
        )
        lines.append(f"notte_session_info{{{text}}} 1.0\n")


def _error_lines(lines: list[str], ids: list[str], sessions: Iterable[SessionValues]) -> None:
    for session_id, values in zip(ids, sessions, strict=True):
        if values.error is not None:
            lines.append(
                f'notte_session_error_info{{error="{escape(values.error)}",'
                f'session_id="{session_id}"}} 1.0\n'
            )
