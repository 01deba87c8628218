"""Alert rules (deploy/prometheus: the mixin's template and config, the rule file they
render) and the example Alertmanager configuration.

promtool and amtool must be installed (Debian packages prometheus and
prometheus-alertmanager): these tests fail rather than skip without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "notte-exporter.rules.yml"
GENERATE = ROOT / "deploy" / "prometheus" / "generate.py"
MIXIN = ROOT / "deploy" / "prometheus" / "mixin"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

# Alerts about one session, labelled with its session_id.
PER_SESSION = {
    "NotteSessionErrored",
    "NotteSessionTimedOut",
    "NotteSessionIdleTimeoutSoon",
    "NotteSessionMaxDurationSoon",
}
# Of those, the ones about a session that ended: its series vanish after the
# exporter's retention.
ENDED_SESSION = {"NotteSessionErrored", "NotteSessionTimedOut"}
# Alerts whose unit tests must show them resolving while the exporter still runs.
MUST_RESOLVE = {
    *ENDED_SESSION,
    "NotteExporterSessionsDeferred",
    "NotteExporterShardsMissing",
    "NotteExporterSessionLimitReached",
}
# About the exporter rather than the sessions: warnings, as kube-prometheus' TargetDown.
EXPORTER_ALERTS_MAX_SEVERITY = "warning"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed: apt-get install {package}"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT, timeout=60)


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rule_file_is_what_the_mixin_renders() -> None:
    result = run(sys.executable, str(GENERATE), "--check")
    assert result.returncode == 0, result.stderr


def test_selector_and_runbook_url_come_from_the_config_alone(tmp_path: Path) -> None:
    template = (MIXIN / "alerts.yml").read_text(encoding="utf-8")
    assert not re.search(r"job=[~\"]", template)  # the annotations' job=%q is the alert's own
    assert "https://" not in template
    override = tmp_path / "mine.yml"
    override.write_text(
        'selector: \'job="notte", cluster="eu"\'\nrunbookUrl: https://wiki.example.com/notte\n'
    )
    out = tmp_path / "mine.rules.yml"
    result = run(sys.executable, str(GENERATE), "--config", str(override), "--out", str(out))
    assert result.returncode == 0, result.stderr
    promtool = tool("promtool", "prometheus")
    checked = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for rule in alerts(out):
        selectors = re.findall(r"\b([a-z_]+)\{([^}]*)\}", rule["expr"])
        assert selectors, rule["alert"]
        for metric, matchers in selectors:
            assert matchers.startswith('job="notte", cluster="eu"'), (rule["alert"], metric)
        assert rule["annotations"]["runbook_url"] == (
            f"https://wiki.example.com/notte#{rule['alert'].lower()}"
        )
    # An unknown key is refused rather than silently ignored.
    override.write_text("selectr: 'job=\"x\"'\n")
    result = run(sys.executable, str(GENERATE), "--config", str(override), "--out", str(out))
    assert result.returncode != 0
    assert "selectr" in result.stderr


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_rules_pass_promtool_check_with_every_lint() -> None:
    result = run(
        tool("promtool", "prometheus"), "check", "rules", "--lint=all", "--lint-fatal", str(RULES)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = run(tool("promtool", "prometheus"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule_files"] == ["../rules/notte-exporter.rules.yml"]
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"


def test_every_alert_change_has_a_unit_test_that_resolves() -> None:
    resolved: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            checks = case.get("alert_rule_test", [])
            fired: set[str] = set()
            for check in sorted(checks, key=lambda c: duration(str(c["eval_time"]))):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
                elif check["alertname"] in fired:
                    resolved.add(check["alertname"])
    assert MUST_RESOLVE - resolved == set()


def duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", text))


def test_per_session_alerts_survive_the_series_being_dropped() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    for name in ENDED_SESSION:
        rule = by_name[name]
        # No `for`: the first evaluation that sees the session must fire.
        assert rule.get("for", "0s") in {"0s", "0m"}, name
        assert re.search(r"max_over_time\(notte_session_status\{[^}]*\}\[\d+m\]\)", rule["expr"])
        # ...and it ends: only sessions that ended recently fire.
        assert "offset 10m" in rule["expr"], name
        assert "notte_session_closed_timestamp_seconds" in rule["expr"], name
    # The unit tests include series that go stale (dropped by the exporter).
    text = "".join(path.read_text(encoding="utf-8") for path in RULE_TESTS)
    assert "stale" in text


def test_alerts_are_named_labelled_and_annotated() -> None:
    anchors = {
        github_anchor(line[3:])
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    names = set()
    for rule in alerts():
        name = rule["alert"]
        names.add(name)
        assert re.fullmatch(r"Notte(?:[A-Z][a-z]+)+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        url = annotations["runbook_url"]
        assert url.startswith("https://"), name
        path, _, anchor = url.partition("#")
        assert path.endswith("/docs/runbook.md"), name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no runbook section"
        if name in PER_SESSION:
            assert "$labels.session_id" in annotations["description"], name
            assert "$labels.session_id" in annotations["summary"], name
    assert names >= PER_SESSION
    assert len(anchors) == len(names), "one runbook section per alert, no more"
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    (exporter_group,) = [group for group in groups if group["name"] == "notte-exporter"]
    for rule in exporter_group["rules"]:
        assert rule["labels"]["severity"] == EXPORTER_ALERTS_MAX_SEVERITY, rule["alert"]


def test_alertmanager_config_is_valid() -> None:
    result = run(tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_groups_per_session_alerts_into_one_notification() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    assert config["route"]["group_by"] == ["alertname", "job"]
    for route in config["route"].get("routes", []):
        assert "session_id" not in route.get("group_by", [])


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=NotteSessionErrored", "severity=warning", "session_id=a"], "notte-sessions"),
        (["alertname=NotteSessionTimedOut", "severity=warning", "session_id=a"], "notte-sessions"),
        (["alertname=NotteSessionIdleTimeoutSoon", "severity=info", "session_id=a"], "notte-info"),
        (["alertname=NotteApiDown", "severity=warning"], "notte-ops"),
        (["alertname=NotteExporterShardsMissing", "severity=warning"], "notte-ops"),
        (["alertname=NotteExporterPollingStale", "severity=warning"], "notte-ops"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]
