"""The "Notte / Exporter health" dashboard: notte-exporter itself, its view of the Notte
API, what it covers (sweep, deferral, shards), what it tracks, and its process."""

from __future__ import annotations

from dashboards.panels import (
    EXPORTER,
    HEALTH_UID,
    JOB,
    Query,
    dashboard,
    finish,
    fixed_color,
    graph,
    query,
    query_variable,
    single,
    thresholds,
    value_mappings,
)
from dashboards.sdk import common, dash, dash_model, stat

UP = {"0": ("down", "red"), "1": ("up", "green")}


def on_off(
    title: str, description: str, metric: str, states: dict[str, tuple[str, str]], **size: int
) -> stat.Panel:
    """A 0/1 metric of each instance, as a coloured word."""
    return (
        single(title, description, "none", query(f"{metric}{{{EXPORTER}}}", "{{instance}}"), **size)
        .mappings(value_mappings(states))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    )


def percentiles(histogram: str, by: str = "") -> list[Query]:
    """Median and 99th percentile of a histogram of the exporter, by `by` when given."""
    group = f"{by}, le" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        query(
            f"histogram_quantile({quantile}, sum by ({group}) "
            f"(rate({histogram}_bucket{{{EXPORTER}}}[$__rate_interval])))",
            f"{legend}{name}",
        )
        for quantile, name in ((0.5, "p50"), (0.99, "p99"))
    ]


