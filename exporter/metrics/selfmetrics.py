"""Metrics about the exporter itself, current at every scrape.

These are ordinary prometheus-client instruments on three registries of the
exporter's own. `registry` holds the ones that change only through `SelfMetrics`'
methods (API requests, poll cycles), each of which counts a change in `changes`: a
scrape reuses their last render until the count moves, since rendering them (a few
hundred lines) at every scrape was most of what a scrape cost. `live` holds what
changes without telling and costs nothing to read (the age of the stalest data): it
is rendered at every scrape. `process` holds the process and GC collectors, which
change without telling too but cost a listing of /proc/self/fd, one entry per open
connection: a scrape reuses their render for up to a second
(`exposition.PROCESS_RENDER_SECONDS`).
Everything derived from the sessions is declared in `catalogue.py` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.labels import BAD_DATA_KINDS, ENDPOINTS, FAILURE, POLL_RESULTS, SUCCESS

_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120)
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Changes:
    """How many times the instruments on `SelfMetrics.registry` have changed.

    Counted after each change, so a render that read the count before it began is
    never reused past a change it may have missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # noted on the poll loop, read from the HTTP thread
        self.count = 0

    def note(self) -> None:
        with self._lock:
            self.count += 1


@dataclass(frozen=True)
class SelfMetrics:
    """The exporter's own instruments: on `registry` those changed only by the methods
    below, on `live` and `process` those that change by themselves."""

    registry: CollectorRegistry
    live: CollectorRegistry
    process: CollectorRegistry
    up: Gauge
    build_info: Info
    last_poll_success: Gauge
    poll_duration: Histogram
    polls: Counter
    api_requests: Counter
    api_request_duration: Histogram
    api_retries: Counter
    bad_api_data: Counter
    shard_ordinal: Gauge
    total_shards: Gauge
    poll_interval: Gauge
    sweep_enabled: Gauge
    sweep_configured: Gauge
    deferred_sessions: Gauge
    oldest_refresh_age: Gauge
    list_truncated: Gauge
    changes: Changes = field(default_factory=Changes)

    @property
    def revision(self) -> int:
        """Moves whenever something on `registry` changed."""
        return self.changes.count

    # What the poller reports (`poller.PollObserver`): it imports no metrics.
    def cycle_ended(self, *, succeeded: bool, seconds: float, now: float) -> None:
        self.poll_duration.observe(seconds)
        self.polls.labels(result=SUCCESS if succeeded else FAILURE).inc()
        self.up.set(1 if succeeded else 0)
        if succeeded:
            self.last_poll_success.set(now)
        self.changes.note()

    def sessions_deferred(self, count: int) -> None:
        self.deferred_sessions.set(count)
        self.changes.note()

    def list_cut_at_cap(self, truncated: bool) -> None:
        self.list_truncated.set(1 if truncated else 0)
        self.changes.note()

    def sweep_state(self, *, configured: bool, running: bool) -> None:
        self.sweep_configured.set(1 if configured else 0)
        self.sweep_enabled.set(1 if running else 0)
        self.changes.note()

    def watch_oldest_refresh(self, age: Callable[[], float]) -> None:
        self.oldest_refresh_age.set_function(age)

    # What the API client reports (`client.RequestObserver`): it imports no metrics.
    def request_done(self, endpoint: str, code: str, seconds: float) -> None:
        self.api_requests.labels(endpoint=endpoint, code=code).inc()
        self.api_request_duration.labels(endpoint=endpoint).observe(seconds)
        self.changes.note()

    def request_retried(self, endpoint: str) -> None:
        self.api_retries.labels(endpoint=endpoint).inc()
        self.changes.note()

    def bad_data(self, endpoint: str, kind: str) -> None:
        self.bad_api_data.labels(endpoint=endpoint, kind=kind).inc()
        self.changes.note()


