"""Build the notte-exporter Grafana dashboards and write them as JSON.

    python dashboards/generate.py           # rewrite dashboards/*.json
    python dashboards/generate.py --check   # exit 1 if a committed file is out of date

The dashboards are built with the Grafana Foundation SDK (a dev dependency, pinned).
They use the classic dashboard JSON model: file provisioning and the Kubernetes
Grafana sidecar load it in every Grafana version still in use, whereas the SDK's
`dashboardv2` resources need Grafana 12's new dashboard API. The SDK flags the
classic builder as deprecated at import time; that warning is silenced here, on
purpose, and nowhere else.

Conventions, checked by tests/test_dashboards.py: a `datasource` variable (no
import-only `${DS_...}` inputs), a `job` variable used by every selector, stable
uids, a unit and a description on every panel, `$__rate_interval` in every rate,
and links between the three dashboards that keep the time range and variables.
After changing a dashboard, also run `python deploy/kubernetes/generate.py`, which
copies the JSON into the Kubernetes ConfigMap sources.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # The SDK warns, while importing, that the classic model is deprecated (see above).
    warnings.filterwarnings(
        "ignore", message="Prefer using dashboardv2", category=DeprecationWarning
    )
    from grafana_foundation_sdk.builders import (
        bargauge,
        histogram,
        prometheus,
        stat,
        statetimeline,
        table,
        timeseries,
    )
    from grafana_foundation_sdk.builders import common as common_builder
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as dash_model
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent

TAG = "notte-exporter"
OVERVIEW_UID = "notte-sessions-overview"
DETAIL_UID = "notte-session-detail"
HEALTH_UID = "notte-exporter-health"

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'
EXPORTER = 'job=~"$job", instance=~"$instance"'
SESSION = 'job=~"$job", session_id="$session_id"'
ACTIVE = f'notte_session_status{{{JOB}, status="active"}} == 1'
SAME_SESSION = "on (job, instance, session_id)"

STATUS_COLORS = {
    "active": "blue",
    "closed": "green",
    "error": "red",
    "timed_out": "orange",
}


def detail_url(session: str) -> str:
    """The link from a session to its detail page; the variables and time range follow."""
    return (
        f"/d/{DETAIL_UID}/notte-session-detail?${{datasource:queryparam}}&${{job:queryparam}}"
        f"&var-session_id={session}&${{__url_time_range}}"
    )


PanelBuilder = Any  # the SDK's panel builders share no usable base class


# --- small building blocks -------------------------------------------------------------


def query(
    expr: str,
    legend: str | None = None,
    *,
    ref: str = "A",
    instant: bool = False,
    table_format: bool = False,
) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend is not None:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def setup(
    panel: PanelBuilder,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prometheus.Dataquery],
    *,
    width: int,
    height: int,
) -> PanelBuilder:
    panel = (
        panel.title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
    )
    for q in queries:
        panel = panel.with_target(q)
    return panel


def thresholds(base: str, *steps: tuple[float, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dash_model.ThresholdsMode.ABSOLUTE)
        .steps(
            [dash_model.Threshold(value=None, color=base)]
            + [dash_model.Threshold(value=value, color=color) for value, color in steps]
        )
    )


def fixed_color(color: str) -> dash_model.DynamicConfigValue:
    return dash_model.DynamicConfigValue(
        id_val="color", value={"mode": "fixed", "fixedColor": color}
    )


def status_colors(panel: PanelBuilder, names: Sequence[str] = tuple(STATUS_COLORS)) -> PanelBuilder:
    for name in names:
        panel = panel.override_by_name(name, [fixed_color(STATUS_COLORS[name])])
    return panel


def value_mappings(values: dict[str, tuple[str, str]]) -> list[dash_model.ValueMapping]:
    return [
        dash_model.ValueMap(
            options={
                value: dash_model.ValueMappingResult(text=text, color=color, index=index)
                for index, (value, (text, color)) in enumerate(values.items())
            }
        )
    ]


def legend(
    *, table_mode: bool = False, calcs: Sequence[str] = ()
) -> common_builder.VizLegendOptions:
    mode = common.LegendDisplayMode.TABLE if table_mode else common.LegendDisplayMode.LIST
    return (
        common_builder.VizLegendOptions()
        .show_legend(True)
        .display_mode(mode)
        .placement(common.LegendPlacement.BOTTOM)
        .calcs(list(calcs))
    )


def tooltip() -> common_builder.VizTooltipOptions:
    return (
        common_builder.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.DESCENDING)
    )


def graph(
    title: str,
    description: str,
    unit: str,
    *queries: prometheus.Dataquery,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel: timeseries.Panel = setup(
        timeseries.Panel(), title, description, unit, queries, width=width, height=height
    )
    return (
        panel.legend(legend(table_mode=True, calcs=("lastNotNull", "max")))
        .tooltip(tooltip())
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
    )


def single(
    title: str,
    description: str,
    unit: str,
    *queries: prometheus.Dataquery,
    width: int = 6,
    height: int = 4,
) -> stat.Panel:
    panel: stat.Panel = setup(
        stat.Panel(), title, description, unit, queries, width=width, height=height
    )
    # Uncoloured unless a panel asks: Grafana's default thresholds (red from 80) would
    # paint any duration or count above 80 red.
    return (
        panel.reduce_options(
            common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.NONE)
    )


def merge_and_organize(
    exclude: Sequence[str], rename: dict[str, str], order: Sequence[str]
) -> list[dash_model.DataTransformerConfig]:
    """Instant table queries joined into one row per session (Grafana's Merge)."""
    return [
        dash_model.DataTransformerConfig(id_val="merge", options={}),
        dash_model.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": dict.fromkeys(exclude, True),
                "renameByName": rename,
                "indexByName": {name: index for index, name in enumerate(order)},
            },
        ),
    ]


