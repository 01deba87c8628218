"""Shared building blocks of the notte-exporter dashboards: selectors, colours and the
panel helpers every dashboard module uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from string import ascii_uppercase
from typing import Any

from dashboards.sdk import (
    PromQueryFormat,
    common,
    common_builder,
    dash,
    dash_model,
    prometheus,
    stat,
    table,
    timeseries,
)
from exporter.labels import ENDED_STATUSES, STATUSES

TAG = "notte-exporter"
OVERVIEW_UID = "notte-sessions-overview"
DETAIL_UID = "notte-session-detail"
HEALTH_UID = "notte-exporter-health"
FUNCTIONS_UID = "notte-functions"

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'
EXPORTER = 'job=~"$job", instance=~"$instance"'
SESSION = 'job=~"$job", session_id="$session_id"'
SAME_SESSION = "on (job, instance, session_id)"
ENDED = "|".join(ENDED_STATUSES)
# Live means not ended: `active`, `authenticating`, or a status the exporter does not know.
LIVE = f'notte_session_status{{{JOB}, status!~"{ENDED}"}} == 1'

STATUS_COLORS = dict(zip(STATUSES, ("blue", "purple", "green", "red", "orange"), strict=True))


def detail_url(session: str) -> str:
    """The link from a session to its detail page; the variables and time range follow."""
    return (
        f"/d/{DETAIL_UID}/notte-session-detail?${{datasource:queryparam}}&${{job:queryparam}}"
        f"&var-session_id={session}&${{__url_time_range}}"
    )


PanelBuilder = Any  # the SDK's panel builders share no usable base class
Query = prometheus.Dataquery


# --- small building blocks -------------------------------------------------------------


def query(
    expr: str, legend: str | None = None, *, instant: bool = False, table_format: bool = False
) -> Query:
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend is not None:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def sent_and_received(
    expr: Callable[[str], str], legends: tuple[str, str] = ("sent", "received")
) -> list[Query]:
    """The same expression over the sessions' sent and received byte counters."""
    metrics = (
        "notte_session_network_request_bytes_total",
        "notte_session_network_response_bytes_total",
    )
    return [query(expr(metric), name) for metric, name in zip(metrics, legends, strict=True)]


def setup(
    panel: PanelBuilder,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int,
    height: int,
) -> PanelBuilder:
    """Title, help, unit, size and the queries, lettered A, B, C... in order as Grafana does."""
    panel = (
        panel.title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
    )
    for ref, q in zip(ascii_uppercase, queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
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


def remaining_thresholds() -> dash.ThresholdsConfig:
    """Time left before a limit: red under a minute, orange under five."""
    return thresholds("red", (60, "orange"), (300, "green"))


def unit_override(unit: str) -> list[dash_model.DynamicConfigValue]:
    return [dash_model.DynamicConfigValue(id_val="unit", value=unit)]


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
    title: str, description: str, unit: str, *queries: Query, width: int = 12, height: int = 8
) -> timeseries.Panel:
    """A time series with a table legend (last and max) and every series in the tooltip."""
    built: timeseries.Panel = setup(
        timeseries.Panel(), title, description, unit, queries, width=width, height=height
    )
    return (
        built.legend(legend(table_mode=True, calcs=("lastNotNull", "max")))
        .tooltip(tooltip())
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
    )


def single(
    title: str, description: str, unit: str, *queries: Query, width: int = 6, height: int = 4
) -> stat.Panel:
    """A stat: the value now, so its queries are instant."""
    instant = [q.instant() for q in queries]
    built: stat.Panel = setup(
        stat.Panel(), title, description, unit, instant, width=width, height=height
    )
    # Uncoloured unless a panel asks: Grafana's default thresholds (red from 80) would
    # paint any duration or count above 80 red.
    return (
        built.reduce_options(
            common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        )
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.NONE)
    )


def table_panel(
    title: str, description: str, unit: str, *exprs: str, width: int = 24, height: int = 8
) -> table.Panel:
    """A table of the values now: one instant query per expression, in table format."""
    queries = [query(expr, instant=True, table_format=True) for expr in exprs]
    return setup(table.Panel(), title, description, unit, queries, width=width, height=height)


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


def session_rows(
    panel: table.Panel,
    *,
    exclude: Sequence[str],
    rename: dict[str, str],
    order: Sequence[str],
    sort_by: str,
    descending: bool,
) -> table.Panel:
    """A table of one row per session, joined from its queries: `session_id` shows as
    Session, linked to the session's detail, and `status` as Status."""
    columns = {"session_id": "Session", "status": "Status", **rename}
    return (
        panel.transformations(merge_and_organize(exclude, columns, order))
        .override_by_name("Session", [session_links_override("${__value.raw}")])
        .sort_by([common_builder.TableSortByFieldState().display_name(sort_by).desc(descending)])
    )


def session_links(value: str) -> list[DataLink]:
    return [DataLink("Session detail", detail_url(value))]


def session_links_override(value: str) -> dash_model.DynamicConfigValue:
    return dash_model.DynamicConfigValue(
        id_val="links", value=[link.build() for link in session_links(value)]
    )


def query_variable(
    name: str, label: str, description: str, expr: str, *, multi: bool = False
) -> dash.QueryVariable:
    """A variable filled from `label_values(...)`; `multi` allows several values and All (`.+`)."""
    variable = (
        dash.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(expr)
        .definition(expr)
        .refresh(dash_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_model.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".+")
    return variable


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
            query_variable(
                "job",
                "Job",
                "The scrape job(s) of notte-exporter.",
                "label_values(notte_exporter_build_info, job)",
                multi=True,
            )
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
