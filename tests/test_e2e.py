"""End to end: the simulator, the exporter as a process, and a real Prometheus.

The simulator serves a seeded world on 127.0.0.1; the exporter runs as
`python -m exporter` against it; Debian's `prometheus` scrapes the exporter every
second and evaluates the repository's alert rules. The test takes the fleet through
three states while Prometheus watches, and in each checks what users see:

1. healthy: sessions live (one authenticating) and one closes normally; no error;
2. with failures: sessions error and time out (one of them lives three seconds between
   two polls, for the sweep to catch), one disappears, the API fails now and then;
3. mid-outage: every API request fails.

In each, every panel query of every dashboard, template variables filled in, runs
through Prometheus's HTTP API without error and returns data, except the few that are
empty by design in that state (`EMPTY_BY_DESIGN`, each with the reason the README
gives). After the failures, every dashboard variable query finds its values, every
alert rule evaluates without error, `NotteSessionErrored` and `NotteSessionTimedOut`
fire for exactly the sessions that ended badly while the exporter watched (not for the
configured sessions that ended hours ago), and `NotteExporterDown` does not fire.

`prometheus` must be installed (Debian package prometheus): this test fails rather
than skips without it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest

from dashboards.queries import PanelQuery, all_panel_queries, load_dashboards, variable_queries
from exporter.simulator import Fault, SimulatedNotte, SimulatorServer
from tests.harness import API_KEY, iso

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules"
GENERATE_RULES = ROOT / "deploy" / "prometheus" / "generate.py"
# The rules as shipped, but for NotteFunctionRunFailed's window: a failed run fires and
# resolves within the test, not ten minutes later.
RULE_OVERRIDES = "recentRunFailureWindow: 20s\n"
# Matches the rules' up{job=~".*notte-exporter.*"} and the dashboards' $job.
JOB = "notte-exporter"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

# The seeded world: sessions that ended hours before the exporter started (configured
# from phase 2, through the IDs file: the active list does not show them), sessions
# that end while Prometheus watches (discovered), one that stays active, one waiting
# for a managed-auth login, a configured one that disappears (404), and, in phase 2, one
# that starts and errors between two polls.
PAST_CLOSED = "e2e-past-closed"
PAST_ERROR = "e2e-past-error"
PAST_TIMED_OUT = "e2e-past-timed-out"
LIVE_CLOSED = "e2e-live-closed"
LIVE_ERROR = "e2e-live-error"
LIVE_TIMED_OUT = "e2e-live-timed-out"
STAYS_ACTIVE = "e2e-stays-active"
AUTHENTICATING = "e2e-authenticating"
GONE = "e2e-gone"
QUICK_ERROR = "e2e-quick-error"
PAST_ERROR_MESSAGE = "Proxy authentication failed (407)"
LIVE_ERROR_MESSAGE = "Navigation timeout of 30000 ms exceeded"
QUICK_ERROR_MESSAGE = "Browser failed to start"
PAST = (PAST_CLOSED, PAST_ERROR, PAST_TIMED_OUT)
LIVE = (LIVE_CLOSED, LIVE_ERROR, LIVE_TIMED_OUT, STAYS_ACTIVE, AUTHENTICATING, GONE)
# Alerts fire for the sessions that ended badly while the exporter watched, not for
# the configured ones that ended two hours ago.
ERRORED = {LIVE_ERROR: LIVE_ERROR_MESSAGE, QUICK_ERROR: QUICK_ERROR_MESSAGE}
TIMED_OUT = {LIVE_TIMED_OUT}

# The account: a function run by hand with a long run under way (its session is a real
# simulated session), a scheduled one with a history of runs, and a usage period. A run
# closes in phase 1 and one fails in phase 2.
FUNCTION = "e2e-fn-checkout"
SCHEDULED = "e2e-fn-report"

# Panel queries (dashboard uid, panel title) that are empty by design in a state, with
# the reason; the README's "Panels that can be empty" says the same. The detail
# dashboard shows an ended session in every state (closed, then errored).
ACTIVE_ONLY = {
    ("notte-session-detail", "Idle time remaining"): "series of live sessions only",
    ("notte-session-detail", "Max duration remaining"): "series of live sessions only",
}
# The detail dashboard's session is no function run's.
NO_RUN = {("notte-session-detail", "Function run"): "no function started the session"}
EMPTY_BY_DESIGN: dict[str, dict[tuple[str, str], str]] = {
    "healthy": {
        **ACTIVE_ONLY,
        **NO_RUN,
        ("notte-sessions-overview", "Recently errored sessions"): "no session errored",
        ("notte-session-detail", "Error"): "the session reported no error",
    },
    "failures": {**ACTIVE_ONLY, **NO_RUN},
    "outage": {**ACTIVE_ONLY, **NO_RUN},
}
# The session the detail dashboard shows in each state.
DETAIL_SESSION = {"healthy": LIVE_CLOSED, "failures": LIVE_ERROR, "outage": LIVE_ERROR}

T = TypeVar("T")


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed for the end-to-end test: apt-get install prometheus"
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    """A subprocess whose output goes to a log file (no pipe to drain or leak)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @classmethod
    def start(cls, name: str, argv: list[str], log_path: Path, **kwargs: Any) -> Running:
        log_file = log_path.open("wb")
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, **kwargs
            )
        except BaseException:
            log_file.close()
            raise
        return cls(name, process, log_path, log_file)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with status {self.process.returncode}:\n{self.log()[-4000:]}"
            )

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
        finally:
            self.log_file.close()


