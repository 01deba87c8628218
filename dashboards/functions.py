"""The "Notte / Functions" dashboard: function runs by status, the failure ratio, run
durations, last and next runs, schedules, the runs' sessions, and the functions runtime."""

from __future__ import annotations

from dashboards.panels import (
    FUNCTIONS_UID,
    JOB,
    PanelBuilder,
    dashboard,
    finish,
    fixed_color,
    graph,
    merge_and_organize,
    query,
    query_variable,
    session_links_override,
    single,
    table_panel,
    thresholds,
    value_mappings,
)
from dashboards.sdk import common, dash, dash_model, table
from exporter.labels import RUNTIME_STATUSES

FUNCTION = 'job=~"$job", function_id=~"$function_id"'
RUN_COLORS = {"active": "blue", "closed": "green", "failed": "red"}
RUNTIME_COLORS = dict(zip(RUNTIME_STATUSES, ("green", "orange", "red"), strict=True))


def functions_dashboard() -> dash_model.Dashboard:
    runs = f"notte_function_runs_total{{{FUNCTION}}}"
    failed = f'notte_function_runs_total{{{FUNCTION}, status="failed"}}'
    buckets = f"notte_function_run_duration_seconds_bucket{{{FUNCTION}}}"
    board = (
        dashboard(
            FUNCTIONS_UID,
            "Notte / Functions",
            "Notte functions watched by notte-exporter: runs by status, failures, durations, "
            "schedules and the functions runtime's health.",
        )
        .with_variable(
            query_variable(
                "function_id",
                "Function",
                "Functions exported during the time range.",
                f"label_values(notte_function_info{{{JOB}}}, function_id)",
                multi=True,
            )
        )
        .with_row(dash.Row("Runs"))
        .with_panel(
            graph(
                "Runs by status",
                "Runs under way (notte_function_runs_active), and runs seen ending per minute "
                "by final status (increase of notte_function_runs_total).",
                "short",
                query(f"sum(notte_function_runs_active{{{FUNCTION}}})", "active"),
                query(f"sum by (status) (increase({runs}[$__rate_interval]))", "{{status}}"),
            )
            .override_by_name("active", [fixed_color(RUN_COLORS["active"])])
            .override_by_name("closed", [fixed_color(RUN_COLORS["closed"])])
            .override_by_name("failed", [fixed_color(RUN_COLORS["failed"])])
        )
        .with_panel(
            graph(
                "Failure ratio",
                "Share of each function's ended runs that failed, per rate interval; empty "
                "where no run ended. NotteFunctionRunsFailing fires when it passes one half "
                "over an hour.",
                "percentunit",
                query(
                    f"(sum by (function_id) (increase({failed}[$__rate_interval])) or 0 * sum "
                    f"by (function_id) (increase({runs}[$__rate_interval]))) / (sum by "
                    f"(function_id) (increase({runs}[$__rate_interval])) > 0)",
                    "{{function_id}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Run duration percentiles",
                "Median, 90th and 99th percentile of the duration of runs that ended, over "
                "the selected functions (updated_at - created_at of each run).",
                "s",
                *(
                    query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(increase({buckets}[$__rate_interval])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ),
            )
        )
        .with_panel(
            graph(
                "Runs ended, by function",
                "Runs seen ending per minute, by function and final status.",
                "short",
                query(
                    f"sum by (function_id, status) (increase({runs}[$__rate_interval]))",
                    "{{function_id}} {{status}}",
                ),
            )
        )
        .with_row(dash.Row("Schedules"))
        .with_panel(schedules_table())
        .with_row(dash.Row("Runs under way and the runtime"))
        .with_panel(run_sessions_table())
        .with_panel(runtime_status())
        .with_panel(
            single(
                "Runtime reachable",
                "Whether the functions runtime answered the API's probe (GET /functions/health).",
                "none",
                query(f"max(notte_functions_runtime_reachable{{{JOB}}})"),
                width=4,
            )
            .mappings(value_mappings({"0": ("unreachable", "red"), "1": ("reachable", "green")}))
            .color_mode(common.BigValueColorMode.BACKGROUND)
        )
        .with_panel(
            graph(
                "Runtime latency",
                "Round trip from the Notte API to the functions runtime, as the API measured it.",
                "s",
                query(f"max(notte_functions_runtime_latency_seconds{{{JOB}}})", "latency"),
                width=4,
                height=8,
            )
        )
    )
    return finish(board.build())


def schedules_table() -> table.Panel:
    """One row per function: name, schedule, its state, the last and next run."""
    info = f"notte_function_info{{{FUNCTION}}}"
    panel = table_panel(
        "Functions, last and next run",
        "Every selected function with its schedule (an EventBridge cron or rate expression, "
        "UTC) and schedule state, the start of its newest run and, for an enabled schedule, "
        "when the next run is due (in the past: late, see NotteFunctionScheduleMissed).",
        "dateTimeAsIso",
        "max by (function_id, name, schedule, schedule_state, default_runtime) "
        f"(last_over_time({info}[$__range]))",
        "1000 * max by (function_id) "
        f"(last_over_time(notte_function_last_run_timestamp_seconds{{{FUNCTION}}}[$__range]))",
        "1000 * max by (function_id) "
        f"(last_over_time(notte_function_next_run_timestamp_seconds{{{FUNCTION}}}[$__range]))",
    )
    return panel.transformations(
        merge_and_organize(
            exclude=("Time", "Value #A"),
            rename={
                "function_id": "Function",
                "name": "Name",
                "schedule": "Schedule",
                "schedule_state": "Schedule state",
                "default_runtime": "Runtime",
                "Value #B": "Last run",
                "Value #C": "Next run",
            },
            order=(
                "function_id",
                "name",
                "schedule",
                "schedule_state",
                "Value #B",
                "Value #C",
                "default_runtime",
            ),
        )
    ).override_by_name(
        "Schedule state",
        [
            dash_model.DynamicConfigValue(
                id_val="mappings",
                value=value_mappings(
                    {"enabled": ("enabled", "green"), "paused": ("paused", "orange")}
                ),
            ),
            dash_model.DynamicConfigValue(
                id_val="custom.cellOptions", value=common.TableColorTextCellOptions()
            ),
        ],
    )


def run_sessions_table() -> table.Panel:
    """Active runs with the session each drives, linked to the session's detail."""
    panel = table_panel(
        "Runs under way and their sessions",
        "Function runs active now, each with the browser session it drives "
        "(notte_function_run_session_info). Click a session for its detail.",
        "none",
        "max by (function_id, function_run_id, session_id) "
        f"(notte_function_run_session_info{{{FUNCTION}}})",
        width=12,
    )
    return panel.transformations(
        merge_and_organize(
            exclude=("Time", "Value"),
            rename={
                "function_id": "Function",
                "function_run_id": "Run",
                "session_id": "Session",
            },
            order=("function_id", "function_run_id", "session_id"),
        )
    ).override_by_name("Session", [session_links_override("${__value.raw}")])


def runtime_status() -> PanelBuilder:
    panel = (
        single(
            "Runtime status",
            "The functions runtime's health as the API reports it: ok, degraded (alive but "
            "too old to describe itself) or unreachable.",
            "none",
            query(f"max by (status) (notte_functions_runtime_status{{{JOB}}}) == 1", "{{status}}"),
            width=4,
        )
        .text_mode(common.BigValueTextMode.NAME)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .thresholds(thresholds("green"))
    )
    for name, color in RUNTIME_COLORS.items():
        panel = panel.override_by_name(name, [fixed_color(color)])
    return panel
