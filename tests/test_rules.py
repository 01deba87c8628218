"""Alert rules (deploy/prometheus) and the example Alertmanager configuration.

promtool and amtool must be installed (Debian packages prometheus and
prometheus-alertmanager): these tests fail rather than skip without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "notte-exporter.rules.yml"
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


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed: apt-get install {package}"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT, timeout=60)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


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


def test_per_session_alerts_survive_the_series_being_dropped() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    for name in ENDED_SESSION:
        rule = by_name[name]
        # No `for`: the first evaluation that sees the session must fire.
        assert rule.get("for", "0s") in {"0s", "0m"}, name
        assert re.search(r"max_over_time\(notte_session_status\{[^}]*\}\[\d+m\]\)", rule["expr"])
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
    assert {"info", "warning", "critical"} == {r["labels"]["severity"] for r in alerts()}


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
        (["alertname=NotteApiDown", "severity=critical"], "notte-ops"),
        (["alertname=NotteExporterPollingStale", "severity=warning"], "notte-ops"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]
