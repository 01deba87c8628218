"""The reference renderer: the catalogue's families built the slow, obvious way.

A prometheus-client Collector that builds fresh `GaugeMetricFamily` /
`CounterMetricFamily` objects from a snapshot, as the library's own process
and GC collectors do, and lets `generate_latest` write them. It reads the same
catalogue as `exporter.metrics.render`, so the tests holding the two equal prove the
fast renderer's formatting (headers, label order, escaping, numbers) against
prometheus-client's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

from exporter.metrics.catalogue import AGGREGATE_FAMILIES, SESSION_FAMILIES, Kind
from exporter.polling.snapshot import Snapshot

EOF_LINE = b"# EOF\n"


class _Info(InfoMetricFamily):
    """An `_info` gauge as prometheus-client's own `Info` writes it; samples are always 1."""

    def add_metric(self, labels: Sequence[str], value: object, timestamp: object = None) -> None:
        assert value == 1, "an _info family's samples are 1"
        super().add_metric(labels, {})


def _family(
    kind: Kind, name: str, documentation: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily | _Info:
    if kind == "counter":
        return CounterMetricFamily(name, documentation, labels=labels)
    if name.endswith("_info"):
        return _Info(name.removesuffix("_info"), documentation, labels=labels)
    return GaugeMetricFamily(name, documentation, labels=labels)


class CatalogueCollector(Collector):
    """Every catalogue family of one snapshot, in catalogue order."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        for family in SESSION_FAMILIES:
            metric = _family(family.kind, family.name, family.help, ["session_id", *family.labels])
            for values in self.snapshot.sessions:
                for texts, value in family.samples(values):
                    metric.add_metric([values.session_id, *texts], value)
            yield metric
        for aggregate in AGGREGATE_FAMILIES:
            metric = _family(aggregate.kind, aggregate.name, aggregate.help, list(aggregate.labels))
            for key, count in aggregate.counts(self.snapshot).items():
                metric.add_metric(list(key), count)
            yield metric


def render_with_prometheus_client(snapshot: Snapshot, openmetrics: bool) -> bytes:
    """What `exporter.metrics.render.render_session_families` must write, byte for byte."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogueCollector(snapshot))
    if openmetrics:
        rendered: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
        return rendered.removesuffix(EOF_LINE)
    return text_format.generate_latest(registry)