def eventually(
    what: str,
    check: Callable[[], T],
    *,
    timeout: float,
    alive: tuple[Running, ...] = (),
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        for process in alive:
            process.check_alive()
        try:
            result = check()
        except (httpx.HTTPError, PrometheusError) as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            details = describe() if describe else ""
            raise AssertionError(
                f"{what}: not within {timeout}s (last error: {last_error}) {details}"
            )
        time.sleep(0.1)


class PrometheusError(Exception):
    """Prometheus answered a query with an error."""


class PrometheusApi:
    def __init__(self, url: str, process: Running) -> None:
        self.process = process
        self.client = httpx.Client(base_url=url, timeout=10)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"HTTP {response.status_code}: {response.text[:500]}") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"HTTP {response.status_code}: {body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str) -> dict[str, Any]:
        return dict(self.get("/api/v1/query", query=expr))

    def query_range(self, expr: str, start: float, end: float) -> dict[str, Any]:
        return dict(self.get("/api/v1/query_range", query=expr, start=start, end=end, step="1s"))

    def value(self, expr: str) -> float | None:
        """The value of a query that returns one series (None when it returns none)."""
        result = self.query(expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts")["alerts"])


def problem(data: dict[str, Any]) -> str | None:
    """What makes a query result useless on a panel: no series, or nothing but NaN."""
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        values = [result[1]]
    elif kind == "vector":
        values = [series["value"][1] for series in result]
    elif kind == "matrix":
        values = [value for series in result for _, value in series["values"]]
    else:
        return f"unexpected result type {kind}"
    if not values:
        return "empty result"
    if all(math.isnan(float(value)) for value in values):
        return f"only NaN ({len(values)} values)"
    return None


def describe(query: PanelQuery) -> str:
    kind = "instant" if query.instant else "range"
    return (
        f"{query.dashboard_uid} / {query.panel_title!r} (panel {query.panel_id}, "
        f"ref {query.ref_id}, {kind}): {query.expr}"
    )


# -- the three programs ---------------------------------------------------------------


@pytest.fixture
def world() -> SimulatedNotte:
    world = SimulatedNotte(seed=2024, target_active=4)
    world.populate(active=4)
    now = time.time()
    long_ago = {
        "created_at": iso(now - 7300),
        "last_accessed_at": iso(now - 7250),
        "closed_at": iso(now - 7200),
    }
    world.add_session(PAST_CLOSED, status="closed", **long_ago)
    world.add_session(PAST_ERROR, status="error", error=PAST_ERROR_MESSAGE, **long_ago)
    world.add_session(PAST_TIMED_OUT, status="timed_out", **long_ago)
    for session_id in LIVE:
        world.add_session(
            session_id,
            status="authenticating" if session_id == AUTHENTICATING else "active",
            created_at=iso(now - 30),
            last_accessed_at=iso(now - 5),
            idle_timeout_minutes=5,
            max_duration_minutes=15,
            network_request_bytes=1_000,
            network_response_bytes=20_000,
            steps=[{"type": "goto", "timestamp": iso(now - 25)}],
        )
    world.add_function(FUNCTION, name="checkout-monitor")
    world.start_run(FUNCTION)  # under way for the whole test
    world.add_function(
        SCHEDULED, name="daily-report", schedule_cron="rate(1 minute)", schedule_state="enabled"
    )
    world.backfill_runs(SCHEDULED, every=60.0, count=3)
    world.start_usage(balance=40.0)
    return world


@pytest.fixture
def ids_file(tmp_path: Path) -> Path:
    """The configured session IDs, re-read by the exporter every poll."""
    path = tmp_path / "session-ids"
    path.write_text(f"{GONE}\n", encoding="utf-8")
    return path


@pytest.fixture
def exporter(api: SimulatorServer, ids_file: Path, tmp_path: Path) -> Iterator[tuple[Running, str]]:
    argv = [sys.executable, "-m", "exporter", "--api-url", api.url, "--api-key", API_KEY]
    argv += ["--listen-address", "127.0.0.1:0", "--poll-interval", "1", "--request-timeout", "2"]
    argv += ["--session-ids-file", str(ids_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
    # The working directory holds no .env file, so only these flags count.
    process = Running.start("the exporter", argv, tmp_path / "exporter.log", env=env, cwd=tmp_path)
    try:
        match = eventually(
            "the exporter logs where it listens",
            lambda: LISTENING.search(process.log()),
            timeout=30,
            alive=(process,),
        )
        address = f"127.0.0.1:{match.group(1)}"
        eventually(
            "the exporter is ready (first poll cycle succeeded)",
            lambda: httpx.get(f"http://{address}/readyz", timeout=5).status_code == 200,
            timeout=30,
            alive=(process,),
        )
        yield process, address
    finally:
        process.stop()


def rules_for_the_test(folder: Path) -> Path:
    """The shipped rules rendered with `RULE_OVERRIDES` (the mixin's own override seam)."""
    overrides, rules = folder / "overrides.yml", folder / "notte-exporter.rules.yml"
    overrides.write_text(RULE_OVERRIDES, encoding="utf-8")
    subprocess.run(
        [sys.executable, str(GENERATE_RULES), "--config", str(overrides), "--out", str(rules)],
        check=True,
        timeout=60,
    )
    return rules


def start_prometheus(tmp_path: Path, target: str) -> tuple[Running, str]:
    """Prometheus on a free loopback port (tried again if another process took it)."""
    prometheus = binary("prometheus")
    for attempt in range(3):
        folder = tmp_path / f"prometheus-{attempt}"
        folder.mkdir()
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules_for_the_test(folder))],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        config_file = folder / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
        address = f"127.0.0.1:{free_port()}"
        argv = [
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={address}",
        ]
        process = Running.start("prometheus", argv, folder / "prometheus.log", cwd=folder)
        try:
            eventually(
                "prometheus is ready",
                lambda: httpx.get(f"http://{address}/-/ready", timeout=5).status_code == 200,  # noqa: B023
                timeout=30,
                alive=(process,),
            )
        except AssertionError:
            process.stop()
            if "address already in use" in process.log() and attempt < 2:
                continue
            raise
        except BaseException:
            process.stop()
            raise
        return process, f"http://{address}"
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.fixture
def prometheus(exporter: tuple[Running, str], tmp_path: Path) -> Iterator[PrometheusApi]:
    process, url = start_prometheus(tmp_path, exporter[1])
    api = PrometheusApi(url, process)
    try:
        yield api
    finally:
        api.close()
        process.stop()


# -- the test -----------------------------------------------------------------------------


def check_panels(prometheus: PrometheusApi, state: str, start: float, end: float) -> list[str]:
    """Every panel query in `state`: data, or empty where EMPTY_BY_DESIGN says so."""
    failures: list[str] = []
    empty = EMPTY_BY_DESIGN[state]
    queries = all_panel_queries({"session_id": DETAIL_SESSION[state], "job": JOB})
    assert queries, "no panel queries found in dashboards/"
    keys = {(q.dashboard_uid, q.panel_title) for q in queries}
    assert keys >= empty.keys(), f"stale EMPTY_BY_DESIGN entries: {empty.keys() - keys}"
    for query in queries:
        try:
            if query.instant:
                data = prometheus.query(query.expr)
            else:
                data = prometheus.query_range(query.expr, start, end)
        except PrometheusError as exc:
            failures.append(f"[{state}] {describe(query)}\n    error: {exc}")
            continue
        found = problem(data)
        reason = empty.get((query.dashboard_uid, query.panel_title))
        if reason is not None:
            if found != "empty result":
                failures.append(
                    f"[{state}] {describe(query)}\n    should be empty ({reason}), got "
                    f"{data['result']}"
                )
        elif found:
            failures.append(f"[{state}] {describe(query)}\n    {found}")
    # The active-only panels return data for a live session, active or authenticating.
    for session_id in (STAYS_ACTIVE, AUTHENTICATING):
        for query in all_panel_queries({"session_id": session_id, "job": JOB}):
            if (query.dashboard_uid, query.panel_title) in ACTIVE_ONLY:
                found = problem(prometheus.query(query.expr))
                if found:
                    failures.append(f"[{state}] {describe(query)}\n    for {session_id}: {found}")
    return failures


def range_until_now(start: float) -> tuple[float, float]:
    """A range whose last step is now, so it includes the samples just seen."""
    end = time.time()
    return end - math.floor(end - start), end


@pytest.mark.timeout(300)
def test_dashboards_and_alerts_work_on_a_real_prometheus(
    world: SimulatedNotte,
    ids_file: Path,
    exporter: tuple[Running, str],
    prometheus: PrometheusApi,
) -> None:
    exporter_process, exporter_address = exporter
    processes = (exporter_process, prometheus.process)
    start = time.time()
    sel = f'job="{JOB}"'

    def wait(
        what: str,
        check: Callable[[], T],
        timeout: float = 30,
        describe: Callable[[], str] | None = None,
    ) -> T:
        return eventually(what, check, timeout=timeout, alive=processes, describe=describe)

    def ended_by_status() -> dict[str, float]:
        return {
            series["metric"]["status"]: float(series["value"][1])
            for series in prometheus.query(
                f"sum by (status) (notte_sessions_ended_total{{{sel}}})"
            )["result"]
        }

    # -- 1. A healthy fleet: a few scrapes of every live session, one closes normally.
    live = "|".join(LIVE)
    wait(
        "three scrapes of every live test session",
        lambda: (
            prometheus.value(
                "count(count by (session_id) (count_over_time(notte_session_status"
                f'{{{sel}, session_id=~"{live}", status=~"active|authenticating"}}[5m]) >= 3))'
            )
            == len(LIVE)
        ),
    )
    world.end_session(LIVE_CLOSED, "closed")
    closed_run = world.start_run(FUNCTION, session=False)  # the sessions' counts stay
    world.end_run(FUNCTION, closed_run, "closed")
    wait(
        "the normal ending reaches Prometheus, twice",
        lambda: (
            ended_by_status().get("closed") == 1.0
            and (
                prometheus.value(
                    f"count_over_time(notte_session_closed_timestamp_seconds{{{sel}, "
                    f'session_id="{LIVE_CLOSED}"}}[5m])'
                )
                or 0
            )
            >= 2
        ),
    )
    wait(
        "the closed run reaches Prometheus",
        lambda: (
            prometheus.value(
                f'notte_function_runs_total{{{sel}, function_id="{FUNCTION}", status="closed"}}'
            )
            == 1.0
        ),
    )
    failures = check_panels(prometheus, "healthy", *range_until_now(start))
    # The session the run under way drives shows its function on the session detail.
    (under_way,) = [
        r["session_id"]
        for r in world.runs_page(FUNCTION, page=1, page_size=100, only_active=True)[0]
    ]
    for query in all_panel_queries({"session_id": under_way, "job": JOB}):
        if (query.dashboard_uid, query.panel_title) in NO_RUN:
            result = prometheus.query(query.expr)["result"]
            assert [r["metric"]["function_id"] for r in result] == [FUNCTION], result

    # -- 2. Failures: traffic, then sessions end badly, one disappears, API errors, the
    # old sessions join the configuration, and one session lives 3 s between two polls.
    ids_file.write_text("\n".join((GONE, *PAST)) + "\n", encoding="utf-8")
    world.update_session(
        LIVE_ERROR,
        network_request_bytes=9_000,
        network_response_bytes=250_000,
        steps=[{"type": "goto"}, {"type": "click"}, {"type": "scrape"}],
        last_accessed_at=iso(time.time()),
    )
    world.inject(Fault(endpoint="list_sessions", status=500, count=1))
    wait(
        "the new traffic and the API error reach Prometheus",
        lambda: (
            prometheus.value(
                f'notte_session_network_response_bytes_total{{{sel}, session_id="{LIVE_ERROR}"}}'
            )
            == 250_000
            and prometheus.value(
                f'sum(notte_exporter_api_requests_total{{{sel}, code="500"}} >= 1)'
                f" and on () max(count_over_time(notte_exporter_api_requests_total{{{sel},"
                ' code="500"}[5m])) >= 2'
            )
        ),
    )
    world.end_session(LIVE_ERROR, "error", error=LIVE_ERROR_MESSAGE)
    world.end_session(LIVE_TIMED_OUT, "timed_out")
    world.delete_session(GONE)
    now = time.time()
    world.add_session(
        QUICK_ERROR,
        status="error",
        error=QUICK_ERROR_MESSAGE,
        created_at=iso(now - 3),
        last_accessed_at=iso(now - 2),
        closed_at=iso(now),
    )
    world.inject(Fault(endpoint="list_sessions", status=500, count=1))

    def seen_failing() -> bool:
        dropped = prometheus.value(
            f'notte_exporter_sessions_dropped_total{{{sel}, reason="not_found"}}'
        )
        errors = prometheus.value(f'sum(notte_exporter_api_requests_total{{{sel}, code="500"}})')
        past = prometheus.value(
            f'count(notte_session_status{{{sel}, session_id=~"{"|".join(PAST)}"}} == 1)'
        )
        # The old sessions are exported but not counted (they ended before the start);
        # the quick one, caught by the sweep, is.
        return (
            ended_by_status() == {"closed": 1.0, "error": 2.0, "timed_out": 1.0}
            and dropped == 1.0
            and errors == 2.0
            and past == len(PAST)
        )

    wait("the endings, the drop and the second API error reach Prometheus", seen_failing)
    failed_run = world.start_run(FUNCTION, session=False)
    world.end_run(FUNCTION, failed_run, "failed")
    wait(
        "the failed run reaches Prometheus",
        lambda: (
            prometheus.value(
                f'notte_function_runs_total{{{sel}, function_id="{FUNCTION}", status="failed"}}'
            )
            == 1.0
        ),
    )
    start, end = range_until_now(start)
    failures += check_panels(prometheus, "failures", start, end)

    # Every template variable finds its values, including the ones the test used.
    expected = {
        "job": JOB,
        "instance": exporter_address,
        "session_id": LIVE_ERROR,
        "function_id": FUNCTION,
    }
    for board in load_dashboards().values():
        for variable in variable_queries(board, {"session_id": LIVE_ERROR, "job": JOB}):
            values = prometheus.get(
                f"/api/v1/label/{variable.label}/values",
                **{"match[]": variable.selector, "start": start, "end": end},
            )
            if expected.get(variable.name) not in values:
                failures.append(
                    f"{variable.dashboard_uid} variable ${variable.name} "
                    f"(label_values({variable.selector}, {variable.label})): "
                    f"{expected.get(variable.name)!r} not in {values}"
                )

    # Every alert rule evaluates cleanly.
    for group in prometheus.get("/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            if rule.get("health") != "ok":
                failures.append(
                    f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}"
                )

    # The alerts: the sessions that ended badly fire, the exporter is not down.
    def firing_alerts() -> list[dict[str, Any]]:
        return [alert for alert in prometheus.alerts() if alert["state"] == "firing"]

    def firing(name: str) -> dict[str, dict[str, Any]]:
        return {
            alert["labels"].get("session_id", ""): alert
            for alert in firing_alerts()
            if alert["labels"]["alertname"] == name
        }

    wait(
        "NotteSessionErrored and NotteSessionTimedOut fire for exactly the recent endings",
        lambda: (
            firing("NotteSessionErrored").keys() == ERRORED.keys()
            and firing("NotteSessionTimedOut").keys() == TIMED_OUT
        ),
        timeout=20,
        describe=lambda: (
            "firing: "
            + ", ".join(
                sorted(
                    f"{a['labels']['alertname']}({a['labels'].get('session_id', '')})"
                    for a in firing_alerts()
                )
            )
        ),
    )
    errored = firing("NotteSessionErrored")
    for session_id, message in ERRORED.items():
        alert = errored[session_id]
        assert alert["labels"]["job"] == JOB
        assert alert["labels"]["severity"] == "warning"
        assert f"Error: {message}" in alert["annotations"]["description"], alert
    rules = {
        rule["name"]: rule
        for group in prometheus.get("/api/v1/rules")["groups"]
        for rule in group["rules"]
    }
    assert "NotteExporterDown" in rules, sorted(rules)
    assert rules["NotteExporterDown"]["state"] != "firing", rules["NotteExporterDown"]
    assert "NotteExporterDown" not in {a["labels"]["alertname"] for a in firing_alerts()}

    # A failed run fires NotteFunctionRunFailed for its function, which then resolves.
    def run_failed() -> dict[str, dict[str, Any]]:
        return {
            alert["labels"]["function_id"]: alert
            for alert in firing_alerts()
            if alert["labels"]["alertname"] == "NotteFunctionRunFailed"
        }

    fired = wait("NotteFunctionRunFailed fires for the failed run", run_failed)
    assert fired.keys() == {FUNCTION}
    assert "(checkout-monitor)" in fired[FUNCTION]["annotations"]["description"]
    wait("NotteFunctionRunFailed resolves", lambda: not run_failed(), timeout=60)
    quiet = {"NotteFunctionRunsFailing", "NotteFunctionScheduleMissed", "NotteUsageLimitExceeded"}
    assert not quiet & {a["labels"]["alertname"] for a in firing_alerts()}

    # -- 3. Mid-outage: every request fails; the last known values stay exported.
    world.inject(Fault(endpoint="any", status=503))
    wait(
        "the outage reaches Prometheus (notte_up 0 for a few scrapes)",
        lambda: prometheus.value(f"max_over_time(notte_up{{{sel}}}[3s])") == 0,
    )
    failures += check_panels(prometheus, "outage", *range_until_now(start))

    assert not failures, f"{len(failures)} problem(s):\n" + "\n".join(failures)
    assert "Traceback" not in exporter_process.log(), exporter_process.log()[-4000:]