def create_self_metrics(
    shard: int = 0,
    total_shards: int = 1,
    *,
    poll_interval: float = 0.0,
    process_metrics: bool = True,
) -> SelfMetrics:
    """A fresh registry with the exporter's instruments and, optionally, process metrics.

    The process, platform and GC collectors are registered anew here because
    prometheus-client's defaults live on its global registry, which we never use.
    """
    # `_created` series add nothing for these counters and double the lines.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    live = CollectorRegistry(auto_describe=True)
    process = CollectorRegistry(auto_describe=True)
    if process_metrics:
        PlatformCollector(registry=registry)  # the Python version: it never changes
        ProcessCollector(registry=process)
        GCCollector(registry=process)
    metrics = SelfMetrics(
        registry=registry,
        live=live,
        process=process,
        up=Gauge(
            "notte_up",
            "1 when the last poll cycle reached the Notte API and was authorised, else 0.",
            registry=registry,
        ),
        # An `Info`: `notte_exporter_build_info` in text, an info family in OpenMetrics.
        build_info=Info(
            "notte_exporter_build",
            "Build information of notte-exporter; always 1.",
            registry=registry,
        ),
        last_poll_success=Gauge(
            "notte_exporter_last_poll_success_timestamp_seconds",
            "End of the last successful poll cycle, Unix seconds; 0 before the first.",
            registry=registry,
        ),
        poll_duration=Histogram(
            "notte_exporter_poll_duration_seconds",
            "Duration of poll cycles.",
            buckets=_POLL_BUCKETS,
            registry=registry,
        ),
        polls=Counter(
            "notte_exporter_polls_total",
            "Poll cycles, by result.",
            ["result"],
            registry=registry,
        ),
        api_requests=Counter(
            "notte_exporter_api_requests_total",
            "Requests to the Notte API, by endpoint and HTTP status (or error; or cut: given "
            "up on by its deadline or at shutdown, while the API may still have served it).",
            ["endpoint", "code"],
            registry=registry,
        ),
        api_request_duration=Histogram(
            "notte_exporter_api_request_duration_seconds",
            "Duration of requests to the Notte API.",
            ["endpoint"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        ),
        api_retries=Counter(
            "notte_exporter_api_retries_total",
            "Requests to the Notte API that were retried after a failure.",
            ["endpoint"],
            registry=registry,
        ),
        bad_api_data=Counter(
            "notte_exporter_api_bad_data_total",
            "Answers or list items from the Notte API that could not be used, by kind.",
            ["endpoint", "kind"],
            registry=registry,
        ),
        shard_ordinal=Gauge(
            "notte_exporter_shard_ordinal", "This replica's shard, 0-based.", registry=registry
        ),
        total_shards=Gauge(
            "notte_exporter_total_shards",
            "Number of shards sharing the sessions.",
            registry=registry,
        ),
        poll_interval=Gauge(
            "notte_exporter_poll_interval_seconds",
            "The configured poll interval, for alerts on stale polling.",
            registry=registry,
        ),
        sweep_enabled=Gauge(
            "notte_exporter_sweep_enabled",
            "1 while the sweep for sessions created since the last cycle runs; 0 when it is "
            "off, or turned itself off because the API lists in no order of creation time.",
            registry=registry,
        ),
        sweep_configured=Gauge(
            "notte_exporter_sweep_configured",
            "1 when the settings ask for the sweep (discovery and sweep on), so an alert can tell "
            "a sweep that turned itself off from one switched off on purpose.",
            registry=registry,
        ),
        deferred_sessions=Gauge(
            "notte_exporter_deferred_sessions",
            "Sessions the last poll cycle wanted but got no answer for in time; they are "
            "asked again (or their late answer applied) first, oldest data first.",
            registry=registry,
        ),
        oldest_refresh_age=Gauge(
            "notte_exporter_oldest_refresh_age_seconds",
            "Age of the stalest data among the sessions still refreshed (not ended), and of "
            "configured sessions never answered yet; 0 when there are none.",
            registry=live,  # a function of the clock: it changes without telling
        ),
        list_truncated=Gauge(
            "notte_exporter_session_list_truncated",
            "1 when the last listing of active sessions stopped at the page cap (max_sessions "
            "times total_shards): sessions past it are not discovered.",
            registry=registry,
        ),
    )
    _initialise(metrics, shard, total_shards, poll_interval)
    return metrics


def _initialise(metrics: SelfMetrics, shard: int, total_shards: int, poll_interval: float) -> None:
    """Series with a known label set exist from the start, so `rate()` works at once."""
    metrics.build_info.info({"version": __version__})
    metrics.shard_ordinal.set(shard)
    metrics.total_shards.set(total_shards)
    metrics.poll_interval.set(poll_interval)
    for result in POLL_RESULTS:
        metrics.polls.labels(result=result)
    for endpoint in ENDPOINTS:
        metrics.api_request_duration.labels(endpoint=endpoint)
        metrics.api_retries.labels(endpoint=endpoint)
        for kind in BAD_DATA_KINDS:
            metrics.bad_api_data.labels(endpoint=endpoint, kind=kind)
