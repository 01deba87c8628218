"""The "Notte / Sessions overview" dashboard: the fleet now and over time, endings by
status and close reason, network, durations, and the sessions that need attention."""

from __future__ import annotations

from dashboards.panels import (
    ENDED,
    JOB,
    LIVE,
    OVERVIEW_UID,
    SAME_SESSION,
    STATUS_COLORS,
    dashboard,
    finish,
    fixed_color,
    graph,
    legend,
    query,
    remaining_thresholds,
    sent_and_received,
    session_links,
    session_rows,
    setup,
    single,
    status_colors,
    table_panel,
    thresholds,
    unit_override,
    value_mappings,
)
from dashboards.sdk import (
    bargauge,
    common,
    common_builder,
    dash,
    dash_model,
    histogram,
    table,
    timeseries,
)
from exporter.labels import ENDED_STATUSES

# The endings that count as failures, for the ratio panels and the alert they mirror.
FAILED_STATUSES = ("error", "timed_out")
FAILED = "|".join(FAILED_STATUSES)


def sessions_overview() -> dash_model.Dashboard:
    ended = f"notte_sessions_ended_total{{{JOB}}}"
    failed = f'notte_sessions_ended_total{{{JOB}, status=~"{FAILED}"}}'
    board = (
        dashboard(
            OVERVIEW_UID,
            "Notte / Sessions overview",
            "Notte cloud-browser sessions watched by notte-exporter: status, endings, "
            "network and duration, and the sessions that need attention.",
        )
        .with_row(dash.Row("Now"))
        .with_panel(
            status_colors(
                single(
                    "Sessions by status",
                    "Sessions tracked by the exporter right now, by status (notte_sessions). "
                    "Ended sessions stay tracked for the exporter's retention (15 minutes by "
                    "default).",
                    "short",
                    query(f"sum by (status) (notte_sessions{{{JOB}}})", "{{status}}"),
                    width=12,
                    height=5,
                )
                .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
                .color_mode(common.BigValueColorMode.BACKGROUND)
            )
        )
        .with_panel(
            status_colors(
                single(
                    "Sessions ended in the time range",
                    "Sessions the exporter saw end during the dashboard's time range, by final "
                    "status (increase of notte_sessions_ended_total).",
                    "short",
                    query(f"round(sum by (status) (increase({ended}[$__range])))", "{{status}}"),
                    width=6,
                    height=5,
                )
                .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
                .color_mode(common.BigValueColorMode.VALUE),
                ENDED_STATUSES,
            )
        )
        .with_panel(
            single(
                "Error and timeout ratio in the time range",
                "Share of the sessions that ended during the time range with status error or "
                "timed_out. Empty when no session ended.",
                "percentunit",
                query(
                    f"sum(increase({failed}[$__range])) / (sum(increase({ended}[$__range])) > 0)"
                ),
                width=6,
                height=5,
            )
            .thresholds(thresholds("green", (0.1, "orange"), (0.2, "red")))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .no_value("no session ended")
        )
        .with_row(dash.Row("Over time"))
        .with_panel(
            status_colors(
                graph(
                    "Sessions by status",
                    "Tracked sessions by status over time (notte_sessions).",
                    "short",
                    query(f"sum by (status) (notte_sessions{{{JOB}}})", "{{status}}"),
                    width=8,
                )
            )
        )
        .with_panel(ended_per_minute(ended))
        .with_panel(
            status_colors(
                graph(
                    "Error and timeout ratio",
                    "Share of ending sessions that end with status error or timed_out, over "
                    "time. The NotteSessionFailureRatioHigh alert fires above 20 % over 30 "
                    "minutes. Empty while no session ends.",
                    "percentunit",
                    query(
                        # `> 0` guards the denominator only: a 0 ratio is data.
                        f"sum by (status) (rate({failed}[$__rate_interval])) / ignoring (status) "
                        f"group_left () (sum(rate({ended}[$__rate_interval])) > 0)",
                        "{{status}}",
                    ),
                    width=8,
                )
                .min(0)
                .max(1),
                FAILED_STATUSES,
            )
        )
        .with_panel(
            graph(
                "Sessions ended per minute, by close reason",
                "How many sessions end each minute, by the API's close_reason (manual, "
                "idle_timeout, max_duration, error, or unknown when the API gave none).",
                "cpm",
                query(
                    f"sum by (close_reason) (rate({ended}[$__rate_interval])) * 60",
                    "{{close_reason}}",
                ),
                width=12,
            )
        )
        .with_panel(
            single(
                "Sessions ended in the time range, by close reason",
                "Sessions the exporter saw end during the time range, by close_reason "
                "(increase of notte_sessions_ended_total).",
                "short",
                query(
                    f"round(sum by (close_reason) (increase({ended}[$__range])))",
                    "{{close_reason}}",
                ),
                width=12,
                height=8,
            ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        .with_row(dash.Row("Network"))
        .with_panel(
            graph(
                "Network throughput",
                "Bytes per second sent (requests) and received (responses) by all tracked "
                "sessions' browsers.",
                "Bps",
                *sent_and_received(
                    lambda metric: f"sum(rate({metric}{{{JOB}}}[$__rate_interval]))",
                    ("sent (requests)", "received (responses)"),
                ),
            )
        )
        .with_panel(
            setup(
                bargauge.Panel(),
                "Top sessions by bytes",
                "The ten sessions that moved the most bytes (sent plus received) among those "
                "seen in the time range. Click a bar for the session's detail.",
                "bytes",
                [
                    query(
                        "topk(10, "
                        "max by (session_id) (max_over_time("
                        f"notte_session_network_request_bytes_total{{{JOB}}}[$__range])) + "
                        "max by (session_id) (max_over_time("
                        f"notte_session_network_response_bytes_total{{{JOB}}}[$__range])))",
                        "{{session_id}}",
                        instant=True,
                    )
                ],
                width=12,
                height=8,
            )
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .color_scheme(dash.FieldColor().mode(dash_model.FieldColorModeId.CONTINUOUS_BL_PU))
            .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .data_links(session_links("${__field.labels.session_id}"))
            .min(0)
        )
        .with_row(dash.Row("Duration"))
        .with_panel(
            setup(
                histogram.Panel(),
                "Duration of sessions that ended",
                "Distribution of the final duration of the sessions seen ending in the time "
                "range (last notte_session_duration_seconds of each session seen closed, "
                "errored or timed out).",
                "s",
                [
                    query(
                        "max by (session_id) ("
                        f"last_over_time(notte_session_duration_seconds{{{JOB}}}[$__range]) "
                        f"and {SAME_SESSION} "
                        "(last_over_time("
                        f'notte_session_status{{{JOB}, status=~"{ENDED}"}}[$__range]) == 1))',
                        "{{session_id}}",
                        instant=True,
                        table_format=True,
                    )
                ],
                width=12,
                height=8,
            )
            .combine(True)
            .legend(legend())
            .fill_opacity(60)
        )
        .with_panel(
            graph(
                "Age of live sessions",
                "Oldest and median age of the sessions live now, active or authenticating "
                "(notte_session_duration_seconds of the sessions not ended).",
                "s",
                query(
                    f"max(notte_session_duration_seconds{{{JOB}}} and {SAME_SESSION} {LIVE})",
                    "oldest",
                ),
                query(
                    "quantile(0.5, "
                    f"notte_session_duration_seconds{{{JOB}}} and {SAME_SESSION} {LIVE})",
                    "median",
                ),
            )
        )
        .with_row(dash.Row("Sessions needing attention"))
        .with_panel(live_sessions_table())
        .with_panel(errored_sessions_table())
    )
    return finish(account_row(board).build())


def account_row(board: dash.Dashboard) -> dash.Dashboard:
    """The account: what this usage period cost so far, the balance, the limits, and
    whether the usage limit stops new sessions (`GET /usage`, read every 5 minutes)."""
    return (
        board.with_row(dash.Row("Account"))
        .with_panel(
            graph(
                "Cost this period, by kind",
                "What the current usage period has cost so far, by kind (browser, proxy, "
                "llm, function) and in total, in the account's currency (notte_usage_cost).",
                "none",
                query(f"max by (kind) (notte_usage_cost{{{JOB}}})", "{{kind}}"),
                width=10,
            )
        )
        .with_panel(
            graph(
                "Balance",
                "Balance left of the subscription's and the top-up's limits, and in total, in "
                "the account's currency (notte_usage_balance). NotteBalanceExhaustedSoon "
                "fires when its trend reaches 0 within a day.",
                "none",
                query(f"max by (kind) (notte_usage_balance{{{JOB}}})", "{{kind}}"),
                width=8,
            )
        )
        .with_panel(
            single(
                "Usage limit",
                "This period's limits, in the account's currency (notte_usage_limit).",
                "none",
                query(f"max by (kind) (notte_usage_limit{{{JOB}}})", "{{kind}}"),
                width=3,
            ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        .with_panel(
            single(
                "Usage limit state",
                "Whether the account's usage limit is reached (notte_usage_limit_exceeded): "
                "then every new session and function run fails.",
                "none",
                query(f"max(notte_usage_limit_exceeded{{{JOB}}})"),
                width=3,
            )
            .mappings(value_mappings({"0": ("within limit", "green"), "1": ("EXCEEDED", "red")}))
            .color_mode(common.BigValueColorMode.BACKGROUND)
        )
    )


def ended_per_minute(ended: str) -> timeseries.Panel:
    """Endings by final status; the failed ones filled and thicker, so they stand out."""
    panel = graph(
        "Sessions ended per minute, by final status",
        "How many sessions end each minute, by final status (rate of "
        "notte_sessions_ended_total). Errors and timeouts are drawn filled so they "
        "stand out.",
        "cpm",
        query(f"sum by (status) (rate({ended}[$__rate_interval])) * 60", "{{status}}"),
        width=8,
    ).override_by_name("closed", [fixed_color(STATUS_COLORS["closed"])])
    for status in FAILED_STATUSES:
        panel = panel.override_by_name(
            status,
            [
                fixed_color(STATUS_COLORS[status]),
                dash_model.DynamicConfigValue(id_val="custom.fillOpacity", value=40),
                dash_model.DynamicConfigValue(id_val="custom.lineWidth", value=2),
            ],
        )
    return panel


def live_sessions_table() -> table.Panel:
    def live(expr: str) -> str:
        return f"max by (session_id) ({expr} and {SAME_SESSION} {LIVE})"

    remaining = [
        *unit_override("s"),
        dash_model.DynamicConfigValue(id_val="thresholds", value=remaining_thresholds().build()),
        dash_model.DynamicConfigValue(
            id_val="custom.cellOptions",
            value=common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.BASIC
            ),
        ),
    ]
    panel = table_panel(
        "Live sessions",
        "Sessions live now (active, or authenticating: waiting for a managed-auth login), "
        "soonest idle timeout first. Idle time remaining: seconds until "
        "Notte closes the session for inactivity; max duration remaining: seconds until it "
        "reaches its maximum duration (both as of the exporter's last poll). Red under a "
        "minute, orange under five. Click a session for its detail.",
        "s",
        f"max by (session_id) (notte_session_idle_remaining_seconds{{{JOB}}})",
        f"max by (session_id) (notte_session_max_duration_remaining_seconds{{{JOB}}})",
        live(f"notte_session_duration_seconds{{{JOB}}}"),
        live(f"notte_session_steps{{{JOB}}}"),
        live(
            f"(notte_session_network_request_bytes_total{{{JOB}}} + {SAME_SESSION} "
            f"notte_session_network_response_bytes_total{{{JOB}}})"
        ),
        f"max by (session_id, browser_type) (notte_session_info{{{JOB}}} "
        f"and {SAME_SESSION} {LIVE})",
        f"max by (session_id, status) ({LIVE})",
        height=10,
    )
    return session_rows(
        panel.override_by_name("Idle time remaining", remaining)
        .override_by_name("Max duration remaining", remaining)
        .override_by_name("Steps", unit_override("short"))
        .override_by_name("Bytes", unit_override("bytes")),
        exclude=("Time", "Value #F", "Value #G"),
        rename={
            "browser_type": "Browser",
            "Value #A": "Idle time remaining",
            "Value #B": "Max duration remaining",
            "Value #C": "Age",
            "Value #D": "Steps",
            "Value #E": "Bytes",
        },
        order=(
            "session_id",
            "status",
            "Value #A",
            "Value #B",
            "Value #C",
            "Value #D",
            "Value #E",
            "browser_type",
        ),
        sort_by="Idle time remaining",
        descending=False,
    )


def errored_sessions_table() -> table.Panel:
    errored = f"max by (session_id) (last_over_time(notte_session_error_info{{{JOB}}}[$__range]))"
    panel = table_panel(
        "Recently errored sessions",
        "Sessions that reported an error during the time range, newest first, with the "
        "error message (first 200 characters) and the final status. Click a session for "
        "its detail.",
        "dateTimeAsIso",
        f"max by (session_id, error) (last_over_time(notte_session_error_info{{{JOB}}}[$__range]))",
        "1000 * (max by (session_id) "
        f"(last_over_time(notte_session_closed_timestamp_seconds{{{JOB}}}[$__range])) "
        f"and on (session_id) {errored})",
        "max by (session_id, status) "
        f"(last_over_time(notte_session_status{{{JOB}}}[$__range]) == 1) "
        f"and on (session_id) {errored}",
    )
    return session_rows(
        panel,
        exclude=("Time", "Value #A", "Value #C"),
        rename={"error": "Error", "Value #B": "Ended at"},
        order=("session_id", "Value #B", "status", "error"),
        sort_by="Ended at",
        descending=True,
    ).override_by_name(
        "Status",
        [
            dash_model.DynamicConfigValue(
                id_val="mappings",
                value=value_mappings(
                    {name: (name, color) for name, color in STATUS_COLORS.items()}
                ),
            ),
            dash_model.DynamicConfigValue(
                id_val="custom.cellOptions", value=common.TableColorTextCellOptions()
            ),
        ],
    )