class DataLink:
    """A panel data link: Grafana wants only a title and a URL here, not the many fields
    of the SDK's dashboard-link builder."""

    def __init__(self, title: str, url: str) -> None:
        self.title = title
        self.url = url

    def build(self) -> dict[str, object]:
        return {"title": self.title, "url": self.url, "targetBlank": False}


def session_links(value: str) -> list[DataLink]:
    return [DataLink("Session detail", detail_url(value))]


def session_links_override(value: str) -> dash_model.DynamicConfigValue:
    return dash_model.DynamicConfigValue(
        id_val="links", value=[link.build() for link in session_links(value)]
    )


def dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .tooltip(dash_model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .annotation(
            dash.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(common.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .link(
            dash.DashboardLink("Notte dashboards")
            .type(dash_model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(False)
            .keep_time(True)
            .include_vars(True)
        )
        .with_variable(
            dash.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .description("The Prometheus that scrapes notte-exporter.")
        )
        .with_variable(
            dash.QueryVariable("job")
            .label("Job")
            .description("The scrape job(s) of notte-exporter.")
            .datasource(DATASOURCE)
            .query("label_values(notte_exporter_build_info, job)")
            .definition("label_values(notte_exporter_build_info, job)")
            .refresh(dash_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".+")
        )
    )


def finish(built: dash_model.Dashboard) -> dash_model.Dashboard:
    """Give every panel a stable id, in layout order, and show the dashboard links and the
    annotation toggle in the header: the SDK files them in the controls menu, which hides
    them."""
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    # The SDK types `placement` as always set, but leaves it out of the JSON when None.
    for link in built.links or []:
        link.placement = None  # type: ignore[assignment]
    for annotation in built.annotations.list_val or [] if built.annotations else []:
        annotation.placement = None  # type: ignore[assignment]
    return built


# --- dashboard 1: sessions overview ----------------------------------------------------


def sessions_overview() -> dash_model.Dashboard:
    ended = f"notte_sessions_ended_total{{{JOB}}}"
    failed = f'notte_sessions_ended_total{{{JOB}, status=~"error|timed_out"}}'
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
                    query(f"sum by (status) (notte_sessions{{{JOB}}})", "{{status}}", instant=True),
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
                    query(
                        f"round(sum by (status) (increase({ended}[$__range])))",
                        "{{status}}",
                        instant=True,
                    ),
                    width=6,
                    height=5,
                )
                .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
                .color_mode(common.BigValueColorMode.VALUE),
                ("closed", "error", "timed_out"),
            )
        )
        .with_panel(
            single(
                "Error and timeout ratio in the time range",
                "Share of the sessions that ended during the time range with status error or "
                "timed_out. Empty when no session ended.",
                "percentunit",
                query(
                    f"sum(increase({failed}[$__range])) / (sum(increase({ended}[$__range])) > 0)",
                    instant=True,
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
        .with_panel(
            graph(
                "Sessions ended per minute, by final status",
                "How many sessions end each minute, by final status (rate of "
                "notte_sessions_ended_total). Errors and timeouts are drawn filled so they "
                "stand out.",
                "cpm",
                query(
                    f"sum by (status) (rate({ended}[$__rate_interval])) * 60",
                    "{{status}}",
                ),
                width=8,
            )
            .override_by_name("closed", [fixed_color(STATUS_COLORS["closed"])])
            .override_by_name(
                "error",
                [
                    fixed_color(STATUS_COLORS["error"]),
                    dash_model.DynamicConfigValue(id_val="custom.fillOpacity", value=40),
                    dash_model.DynamicConfigValue(id_val="custom.lineWidth", value=2),
                ],
            )
            .override_by_name(
                "timed_out",
                [
                    fixed_color(STATUS_COLORS["timed_out"]),
                    dash_model.DynamicConfigValue(id_val="custom.fillOpacity", value=40),
                    dash_model.DynamicConfigValue(id_val="custom.lineWidth", value=2),
                ],
            )
        )
        .with_panel(
            status_colors(
                graph(
                    "Error and timeout ratio",
                    "Share of ending sessions that end with status error or timed_out, over "
                    "time. The NotteSessionFailureRatioHigh alert fires above 20 % over 30 "
                    "minutes.",
                    "percentunit",
                    query(
                        f"sum by (status) (rate({failed}[$__rate_interval])) / ignoring (status) "
                        f"group_left sum(rate({ended}[$__rate_interval])) > 0",
                        "{{status}}",
                    ),
                    width=8,
                )
                .min(0)
                .max(1),
                ("error", "timed_out"),
            )
        )
        .with_row(dash.Row("Network"))
        .with_panel(
            graph(
                "Network throughput",
                "Bytes per second sent (requests) and received (responses) by all tracked "
                "sessions' browsers.",
                "Bps",
                query(
                    f"sum(rate(notte_session_network_request_bytes_total{{{JOB}}}[$__rate_interval]))",
                    "sent (requests)",
                ),
                query(
                    f"sum(rate(notte_session_network_response_bytes_total{{{JOB}}}[$__rate_interval]))",
                    "received (responses)",
                    ref="B",
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
                "range (last notte_session_duration_seconds of each session whose active "
                "status went to 0).",
                "s",
                [
                    query(
                        "max by (session_id) ("
                        f"last_over_time(notte_session_duration_seconds{{{JOB}}}[$__range]) "
                        f"and {SAME_SESSION} "
                        "(last_over_time("
                        f'notte_session_status{{{JOB}, status="active"}}[$__range]) == 0))',
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
                "Age of active sessions",
                "Oldest and median age of the sessions active now (notte_session_duration_seconds "
                "of active sessions).",
                "s",
                query(
                    f"max(notte_session_duration_seconds{{{JOB}}} and {SAME_SESSION} {ACTIVE})",
                    "oldest",
                ),
                query(
                    "quantile(0.5, "
                    f"notte_session_duration_seconds{{{JOB}}} and {SAME_SESSION} {ACTIVE})",
                    "median",
                    ref="B",
                ),
            )
        )
        .with_row(dash.Row("Sessions needing attention"))
        .with_panel(active_sessions_table())
        .with_panel(errored_sessions_table())
    )
    return finish(board.build())


def active_sessions_table() -> table.Panel:
    def active(expr: str) -> str:
        return f"max by (session_id) ({expr} and {SAME_SESSION} {ACTIVE})"

    remaining = [
        dash_model.DynamicConfigValue(id_val="unit", value="s"),
        dash_model.DynamicConfigValue(
            id_val="thresholds",
            value=thresholds("red", (60, "orange"), (300, "green")).build(),
        ),
        dash_model.DynamicConfigValue(
            id_val="custom.cellOptions",
            value=common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.BASIC
            ),
        ),
    ]
    panel: table.Panel = setup(
        table.Panel(),
        "Active sessions",
        "Sessions active now, soonest idle timeout first. Idle time remaining: seconds until "
        "Notte closes the session for inactivity; max duration remaining: seconds until it "
        "reaches its maximum duration (both as of the exporter's last poll). Red under a "
        "minute, orange under five. Click a session for its detail.",
        "s",
        [
            query(
                f"max by (session_id) (notte_session_idle_remaining_seconds{{{JOB}}})",
                ref="A",
                instant=True,
                table_format=True,
            ),
            query(
                f"max by (session_id) (notte_session_max_duration_remaining_seconds{{{JOB}}})",
                ref="B",
                instant=True,
                table_format=True,
            ),
            query(
                active(f"notte_session_duration_seconds{{{JOB}}}"),
                ref="C",
                instant=True,
                table_format=True,
            ),
            query(
                active(f"notte_session_steps{{{JOB}}}"),
                ref="D",
                instant=True,
                table_format=True,
            ),
            query(
                active(
                    f"(notte_session_network_request_bytes_total{{{JOB}}} + {SAME_SESSION} "
                    f"notte_session_network_response_bytes_total{{{JOB}}})"
                ),
                ref="E",
                instant=True,
                table_format=True,
            ),
            query(
                f"max by (session_id, browser_type) (notte_session_info{{{JOB}}} "
                f"and {SAME_SESSION} {ACTIVE})",
                ref="F",
                instant=True,
                table_format=True,
            ),
        ],
        width=24,
        height=10,
    )
    return (
        panel.transformations(
            merge_and_organize(
                exclude=("Time", "Value #F"),
                rename={
                    "session_id": "Session",
                    "browser_type": "Browser",
                    "Value #A": "Idle time remaining",
                    "Value #B": "Max duration remaining",
                    "Value #C": "Age",
                    "Value #D": "Steps",
                    "Value #E": "Bytes",
                },
                order=(
                    "session_id",
                    "Value #A",
                    "Value #B",
                    "Value #C",
                    "Value #D",
                    "Value #E",
                    "browser_type",
                ),
            )
        )
        .override_by_name("Idle time remaining", remaining)
        .override_by_name("Max duration remaining", remaining)
        .override_by_name("Steps", [dash_model.DynamicConfigValue(id_val="unit", value="short")])
        .override_by_name("Bytes", [dash_model.DynamicConfigValue(id_val="unit", value="bytes")])
        .override_by_name("Session", [session_links_override("${__value.raw}")])
        .sort_by(
            [common_builder.TableSortByFieldState().display_name("Idle time remaining").desc(False)]
        )
    )


def errored_sessions_table() -> table.Panel:
    errored = f"max by (session_id) (last_over_time(notte_session_error_info{{{JOB}}}[$__range]))"
    panel: table.Panel = setup(
        table.Panel(),
        "Recently errored sessions",
        "Sessions that reported an error during the time range, newest first, with the "
        "error message (first 200 characters) and the final status. Click a session for "
        "its detail.",
        "dateTimeAsIso",
        [
            query(
                "max by (session_id, error) "
                f"(last_over_time(notte_session_error_info{{{JOB}}}[$__range]))",
                ref="A",
                instant=True,
                table_format=True,
            ),
            query(
                "1000 * (max by (session_id) "
                f"(last_over_time(notte_session_closed_timestamp_seconds{{{JOB}}}[$__range])) "
                f"and on (session_id) {errored})",
                ref="B",
                instant=True,
                table_format=True,
            ),
            query(
                "max by (session_id, status) "
                f"(last_over_time(notte_session_status{{{JOB}}}[$__range]) == 1) "
                f"and on (session_id) {errored}",
                ref="C",
                instant=True,
                table_format=True,
            ),
        ],
        width=24,
        height=8,
    )
    return (
        panel.transformations(
            merge_and_organize(
                exclude=("Time", "Value #A", "Value #C"),
                rename={
                    "session_id": "Session",
                    "status": "Status",
                    "error": "Error",
                    "Value #B": "Ended at",
                },
                order=("session_id", "Value #B", "status", "error"),
            )
        )
        .override_by_name("Session", [session_links_override("${__value.raw}")])
        .override_by_name(
            "Status",
            [
                dash_model.DynamicConfigValue(
                    id_val="mappings",
                    value=value_mappings(
                        {name: (name, color) for name, color in STATUS_COLORS.items()}
                    ),
                ),
                dash_model.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value=common.TableColorTextCellOptions(),
                ),
            ],
        )
        .sort_by([common_builder.TableSortByFieldState().display_name("Ended at").desc(True)])
    )


# --- dashboard 2: session detail --------------------------------------------------------


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
                "Time since creation for an active session; the final duration for an ended one.",
                "s",
                query(last("notte_session_duration_seconds"), instant=True),
                width=4,
            )
        )
        .with_panel(
            single(
                "Idle time remaining",
                "Seconds until Notte closes the session for inactivity, as of the exporter's "
                "last poll. Empty once the session is no longer active.",
                "s",
                query(f"max(notte_session_idle_remaining_seconds{{{SESSION}}})", instant=True),
                width=4,
            )
            .thresholds(remaining_thresholds)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .no_value("not active")
        )
        .with_panel(
            single(
                "Max duration remaining",
                "Seconds until the session reaches its maximum duration, as of the exporter's "
                "last poll. Empty once the session is no longer active.",
                "s",
                query(
                    f"max(notte_session_max_duration_remaining_seconds{{{SESSION}}})",
                    instant=True,
                ),
                width=4,
            )
            .thresholds(remaining_thresholds)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .no_value("not active")
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
                "session is active, with the configured idle timeout for reference.",
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
                        "max by (browser_type, headless, proxies, solve_captchas, "
                        "use_file_storage, web_bot_auth) "
                        f"(last_over_time(notte_session_info{{{SESSION}}}[$__range]))",
                        instant=True,
                        table_format=True,
                    )
                ],
                width=12,
                height=5,
            ).transformations(merge_and_organize(exclude=("Time", "Value"), rename={}, order=()))
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


