"""Every PromQL query of the committed dashboards, ready to send to Prometheus.

Grafana fills in template variables before it queries; this module does the same
for tests, so they can run each panel's query against a real Prometheus:

    from dashboards.queries import all_panel_queries
    for q in all_panel_queries({"session_id": "abc"}):
        run(q.expr, instant=q.instant)

Or from the command line, to read or paste them (one query a line, after its
dashboard, panel and refId):

    .venv/bin/python dashboards/queries.py --var session_id=abc --var job=notte-exporter

Built-in variables get fixed values (`$__rate_interval` is `1m`, `$__range` is `1h`,
...); a dashboard variable with an "All" option defaults to its all-value (`.+`);
any other variable (such as `session_id`) must be given. A variable left without a
value raises `UnresolvedVariableError` rather than sending a broken query.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

BUILTIN_VARIABLES: dict[str, str] = {
    "__rate_interval": "1m",
    "__rate_interval_ms": "60000",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format} and the older [[name]], [[name:format]].
_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::\w+)?\}|\[\[(?P<bracketed>\w+)(?::\w+)?\]\]|\$(?P<plain>\w+)"
)
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*$")


class UnresolvedVariableError(KeyError):
    """A query uses a template variable that has no value."""


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, with its variables substituted."""

    dashboard_uid: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    template: str
    instant: bool


@dataclass(frozen=True)
class VariableQuery:
    """A `label_values(selector, label)` template variable, as a series selector."""

    dashboard_uid: str
    name: str
    selector: str
    label: str


def load_dashboards(directory: Path = HERE) -> dict[str, dict[str, Any]]:
    """The dashboards in `directory`, by uid."""
    dashboards = {}
    for path in sorted(directory.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        dashboards[board["uid"]] = board
    return dashboards


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including panels folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variable_values(
    dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Built-in values, then each variable's all-value, then the caller's values."""
    values = dict(BUILTIN_VARIABLES)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("includeAll") and variable.get("allValue"):
            values[variable["name"]] = variable["allValue"]
    values.update(variables or {})
    return values


def substitute(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bracketed") or match.group("plain")
        if name not in values:
            raise UnresolvedVariableError(f"no value for ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)


def panel_queries(
    dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[PanelQuery]:
    values = variable_values(dashboard, variables)
    return [
        PanelQuery(
            dashboard_uid=dashboard["uid"],
            panel_id=panel["id"],
            panel_title=panel["title"],
            ref_id=target["refId"],
            expr=substitute(target["expr"], values),
            template=target["expr"],
            instant=bool(target.get("instant")) and not target.get("range"),
        )
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_queries(
    dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[VariableQuery]:
    values = variable_values(dashboard, variables)
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query.get("query", "") if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        if match is None:
            raise ValueError(f"variable {variable['name']}: not a label_values() query: {text!r}")
        found.append(
            VariableQuery(
                dashboard_uid=dashboard["uid"],
                name=variable["name"],
                selector=substitute(match.group("selector"), values),
                label=match.group("label"),
            )
        )
    return found


def all_panel_queries(
    variables: Mapping[str, str] | None = None, directory: Path = HERE
) -> list[PanelQuery]:
    """Every panel query of every dashboard in `directory`."""
    return [
        query
        for dashboard in load_dashboards(directory).values()
        for query in panel_queries(dashboard, variables)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print every panel query; `session_id` defaults to `$session_id` left as written."""
    parser = argparse.ArgumentParser(description="Print every panel query of the dashboards.")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template variable's value (repeatable); session_id stays $session_id unless given",
    )
    args = parser.parse_args(argv)
    variables = {"session_id": "$session_id"}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--var {item!r}: expected NAME=VALUE")
        variables[name] = value
    for query in all_panel_queries(variables):
        kind = "instant" if query.instant else "range"
        sys.stdout.write(
            f"# {query.dashboard_uid} / {query.panel_title} / {query.ref_id} ({kind})\n"
            f"{query.expr}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
