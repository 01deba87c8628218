"""The "Notte / Session detail" dashboard: one session, picked in `$session_id`."""

from __future__ import annotations

from dashboards.panels import (
    DETAIL_UID,
    JOB,
    SESSION,
    STATUS_COLORS,
    dashboard,
    finish,
    graph,
    merge_and_organize,
    query,
    query_variable,
    remaining_thresholds,
    sent_and_received,
    setup,
    single,
    status_colors,
    table_panel,
    value_mappings,
)
from dashboards.sdk import common, dash, dash_model, stat, statetimeline

TIMESTAMPS = (
    ("notte_session_created_timestamp_seconds", "created"),
    ("notte_session_last_accessed_timestamp_seconds", "last accessed"),
    ("notte_session_closed_timestamp_seconds", "closed"),
)


def last(metric: str) -> str:
    """The session's last value of `metric` in the time range."""
    return f"max(last_over_time({metric}{{{SESSION}}}[$__range]))"


def remaining(title: str, until: str, metric: str) -> stat.Panel:
    """Time left before one of the session's limits; empty once it has ended."""
    return (
        single(
            title,
            f"Seconds until {until}, as of the exporter's last poll. Empty once the session "
            "has ended.",
            "s",
            query(f"max({metric}{{{SESSION}}})"),
            width=4,
        )
        .thresholds(remaining_thresholds())
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .no_value("ended")
    )


def session_detail() -> dash_model.Dashboard:
    board = (
        dashboard(
            DETAIL_UID,
            "Notte / Session detail",
            "One Notte session: its status over time, network, idle and duration limits, "
            "steps, and what it reported.",
        )
        .with_variable(
            query_variable(
                "session_id",
                "Session",
                "Sessions exported during the time range.",
                f"label_values(notte_session_status{{{JOB}}}, session_id)",
            )
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
                query(last("notte_session_duration_seconds")),
                width=4,
            )
        )
        .with_panel(
            remaining(
                "Idle time remaining",
                "Notte closes the session for inactivity",
                "notte_session_idle_remaining_seconds",
            )
        )
        .with_panel(
            remaining(
                "Max duration remaining",
                "the session reaches its maximum duration",
                "notte_session_max_duration_remaining_seconds",
            )
        )
        .with_panel(
            single(
                "Function run",
                "The function run this session serves, while the run is active "
                "(notte_function_run_session_info); empty for a session no function started.",
                "none",
                query(
                    "max by (function_id, function_run_id) (last_over_time("
                    f"notte_function_run_session_info{{{SESSION}}}[$__range]))",
                    "{{function_id}} / {{function_run_id}}",
                ),
                width=4,
            )
            .text_mode(common.BigValueTextMode.NAME)
            .no_value("none")
        )
        .with_panel(
            single(
                "Steps",
                "Number of steps the session has run.",
                "short",
                query(last("notte_session_steps")),
                width=4,
            )
        )
        .with_panel(
            single(
                "Network bytes",
                "Bytes sent (requests) and received (responses) by the session's browser.",
                "bytes",
                *sent_and_received(last),
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
                *sent_and_received(lambda metric: f"max({metric}{{{SESSION}}})"),
            )
        )
        .with_panel(
            graph(
                "Network throughput",
                "Bytes per second sent and received by the session's browser.",
                "Bps",
                *sent_and_received(
                    lambda metric: f"sum(rate({metric}{{{SESSION}}}[$__rate_interval]))"
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
                ),
                query(f"max(notte_session_idle_timeout_seconds{{{SESSION}}})", "idle timeout"),
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
            table_panel(
                "Session info",
                "Browser and options of the session (notte_session_info); an empty cell is a "
                "value the API left null.",
                "none",
                "max by (browser_type, proxies, solve_captchas, web_bot_auth) "
                f"(last_over_time(notte_session_info{{{SESSION}}}[$__range]))",
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
                *(query(f"1000 * {last(metric)}", name) for metric, name in TIMESTAMPS),
                width=12,
                height=5,
            )
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .color_mode(common.BigValueColorMode.NONE)
        )
        .with_panel(
            table_panel(
                "Error",
                "The error the session reported, first 200 characters (notte_session_error_info). "
                "Empty when it reported none.",
                "none",
                f"max by (error) (last_over_time(notte_session_error_info{{{SESSION}}}[$__range]))",
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
