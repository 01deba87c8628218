"""`--metric-allowlist` / `--metric-denylist` over real HTTP and in `--once`, in both
formats; and `_info` families typed `info` in OpenMetrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter.metrics.catalogue import ACCOUNT_FAMILIES, AGGREGATE_FAMILIES, SESSION_FAMILIES
from exporter.metrics.metricfilter import LEAN_DENYLIST, FamilyFilter, Served
from exporter.metrics.render import render_session_families
from exporter.polling.snapshot import Snapshot
from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import SimulatedNotte
from tests.harness import ExporterUnderTest, exporter_for, family_types, run_cli

ROOT = Path(__file__).resolve().parent.parent
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}
CATALOGUE = {f.name for f in (*SESSION_FAMILIES, *AGGREGATE_FAMILIES, *ACCOUNT_FAMILIES)}


def text_families(exporter: ExporterUnderTest) -> dict[str, str]:
    return family_types(exporter.get("/metrics").text)


def openmetrics_families(exporter: ExporterUnderTest) -> dict[str, str]:
    answer = exporter.get("/metrics", headers=OPENMETRICS)
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    return {family.name: family.type for family in parse_om(answer.text)}


def header_names(body: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", body, re.M))


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_an_allowlist_serves_only_the_families_it_matches_and_every_self_metric(
    world: SimulatedNotte, api: SimulatorServer, openmetrics: bool
) -> None:
    world.populate(active=3, ended=2)
    allow = ["notte_session_status", "notte_sessions(_ended_total)?"]
    with exporter_for(api.url, metric_allowlist=allow) as exporter:
        assert exporter.cycle()
        headers = OPENMETRICS if openmetrics else {}
        body = exporter.get("/metrics", headers=headers).text
    own = re.compile(r"notte_up|notte_exporter_.*|process_.*|python_.*")
    served = {name for name in header_names(body) if not own.fullmatch(name)}
    expected = {"notte_session_status", "notte_sessions"}
    expected.add("notte_sessions_ended" if openmetrics else "notte_sessions_ended_total")
    assert served == expected
    assert 'notte_session_status{session_id="' in body
    for name in ("notte_up", "notte_exporter_polls"):
        assert f"# TYPE {name}" in body  # the exporter's own metrics are always served


def test_a_denylist_serves_every_family_but_those_and_cannot_deny_self_metrics(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.populate(active=3)
    deny = ["notte_session_network_.*", ".*_info", "notte_.*duration.*", "notte_up", "notte_exp.*"]
    with exporter_for(api.url, metric_denylist=deny) as exporter:
        assert exporter.cycle()
        served = text_families(exporter)
        served_om = openmetrics_families(exporter)
    denied = {n for n in CATALOGUE if FamilyFilter.of(denylist=deny).admits(n) is False}
    assert "notte_session_network_request_bytes_total" in denied
    assert "notte_session_info" in denied
    assert not denied & set(served)
    assert "notte_session_status" in served
    assert "notte_session_steps" in served
    for name in ("notte_up", "notte_exporter_build_info", "notte_exporter_polls"):
        assert name in served or name + "_total" in served or name in served_om


def test_once_honours_the_lists_in_both_formats_of_its_text() -> None:
    allowed = run_cli("--demo", "--once", "--metric-allowlist", "notte_sessions,notte_usage_.*")
    assert allowed.returncode == 0, allowed.stderr
    names = header_names(allowed.stdout)
    assert "notte_sessions" in names
    assert "notte_usage_cost" in names  # an account family, allowed by pattern
    assert "notte_session_status" not in names
    assert "notte_function_info" not in names
    assert "notte_up" in names
    denied = run_cli("--demo", "--once", "--metric-denylist", "notte_session_.*")
    assert denied.returncode == 0, denied.stderr
    names = header_names(denied.stdout)
    assert not {n for n in names if n.startswith("notte_session_")}
    assert {"notte_sessions", "notte_up", "notte_function_info"} <= names


def test_both_lists_at_once_exit_2_with_one_line_naming_both() -> None:
    result = run_cli(
        "--demo", "--once", "--metric-allowlist", "notte_sessions", "--metric-denylist", "x"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "NOTTE_EXPORTER_METRIC_ALLOWLIST (--metric-allowlist)" in lines[0]
    assert "NOTTE_EXPORTER_METRIC_DENYLIST (--metric-denylist)" in lines[0]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--metric-allowlist", "notte_(session"], {}, "NOTTE_EXPORTER_METRIC_ALLOWLIST"),
        ([], {"NOTTE_EXPORTER_METRIC_DENYLIST": "ok,[z-a]"}, "NOTTE_EXPORTER_METRIC_DENYLIST"),
    ],
    ids=["flag", "variable"],
)
def test_a_bad_regular_expression_exits_2_naming_the_setting(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_cli("--demo", "--once", *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert named in lines[0]
    assert "not a regular expression" in lines[0]


def test_patterns_match_whole_names_only() -> None:
    lists = FamilyFilter.of(allowlist=["notte_session"])
    assert not lists.admits("notte_session_status")  # anchored: no prefix match
    assert FamilyFilter.of(allowlist=["notte_session_.*"]).admits("notte_session_status")
    assert not FamilyFilter.of(denylist=["status"]).admits("status")
    assert FamilyFilter.of(denylist=["status"]).admits("notte_session_status")


def test_a_denied_family_costs_no_render_work() -> None:
    """The renderer never reads a denied family's values: with every session family
    denied, no session's samples are computed at all."""

    class Untouchable:
        """A session whose values must not be read."""

        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"a denied family read a session's {name}")

    snapshot = Snapshot(generation=1, sessions=(Untouchable(),) * 3)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        render_session_families(snapshot, False)  # every family: the sessions are read
    served = Served.by(FamilyFilter.of(denylist=["notte_session_.*"]))
    assert not served.sessions
    assert served.aggregates
    body = render_session_families(snapshot, False, served)
    assert b"# TYPE notte_sessions gauge" in body


