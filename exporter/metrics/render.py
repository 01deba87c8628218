"""The session part of `/metrics`, rendered from the catalogue straight to exposition text.

At 10,000 sessions the exposition has some 150,000 samples; going through
`generate_latest` builds a `Sample` and a labels dict for each and sorts the
labels every time, which costs seconds of CPU. The catalogue's families have
a fixed shape, so their lines are written straight from the snapshot: each
session's escaped ID is computed once, and each family's label order (sorted
by name, as prometheus-client sorts them) is worked out once per render.

The output is byte-for-byte what prometheus-client writes for the same
families, in text format 0.0.4 and in OpenMetrics (without the `# EOF`); the
two differ only in their `# HELP`/`# TYPE` lines for counters (OpenMetrics
names the family without `_total`) and for `_info` gauges (typed `info` in
OpenMetrics, the family named without `_info`, as prometheus-client's `Info`).
Only the families `Served` (the allow/deny lists) are rendered. A test holds the renderer equal to a
prometheus-client Collector driven by the same catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.utils import floatToGoString

from exporter.metrics.catalogue import AccountFamily, Family, SessionFamily
from exporter.metrics.metricfilter import EVERY_FAMILY, Served
from exporter.polling.accountsnapshot import AccountSnapshot
from exporter.polling.functions import Histogram
from exporter.polling.snapshot import SessionValues, Snapshot

# prometheus-client's number format (Go's), typed for mypy.
_number: Callable[[float], str] = floatToGoString


def escape(value: str) -> str:
    """A label value as the exposition formats escape it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def is_info(family: Family | AccountFamily) -> bool:
    """An `_info` gauge (always 1, its labels the information): an info family in OpenMetrics."""
    return family.kind == "gauge" and family.name.endswith("_info")


def _header(lines: list[str], family: Family, openmetrics: bool) -> None:
    """`# HELP` and `# TYPE` lines; OpenMetrics names a counter family without `_total`,
    and an `_info` gauge an info family without `_info`."""
    kind: str = family.kind
    name = family.name
    if openmetrics and kind == "counter":
        name = name.removesuffix("_total")
    elif openmetrics and is_info(family):
        kind, name = "info", name.removesuffix("_info")
    help_text = escape(family.help) if openmetrics else _help(family.help)
    lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


def _labels(names: Sequence[str]) -> Callable[..., str]:
    """Writes escaped label values, given as arguments in `names` order, as
    `{a="x",b="y"}` sorted by name: one format string per family, made once."""
    order = sorted(range(len(names)), key=names.__getitem__)
    pairs = ",".join(f'{names[i]}="{{{i}}}"' for i in order)
    return ("{{" + pairs + "}}").format


def render_session_families(
    snapshot: Snapshot, openmetrics: bool, served: Served = EVERY_FAMILY
) -> bytes:
    """The served session and aggregate families, in catalogue order, as exposition text
    (no `# EOF`)."""
    sessions = snapshot.sessions if served.sessions else ()
    ids = [escape(values.session_id) for values in sessions]
    lines: list[str] = []
    for family in served.sessions:
        _header(lines, family, openmetrics)
        _session_lines(lines, family, ids, sessions)
    for aggregate in served.aggregates:
        _header(lines, aggregate, openmetrics)
        labels = _labels(aggregate.labels)
        lines.extend(
            f"{aggregate.name}{labels(*map(escape, key))} {_number(value)}\n"
            for key, value in aggregate.counts(snapshot).items()
        )
    return "".join(lines).encode("utf-8")


def _session_lines(
    lines: list[str], family: SessionFamily, ids: list[str], sessions: Sequence[SessionValues]
) -> None:
    samples = family.samples
    if not family.labels:  # the common case, a value per session: one format, no sorting
        prefix = family.name + '{session_id="'
        for session_id, values in zip(ids, sessions, strict=True):
            for _, value in samples(values):
                lines.append(f'{prefix}{session_id}"}} {_number(value)}\n')
        return
    # Label texts (statuses, browser types) repeat from session to session: each is
    # escaped once per family.
    escaped = _Memo(escape)
    labels = _labels(("session_id", *family.labels))
    for session_id, values in zip(ids, sessions, strict=True):
        for texts, value in samples(values):
            rendered = labels(session_id, *[escaped[text] for text in texts])
            lines.append(f"{family.name}{rendered} {_number(value)}\n")


class _Memo(dict[Any, str]):
    """`function(key)`, computed on the first lookup of each key."""

    def __init__(self, function: Callable[[Any], str]) -> None:
        super().__init__()
        self._function = function

    def __missing__(self, key: Any) -> str:
        self[key] = text = self._function(key)
        return text


# --- the account part ---------------------------------------------------------------------
# A few dozen functions make a few hundred lines: rendered at each scrape through
# prometheus-client itself (which also writes the run-duration histograms), from
# fresh families built off the account snapshot, so a vanished function simply stops
# appearing.


class AccountCollector:
    """A prometheus-client collector of the catalogue's account families."""

    def __init__(
        self, snapshot: Callable[[], AccountSnapshot], families: Sequence[AccountFamily]
    ) -> None:
        self._snapshot = snapshot
        self._families = families

    def collect(self) -> list[Metric]:
        snapshot = self._snapshot()
        return [_account_family(family, snapshot) for family in self._families]


def _account_family(family: AccountFamily, snapshot: AccountSnapshot) -> Metric:
    labels = list(family.labels)
    metric: GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily | InfoMetricFamily
    if is_info(family):
        metric = InfoMetricFamily(family.name.removesuffix("_info"), family.help, labels=labels)
        for values, _ in family.series(snapshot):
            metric.add_metric(list(values), {})
        return metric
    if family.kind == "histogram":
        metric = HistogramMetricFamily(family.name, family.help, labels=labels)
        for values, histogram in family.series(snapshot):
            assert isinstance(histogram, Histogram)
            metric.add_metric(list(values), histogram.cumulative(), histogram.total)
        return metric
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=labels)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=labels)
    for values, value in family.series(snapshot):
        assert not isinstance(value, Histogram)
        metric.add_metric(list(values), value)
    return metric


def render_account_families(
    snapshot: AccountSnapshot, families: Sequence[AccountFamily], openmetrics: bool
) -> bytes:
    """The served account families of one account snapshot as exposition text (no `# EOF`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AccountCollector(lambda: snapshot, families))
    if openmetrics:
        rendered: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
        return rendered.removesuffix(b"# EOF\n")
    return text_format.generate_latest(registry)