# --- dashboard 3: exporter health -------------------------------------------------------


def exporter_health() -> dash_model.Dashboard:
    up_mappings = value_mappings({"0": ("down", "red"), "1": ("up", "green")})
    board = (
        dashboard(
            HEALTH_UID,
            "Notte / Exporter health",
            "notte-exporter itself: can it reach the Notte API, how its poll cycles and API "
            "requests go, what it tracks and drops, and its process resources.",
        )
        .with_variable(
            dash.QueryVariable("instance")
            .label("Instance")
            .description("notte-exporter replicas (one per shard).")
            .datasource(DATASOURCE)
            .query(f"label_values(notte_exporter_build_info{{{JOB}}}, instance)")
            .definition(f"label_values(notte_exporter_build_info{{{JOB}}}, instance)")
            .refresh(dash_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".+")
        )
        .with_row(dash.Row("Status"))
        .with_panel(
            single(
                "Notte API (notte_up)",
                "1 (up) when the exporter's last poll cycle reached the Notte API and was "
                "authorised; 0 (down) otherwise. NotteApiDown fires after 5 minutes down.",
                "none",
                query(f"notte_up{{{EXPORTER}}}", "{{instance}}", instant=True),
            )
            .mappings(up_mappings)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        .with_panel(
            single(
                "Scrape target",
                "Prometheus' own `up` for the exporter: 0 means the exporter cannot be scraped.",
                "none",
                query(f"up{{{EXPORTER}}}", "{{instance}}", instant=True),
            )
            .mappings(up_mappings)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        .with_panel(
            single(
                "Time since last successful poll",
                "Seconds since the exporter last completed a successful poll cycle; it should "
                "stay below a few poll intervals (15 s by default). Empty if no cycle ever "
                "succeeded.",
                "s",
                query(
                    "time() - max by (instance) "
                    f"(notte_exporter_last_poll_success_timestamp_seconds{{{EXPORTER}}} > 0)",
                    "{{instance}}",
                    instant=True,
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
                    instant=True,
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
                query(
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(notte_exporter_poll_duration_seconds_bucket{{{EXPORTER}}}[$__rate_interval])))",
                    "p50",
                ),
                query(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(notte_exporter_poll_duration_seconds_bucket{{{EXPORTER}}}[$__rate_interval])))",
                    "p99",
                    ref="B",
                ),
                query(
                    "sum(rate("
                    f"notte_exporter_poll_duration_seconds_sum{{{EXPORTER}}}[$__rate_interval])) / "
                    "sum(rate("
                    f"notte_exporter_poll_duration_seconds_count{{{EXPORTER}}}[$__rate_interval]))",
                    "mean",
                    ref="C",
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
                "transport failure or timeout).",
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
                    "sum by (endpoint) "
                    "(rate(notte_exporter_api_requests_total"
                    f'{{{EXPORTER}, code!~"2..|404"}}[$__rate_interval])) '
                    "/ sum by (endpoint) "
                    f"(rate(notte_exporter_api_requests_total{{{EXPORTER}}}[$__rate_interval]))",
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
                query(
                    "histogram_quantile(0.5, sum by (endpoint, le) "
                    f"(rate(notte_exporter_api_request_duration_seconds_bucket{{{EXPORTER}}}[$__rate_interval])))",
                    "{{endpoint}} p50",
                ),
                query(
                    "histogram_quantile(0.99, sum by (endpoint, le) "
                    f"(rate(notte_exporter_api_request_duration_seconds_bucket{{{EXPORTER}}}[$__rate_interval])))",
                    "{{endpoint}} p99",
                    ref="B",
                ),
                width=8,
            )
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
                query(f"process_max_fds{{{EXPORTER}}}", "{{instance}} max", ref="B"),
                width=8,
            )
        )
    )
    return finish(board.build())


# --- output -----------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], dash_model.Dashboard]] = {
    "notte-sessions-overview.json": sessions_overview,
    "notte-session-detail.json": session_detail,
    "notte-exporter-health.json": exporter_health,
}


def render() -> dict[str, str]:
    """Every dashboard file name with its JSON text, exactly as committed."""
    return {
        name: json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that the committed files are up to date"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        sys.stderr.write(f"out of date: {', '.join(stale)}; run python dashboards/generate.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
