"""The Grafana dashboards: generated JSON is committed and up to date, and follows the
project's conventions. Running the queries against a real Prometheus is the
end-to-end test's job; here promtool checks that each one parses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import generate, panels
from dashboards.queries import (
    UnresolvedVariableError,
    all_panel_queries,
    load_dashboards,
    panel_queries,
    substitute,
    variable_queries,
)
from dashboards.queries import panels as board_panels
from exporter.labels import STATUSES
from exporter.metrics.catalogue import ACCOUNT_FAMILIES

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"

UIDS = {
    "notte-sessions-overview",
    "notte-session-detail",
    "notte-exporter-health",
    "notte-functions",
}

# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) we may use.
KNOWN_UNITS = {
    "none",
    "short",
    "percentunit",
    "bytes",
    "Bps",
    "s",
    "ms",
    "dateTimeAsIso",
    "cpm",
    "cps",
    "ops",
    "reqps",
}

# The contract's metric names (with the histogram series), plus Prometheus' `up`
# and the standard process collector.
CONTRACT_METRICS = {
    "notte_session_status",
    "notte_session_network_request_bytes_total",
    "notte_session_network_response_bytes_total",
    "notte_session_duration_seconds",
    "notte_session_idle_timeout_seconds",
    "notte_session_idle_remaining_seconds",
    "notte_session_idle_deadline_timestamp_seconds",
    "notte_session_max_duration_seconds",
    "notte_session_max_duration_remaining_seconds",
    "notte_session_created_timestamp_seconds",
    "notte_session_last_accessed_timestamp_seconds",
    "notte_session_closed_timestamp_seconds",
    "notte_session_steps",
    "notte_session_info",
    "notte_session_error_info",
    "notte_session_close_reason",
    "notte_sessions",
    "notte_sessions_ended_total",
    "notte_up",
    "notte_exporter_build_info",
    "notte_exporter_last_poll_success_timestamp_seconds",
    "notte_exporter_poll_duration_seconds_bucket",
    "notte_exporter_poll_duration_seconds_sum",
    "notte_exporter_poll_duration_seconds_count",
    "notte_exporter_polls_total",
    "notte_exporter_api_requests_total",
    "notte_exporter_api_request_duration_seconds_bucket",
    "notte_exporter_tracked_sessions",
    "notte_exporter_sessions_dropped_total",
    "notte_exporter_shard_ordinal",
    "notte_exporter_total_shards",
    "notte_exporter_poll_interval_seconds",
    "notte_exporter_sweep_enabled",
    "notte_exporter_deferred_sessions",
    "notte_exporter_oldest_refresh_age_seconds",
    "up",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
}
# The account's families (issue 18), named by the catalogue: a histogram's series too.
ACCOUNT_METRICS = {
    name
    for family in ACCOUNT_FAMILIES
    for name in (
        [f"{family.name}_{part}" for part in ("bucket", "sum", "count")]
        if family.kind == "histogram"
        else [family.name]
    )
}

SELECTOR = re.compile(r"(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<matchers>[^}]*)\}")
RANGE = re.compile(r"\[([^\]]*)\]")
JOB_MATCHER = re.compile(r"(?<![\w$])job\s*[=!]")
RATE_CALL = re.compile(r"(?<![a-z_])(?P<function>irate|rate)\(")


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards(DASHBOARDS)


def all_panels(dashboards: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(uid, panel) for uid, board in dashboards.items() for panel in board_panels(board)]


def call_argument(expr: str, open_paren: int) -> str:
    """The text between the parenthesis at `open_paren` and its match."""
    depth = 0
    for index in range(open_paren, len(expr)):
        if expr[index] == "(":
            depth += 1
        elif expr[index] == ")":
            depth -= 1
            if depth == 0:
                return expr[open_paren + 1 : index]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered = generate.render()
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARDS.glob("*.json")}
    assert set(committed) == set(rendered), "run: python dashboards/generate.py"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is out of date: run python dashboards/generate.py"


def test_generator_check_mode_reports_stale_files(tmp_path: Path) -> None:
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert not list(tmp_path.iterdir())
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    assert {path.name for path in tmp_path.iterdir()} == set(generate.DASHBOARDS)


def test_dashboards_have_stable_uids_and_the_current_schema(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    assert set(dashboards) == UIDS
    for uid, board in dashboards.items():
        assert re.fullmatch(r"[a-z0-9-]{8,40}", uid)
        assert board.get("id") is None, "a committed dashboard must not carry a database id"
        assert board["schemaVersion"] >= 41
        assert board["title"].startswith("Notte / ")


def test_datasource_is_a_template_variable_not_an_import_input(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, board in dashboards.items():
        text = json.dumps(board)
        assert "__inputs" not in board
        assert "${DS_" not in text, uid
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for uid, panel in all_panels(dashboards):
        where = f"{uid}: {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where


def test_every_panel_has_a_description_and_a_unit(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, panel in all_panels(dashboards):
        where = f"{uid}: {panel['title']}"
        assert len(panel.get("description", "")) > 20, where
        assert panel["fieldConfig"]["defaults"].get("unit") in KNOWN_UNITS, where
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in KNOWN_UNITS, where


def test_panel_ids_are_unique_and_panels_fit_the_grid(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for board in dashboards.values():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids))
        assert all(isinstance(panel_id, int) and panel_id > 0 for panel_id in ids)
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            assert grid["h"] > 0


def test_every_rate_uses_rate_interval(dashboards: dict[str, dict[str, Any]]) -> None:
    exprs = [
        (q.panel_title, q.template)
        for b in dashboards.values()
        for q in panel_queries(b, {"session_id": "x"})
    ]
    rates = 0
    for title, expr in exprs:
        for window in RANGE.findall(expr):
            assert window in {"$__rate_interval", "$__range"}, f"{title}: {expr}"
        for call in RATE_CALL.finditer(expr):
            rates += 1
            argument = call_argument(expr, call.end() - 1)
            assert RANGE.findall(argument) == ["$__rate_interval"], f"{title}: {expr}"
    assert rates >= 10


def test_every_selector_filters_on_the_job_variable(dashboards: dict[str, dict[str, Any]]) -> None:
    for board in dashboards.values():
        for query in panel_queries(board, {"session_id": "x"}):
            selectors = list(SELECTOR.finditer(query.template))
            assert selectors, f"{query.panel_title}: {query.template}"
            for selector in selectors:
                matchers = selector.group("matchers")
                assert 'job=~"$job"' in matchers, f"{query.panel_title}: {query.template}"
                assert len(JOB_MATCHER.findall(matchers)) == 1, (
                    f"{query.panel_title}: {query.template}"
                )
                assert selector.group("metric") in CONTRACT_METRICS | ACCOUNT_METRICS, (
                    selector.group("metric")
                )


def test_dashboards_link_to_each_other_keeping_time_and_variables(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, board in dashboards.items():
        assert generate.TAG in board["tags"], uid
        links = [link for link in board["links"] if link["type"] == "dashboards"]
        assert len(links) == 1, uid
        assert links[0]["tags"] == [generate.TAG]
        assert links[0]["keepTime"] is True
        assert links[0]["includeVars"] is True
        assert links[0]["asDropdown"] is False
    # Data links from a session go to the detail dashboard, keeping time and variables.
    urls = re.findall(r'"url": "(/d/[^"]+)"', json.dumps(dashboards))
    assert urls
    for url in urls:
        target = url.split("/")[2]
        assert target in dashboards
        assert "${__url_time_range}" in url
        assert "${datasource:queryparam}" in url
        assert "var-session_id=" in url


def test_session_detail_selects_a_session_from_label_values(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    detail = dashboards["notte-session-detail"]
    variables = {v["name"]: v for v in detail["templating"]["list"]}
    session = variables["session_id"]
    assert session["type"] == "query"
    assert session["query"] == 'label_values(notte_session_status{job=~"$job"}, session_id)'
    assert session["refresh"] == 2  # on time range change: sessions come and go
    for query in panel_queries(detail, {"session_id": "abc"}):
        if "notte_session_" in query.template:
            assert 'session_id="abc"' in query.expr, query.panel_title


def test_query_extraction_substitutes_every_variable() -> None:
    queries = all_panel_queries({"session_id": "abc", "job": "notte-exporter"})
    assert len(queries) > 40
    for query in queries:
        assert "$" not in query.expr, query.expr
        assert "[[" not in query.expr, query.expr
    exprs = "\n".join(query.expr for query in queries)
    assert "[1m]" in exprs
    assert "[1h]" in exprs
    assert 'job=~"notte-exporter"' in exprs
    assert any(query.instant for query in queries)
    assert any(not query.instant for query in queries)
    # Without a session the detail dashboard cannot be queried, and says so.
    with pytest.raises(UnresolvedVariableError, match="session_id"):
        all_panel_queries()
    assert substitute("a[${__range}] b[[job]] ${job:regex}", {"__range": "5m", "job": "j"}) == (
        "a[5m] bj j"
    )


def test_variable_queries_are_series_selectors(dashboards: dict[str, dict[str, Any]]) -> None:
    found = {
        (query.dashboard_uid, query.name): query
        for board in dashboards.values()
        for query in variable_queries(board)
    }
    assert found[("notte-session-detail", "session_id")].selector == (
        'notte_session_status{job=~".+"}'
    )
    assert {name for _, name in found} == {"job", "session_id", "instance", "function_id"}


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus)"
    exprs = [query.expr for query in all_panel_queries({"session_id": "abc"})]
    exprs += [
        query.selector
        for board in load_dashboards(DASHBOARDS).values()
        for query in variable_queries(board)
    ]
    rules = [{"record": f"check:query_{index}", "expr": expr} for index, expr in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_status_has_a_colour_and_live_means_not_ended() -> None:
    assert tuple(panels.STATUS_COLORS) == STATUSES
    assert '"authenticating"' not in panels.LIVE  # live is "not ended", unknown statuses too
    assert 'status!~"closed|error|timed_out"' in panels.LIVE


def titled(dashboards: dict[str, dict[str, Any]], uid: str, title: str) -> list[str]:
    (panel,) = [p for p in board_panels(dashboards[uid]) if p["title"] == title]
    return [target["expr"] for target in panel["targets"]]


def test_new_metrics_have_their_panels(dashboards: dict[str, dict[str, Any]]) -> None:
    health = "notte-exporter-health"
    assert "notte_exporter_deferred_sessions" in titled(dashboards, health, "Deferred sessions")[0]
    oldest = titled(dashboards, health, "Oldest session data")[0]
    assert "notte_exporter_oldest_refresh_age_seconds" in oldest
    assert "notte_exporter_sweep_enabled" in titled(dashboards, health, "Sweep")[0]
    overview = "notte-sessions-overview"
    (by_reason,) = titled(dashboards, overview, "Sessions ended per minute, by close reason")
    assert "sum by (close_reason)" in by_reason
    (reason,) = titled(dashboards, "notte-session-detail", "Close reason")
    assert "notte_session_close_reason" in reason
    (info,) = titled(dashboards, "notte-session-detail", "Session info")
    assert "max by (browser_type, proxies, solve_captchas, web_bot_auth)" in info
    text = json.dumps(dashboards)
    assert "headless" not in text
    assert "use_file_storage" not in text


def test_ratio_panels_keep_a_zero_ratio(dashboards: dict[str, dict[str, Any]]) -> None:
    # `x / y > 0` filters the 0 ratio itself (`>` binds after `/`); only the denominator
    # may be guarded, and a numerator that has no series until the first failure needs a
    # zero to fall back on.
    (ratio,) = titled(dashboards, "notte-sessions-overview", "Error and timeout ratio")
    assert ratio.rstrip().endswith("> 0)")
    (api,) = titled(dashboards, "notte-exporter-health", "API error ratio")
    numerator = api.split(" / ")[0]
    assert " or 0 * " in numerator


def test_queries_module_prints_every_query() -> None:
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "queries.py"), "--var", "session_id=abc"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * len(all_panel_queries({"session_id": "abc"}))
    assert 'session_id="abc"' in result.stdout


def test_generator_runs_as_a_script_from_anywhere(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