def exporter_health() -> dash_model.Dashboard:
    requests = f"notte_exporter_api_requests_total{{{EXPORTER}}}"
    failed_requests = f'notte_exporter_api_requests_total{{{EXPORTER}, code!~"2..|404"}}'
    board = (
        dashboard(
            HEALTH_UID,
            "Notte / Exporter health",
            "notte-exporter itself: can it reach the Notte API, how its poll cycles and API "
            "requests go, what it tracks and drops, and its process resources.",
        )
        .with_variable(
            query_variable(
                "instance",
                "Instance",
                "notte-exporter replicas (one per shard).",
                f"label_values(notte_exporter_build_info{{{JOB}}}, instance)",
                multi=True,
            )
        )
        .with_row(dash.Row("Status"))
        .with_panel(
            on_off(
                "Notte API (notte_up)",
                "1 (up) when the exporter's last poll cycle reached the Notte API and was "
                "authorised; 0 (down) otherwise. NotteApiDown fires after 5 minutes down.",
                "notte_up",
                UP,
            )
        )
        .with_panel(
            on_off(
                "Scrape target",
                "Prometheus' own `up` for the exporter: 0 means the exporter cannot be scraped.",
                "up",
                UP,
            )
        )
        .with_panel(
            single(
                "Time since last successful poll",
                "Seconds since the exporter last completed a successful poll cycle; it should "
                "stay below a few poll intervals (notte_exporter_poll_interval_seconds, 15 s by "
                "default). Empty if no cycle ever succeeded.",
                "s",
                query(
                    "time() - max by (instance) "
                    f"(notte_exporter_last_poll_success_timestamp_seconds{{{EXPORTER}}} > 0)",
                    "{{instance}}",
                ),
            )
            .thresholds(thresholds("green", (60, "orange"), (180, "red")))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .no_value("never")
        )
        .with_panel(
            single(
                "Version",
                "notte-exporter version of each instance (notte_exporter_build_info).",
                "none",
                query(
                    f"max by (instance, version) (notte_exporter_build_info{{{EXPORTER}}})",
                    "{{version}}",
                ),
            ).text_mode(common.BigValueTextMode.NAME)
        )
        .with_row(dash.Row("Polling"))
        .with_panel(
            graph(
                "Poll cycle duration",
                "How long poll cycles take: median, 99th percentile and mean "
                "(notte_exporter_poll_duration_seconds).",
                "s",
                *percentiles("notte_exporter_poll_duration_seconds"),
                query(
                    "sum(rate("
                    f"notte_exporter_poll_duration_seconds_sum{{{EXPORTER}}}[$__rate_interval])) / "
                    "sum(rate("
                    f"notte_exporter_poll_duration_seconds_count{{{EXPORTER}}}[$__rate_interval]))",
                    "mean",
                ),
            )
        )
        .with_panel(
            graph(
                "Poll cycles per minute, by result",
                "Poll cycles per minute that succeeded or failed (notte_exporter_polls_total).",
                "cpm",
                query(
                    "sum by (result) "
                    f"(rate(notte_exporter_polls_total{{{EXPORTER}}}[$__rate_interval])) * 60",
                    "{{result}}",
                ),
            )
            .override_by_name("success", [fixed_color("green")])
            .override_by_name("failure", [fixed_color("red")])
        )
        .with_row(dash.Row("Notte API"))
        .with_panel(
            graph(
                "API requests by endpoint and code",
                "Requests per second to the Notte API, by endpoint and HTTP status (`error` is a "
                "transport failure or timeout; `cut` a request given up on, work thrown away: "
                "0 in a healthy run).",
                "reqps",
                query(
                    "sum by (endpoint, code) "
                    f"(rate(notte_exporter_api_requests_total{{{EXPORTER}}}[$__rate_interval]))",
                    "{{endpoint}} {{code}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "API error ratio",
                "Share of Notte API requests that failed (transport error, 4xx other than 404, "
                "5xx), by endpoint. NotteApiErrorRateHigh fires above 10 % over 10 minutes.",
                "percentunit",
                query(
                    # The failed requests have no series until the first failure: `or`
                    # a zero per endpoint, so a healthy API draws 0 rather than nothing.
                    f"(sum by (endpoint) (rate({failed_requests}[$__rate_interval])) "
                    f"or 0 * sum by (endpoint) (rate({requests}[$__rate_interval]))) "
                    f"/ sum by (endpoint) (rate({requests}[$__rate_interval]))",
                    "{{endpoint}}",
                ),
                width=8,
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            graph(
                "API request latency",
                "Notte API request duration by endpoint: median and 99th percentile "
                "(notte_exporter_api_request_duration_seconds).",
                "s",
                *percentiles("notte_exporter_api_request_duration_seconds", "endpoint"),
                width=8,
            )
        )
        .with_row(dash.Row("Coverage"))
        .with_panel(
            on_off(
                "Sweep",
                "on while the sweep lists the newest sessions of any status each cycle, so that "
                "sessions shorter than a poll interval are seen (notte_exporter_sweep_enabled); "
                "off when --no-sweep or --no-discovery is set, or when the sweep turned itself "
                "off because the API lists sessions in no time order. "
                "NotteExporterSweepDisabled fires while it is off.",
                "notte_exporter_sweep_enabled",
                {"0": ("off", "orange"), "1": ("on", "green")},
                height=8,
            )
        )
        .with_panel(
            graph(
                "Deferred sessions",
                "Sessions the last poll cycle got no answer for in time; their data is now the "
                "oldest, so they are asked first (notte_exporter_deferred_sessions). Above 0 "
                "for long, the API is too slow for the poll interval and concurrency: "
                "NotteExporterSessionsDeferred fires after 15 minutes.",
                "short",
                query(
                    f"max by (instance) (notte_exporter_deferred_sessions{{{EXPORTER}}})",
                    "{{instance}}",
                ),
                width=9,
            ).min(0)
        )
        .with_panel(
            graph(
                "Oldest session data",
                "Age of the stalest values exported for a session still running, or of the "
                "longest wait for a configured session's first answer "
                "(notte_exporter_oldest_refresh_age_seconds), against the poll interval. "
                "Sessions are fetched oldest data first, so this is the one waiting longest: "
                "NotteExporterSessionDataStale fires past 5 intervals.",
                "s",
                query(
                    f"max by (instance) (notte_exporter_oldest_refresh_age_seconds{{{EXPORTER}}})",
                    "{{instance}}",
                ),
                query(
                    f"max(notte_exporter_poll_interval_seconds{{{EXPORTER}}})",
                    "poll interval",
                ),
                width=9,
            ).min(0)
        )
        .with_panel(
            single(
                "Shards",
                "Each replica's shard (notte_exporter_shard_ordinal) out of the number of "
                "shards it was given (notte_exporter_total_shards). Every shard from 0 to "
                "total - 1 should appear once: NotteExporterShardsMissing and "
                "NotteExporterShardingMismatch fire otherwise.",
                "none",
                query(
                    f"max by (instance) (notte_exporter_shard_ordinal{{{EXPORTER}}})",
                    "{{instance}} shard",
                ),
                query(f"max(notte_exporter_total_shards{{{EXPORTER}}})", "total shards"),
                height=8,
            ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        .with_row(dash.Row("Tracked sessions"))
        .with_panel(
            graph(
                "Tracked sessions by source",
                "Sessions the exporter tracks, configured (by ID) or discovered "
                "(notte_exporter_tracked_sessions).",
                "short",
                query(
                    f"sum by (source) (notte_exporter_tracked_sessions{{{EXPORTER}}})",
                    "{{source}}",
                ),
            ).min(0)
        )
        .with_panel(
            graph(
                "Dropped sessions per minute, by reason",
                "Sessions dropped per minute: retention (ended and kept long enough), "
                "not_found (the API answered 404), limit (the max-sessions cap; "
                "NotteExporterSessionLimitReached fires).",
                "cpm",
                query(
                    "sum by (reason) "
                    "(rate(notte_exporter_sessions_dropped_total"
                    f"{{{EXPORTER}}}[$__rate_interval])) * 60",
                    "{{reason}}",
                ),
            ).override_by_name("limit", [fixed_color("red")])
        )
        .with_row(dash.Row("Process"))
        .with_panel(
            graph(
                "Memory",
                "Resident memory of each exporter process (process_resident_memory_bytes).",
                "bytes",
                query(f"process_resident_memory_bytes{{{EXPORTER}}}", "{{instance}}"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "CPU",
                "CPU used by each exporter process; 100 % is one core "
                "(rate of process_cpu_seconds_total).",
                "percentunit",
                query(
                    f"rate(process_cpu_seconds_total{{{EXPORTER}}}[$__rate_interval])",
                    "{{instance}}",
                ),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Open file descriptors",
                "Open file descriptors of each exporter process, against its limit.",
                "short",
                query(f"process_open_fds{{{EXPORTER}}}", "{{instance}} open"),
                query(f"process_max_fds{{{EXPORTER}}}", "{{instance}} max"),
                width=8,
            )
        )
    )
    return finish(board.build())