def test_info_families_are_typed_info_in_openmetrics_and_gauge_in_text(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.populate(active=2)
    with exporter_for(api.url) as exporter:
        assert exporter.cycle()
        text = exporter.get("/metrics").text
        om = exporter.get("/metrics", headers=OPENMETRICS).text
    assert "# TYPE notte_session_info gauge" in text
    assert "# TYPE notte_exporter_build_info gauge" in text
    assert "# TYPE notte_session info" in om
    assert "# TYPE notte_exporter_build info" in om
    families = {family.name: family.type for family in parse_om(om)}
    assert families["notte_session"] == "info"
    assert families["notte_session_error"] == "info" or "notte_session_error" not in families
    assert re.search(r'^notte_session_info\{.*session_id="', om, re.M)


def test_the_readmes_lean_denylist_is_the_one_measured_and_keeps_every_alerts_series() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (shown,) = re.findall(r"--metric-denylist '([^']*)'", readme)
    assert shown.split(",") == list(LEAN_DENYLIST)
    lean = FamilyFilter.of(denylist=LEAN_DENYLIST)
    rules = (ROOT / "deploy" / "prometheus" / "mixin" / "alerts.yml").read_text(encoding="utf-8")
    read_by_alerts = set(re.findall(r"\b(notte_[a-z_]+)", rules))
    families = {f.name for f in (*SESSION_FAMILIES, *AGGREGATE_FAMILIES, *ACCOUNT_FAMILIES)}
    assert read_by_alerts & families  # the rules do read catalogue families
    assert {name for name in read_by_alerts & families if not lean.admits(name)} == set()


def test_the_exporters_own_catalogue_families_cannot_be_denied() -> None:
    everything = FamilyFilter.of(denylist=[".*"])
    assert everything.admits("notte_exporter_tracked_sessions")
    assert everything.admits("notte_exporter_sessions_dropped_total")
    assert not everything.admits("notte_sessions")
    assert FamilyFilter.of(allowlist=["nothing"]).admits("notte_up")
