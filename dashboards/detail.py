"""The "Notte / Session detail" dashboard: one session, picked in `$session_id`."""

from __future__ import annotations

from dashboards.panels import (
    DATASOURCE,
    DETAIL_UID,
    JOB,
    SESSION,
    STATUS_COLORS,
    dashboard,
    finish,
    graph,
    merge_and_organize,
    query,
    setup,
    single,
    status_colors,
    thresholds,
    value_mappings,
)
from dashboards.sdk import common, dash, dash_model, statetimeline, table


def session_detail() -> dash_model.Dashboard:
    def last(metric: str) -> str:
        return f"max(last_over_time({metric}{{{SESSION}}}[$__range]))"

    remaining_thresholds = thresholds("red", (60, "orange"), (300, "green"))
    board = (
        dashboard(
            DETAIL_UID,
            "Notte / Session detail",
            "One Notte session: its status over time, network, idle and duration limits, "
            "steps, and what it reported.",
        )
        .with_variable(
            dash.QueryVariable("session_id")
            .label("Session")
            .description("Sessions exported during the time range.")
            .datasource(DATASOURCE)
            .query(f"label_values(notte_session_status{{{JOB}}}, session_id)")
            .definition(f"label_values(notte_session_status{{{JOB}}}, session_id)")
            .refresh(dash_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_model.VariableSort.ALPHABETICAL_ASC)
        )
        .with_row(dash.Row("Session $session_id"))
        .with_panel(
            status_colors(
                single(
                    "Status",
                    "The session's last known status in the time range.",
                    "none",
                    query(
                        "max by (status) "
                        f"(last_over_time(notte_session_status{{{SESSION}}}[$__range])) == 1",
                        "{{status}}",
                        instant=True,
                    ),
                    width=4,
                )
                .text_mode(common.BigValueTextMode.NAME)
                .color_mode(common.BigValueColorMode.BACKGROUND)
            )
        )
        .with_panel(
            single(
                "Duration",
                "Time since creation for a live session; the final duration for an ended one.",
                "s",
                query(last("notte_session_duration_seconds"), instant=True),
                width=4,
            )
        )
        .with_panel(
            single(
                "Idle time remaining",
                "Seconds until Notte closes the session for inactivity, as of the exporter's "
                "last poll. Empty once the session has ended.",
                "s",
                query(f"max(notte_session_idle_remaining_seconds{{{SESSION}}})", instant=True),
                width=4,
            )
            .thresholds(remaining_thresholds)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .no_value("ended")
        )
        .with_panel(
            single(
                "Max duration remaining",
                "Seconds until the session reaches its maximum duration, as of the exporter's "
                "last poll. Empty once the session has ended.",
                "s",
                query(
                    f"max(notte_session_max_duration_remaining_seconds{{{SESSION}}})",
                    instant=True,
                ),
                width=4,
            )
            .thresholds(remaining_thresholds)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .no_value("ended")
        )
        .with_panel(
            single(
                "Steps",
                "Number of steps the session has run.",
                "short",
                query(last("notte_session_steps"), instant=True),
                width=4,
            )
        )
        .with_panel(
            single(
                "Network bytes",
                "Bytes sent (requests) and received (responses) by the session's browser.",
                "bytes",
                query(last("notte_session_network_request_bytes_total"), "sent", instant=True),
                query(
                    last("notte_session_network_response_bytes_total"),
                    "received",
                    ref="B",
                    instant=True,
                ),
                width=4,
            ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        .with_row(dash.Row("Over time"))
        .with_panel(status_timeline())
        .with_panel(
            graph(
                "Network bytes",
                "Cumulative bytes sent and received by the session's browser.",
                "bytes",
                query(f"max(notte_session_network_request_bytes_total{{{SESSION}}})", "sent"),
                query(
                    f"max(notte_session_network_response_bytes_total{{{SESSION}}})",
                    "received",
                    ref="B",
                ),
            )
        )
        .with_panel(
            graph(
                "Network throughput",
                "Bytes per second sent and received by the session's browser.",
                "Bps",
                query(
                    f"sum(rate(notte_session_network_request_bytes_total{{{SESSION}}}[$__rate_interval]))",
                    "sent",
                ),
                query(
                    f"sum(rate(notte_session_network_response_bytes_total{{{SESSION}}}[$__rate_interval]))",
                    "received",
                    ref="B",
                ),
            )
        )
        .with_panel(
            graph(
                "Idle and max-duration time remaining",
                "Seconds left before the idle timeout and before the maximum duration, while the "
                "session is live, with the configured idle timeout for reference.",
                "s",
                query(
                    f"max(notte_session_idle_remaining_seconds{{{SESSION}}})", "idle time remaining"
                ),
                query(
                    f"max(notte_session_max_duration_remaining_seconds{{{SESSION}}})",
                    "max duration remaining",
                    ref="B",
                ),
                query(
                    f"max(notte_session_idle_timeout_seconds{{{SESSION}}})",
                    "idle timeout",
                    ref="C",
                ),
            ).min(0)
        )
        .with_panel(
            graph(
                "Steps",
                "Number of steps the session has run, over time.",
                "short",
                query(f"max(notte_session_steps{{{SESSION}}})", "steps"),
            ).min(0)
        )
        .with_row(dash.Row("Details"))
        .with_panel(
            setup(
                table.Panel(),
                "Session info",
                "Browser and options of the session (notte_session_info); an empty cell is a "
                "value the API left null.",
                "none",
                [
                    query(
                        "max by (browser_type, proxies, solve_captchas, web_bot_auth) "
                        f"(last_over_time(notte_session_info{{{SESSION}}}[$__range]))",
                        instant=True,
                        table_format=True,
                    )
                ],
                width=8,
                height=5,
            ).transformations(merge_and_organize(exclude=("Time", "Value"), rename={}, order=()))
        )
        .with_panel(
            single(
                "Close reason",
                "Why the session ended, as the API reports it (notte_session_close_reason): "
                "manual, idle_timeout, max_duration, error or unknown. Empty while it is live.",
                "none",
                query(
                    "max by (close_reason) "
                    f"(last_over_time(notte_session_close_reason{{{SESSION}}}[$__range]))",
                    "{{close_reason}}",
                    instant=True,
                ),
                width=4,
                height=5,
            )
            .text_mode(common.BigValueTextMode.NAME)
            .no_value("still live")
        )
        .with_panel(
            single(
                "Timestamps",
                "When the session was created, last used, and closed (closed only once it ended).",
                "dateTimeAsIso",
                query(
                    f"1000 * {last('notte_session_created_timestamp_seconds')}",
                    "created",
                    instant=True,
                ),
                query(
                    f"1000 * {last('notte_session_last_accessed_timestamp_seconds')}",
                    "last accessed",
                    ref="B",
                    instant=True,
                ),
                query(
                    f"1000 * {last('notte_session_closed_timestamp_seconds')}",
                    "closed",
                    ref="C",
                    instant=True,
                ),
                width=12,
                height=5,
            )
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .color_mode(common.BigValueColorMode.NONE)
        )
        .with_panel(
            setup(
                table.Panel(),
                "Error",
                "The error the session reported, first 200 characters (notte_session_error_info). "
                "Empty when it reported none.",
                "none",
                [
                    query(
                        "max by (error) "
                        f"(last_over_time(notte_session_error_info{{{SESSION}}}[$__range]))",
                        instant=True,
                        table_format=True,
                    )
                ],
                width=24,
                height=4,
            )
            .transformations(
                merge_and_organize(exclude=("Time", "Value"), rename={"error": "Error"}, order=())
            )
            .no_value("no error")
        )
    )
    return finish(board.build())


def status_timeline() -> statetimeline.Panel:
    panel: statetimeline.Panel = setup(
        statetimeline.Panel(),
        "Status timeline",
        "The session's status over time: one lane per status, filled while it is the current one.",
        "none",
        [query(f"max by (status) (notte_session_status{{{SESSION}}})", "{{status}}")],
        width=24,
        height=6,
    )
    panel = panel.show_value(common.VisibilityMode.NEVER).merge_values(True).fill_opacity(80)
    for name, color in STATUS_COLORS.items():
        panel = panel.override_by_name(
            name,
            [
                dash_model.DynamicConfigValue(
                    id_val="mappings",
                    value=value_mappings({"0": ("", "transparent"), "1": (name, color)}),
                )
            ],
        )
    return panel
