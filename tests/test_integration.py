"""End-to-end behaviour of the exporter against the simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from exporter.cli import parse_command_line
from exporter.labels import CLOSE_REASONS, ENDED_STATUSES, STATUSES
from exporter.settings import load_settings
from exporter.simulator import Fault, SimulatedNotte, SimulatorServer
from tests.harness import (
    API_KEY,
    Clock,
    ExporterUnderTest,
    Serve,
    assert_promtool_accepts,
    exporter_for,
    family_types,
    iso,
    make_settings,
    parse_samples,
    run_cli,
    total,
    value,
    wait_until,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def world() -> SimulatedNotte:
    return SimulatedNotte(seed=1, clock=lambda: NOW)


def close_reasons(samples: Samples) -> dict[str, str]:
    """session_id -> close_reason of the `notte_session_close_reason` series (all of them 1)."""
    found = {}
    for (name, labels), sample in samples.items():
        if name == "notte_session_close_reason":
            assert sample == 1
            found[dict(labels)["session_id"]] = dict(labels)["close_reason"]
    return found


@pytest.mark.parametrize("include_system", [False, True])
def test_discovery_needs_no_redirect_and_lists_system_sessions_only_when_asked(
    world: SimulatedNotte, api: SimulatorServer, include_system: bool
) -> None:
    world.add_session("user-live")
    world.add_session("system-live", system=True)
    world.add_session("user-authenticating", status="authenticating")
    with exporter_for(api.url, include_system=include_system) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()
    exported = {
        dict(labels)["session_id"]
        for (name, labels), _ in samples.items()
        if name == "notte_session_status"
    }
    expected = {"user-live", "user-authenticating"} | ({"system-live"} if include_system else set())
    assert exported == expected
    assert value(samples, "notte_up") == 1
    # Every list request went straight to `/sessions/`: no 307 on the way.
    lists = [r for r in world.request_log() if r.endpoint == "list_sessions"]
    assert lists
    assert {(r.path, r.status) for r in lists} == {("/sessions/", 200)}


def test_every_metric_has_the_contract_type_and_value_for_every_status(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session(
        "live",
        created_at=iso(NOW - 100),
        last_accessed_at=iso(NOW - 40),
        idle_timeout_minutes=2,
        max_duration_minutes=10,
        network_request_bytes=1234,
        network_response_bytes=98765,
        steps=[{"n": 1}, {"n": 2}, {"n": 3}],
        browser_type="firefox",
        proxies=False,
        solve_captchas=None,
        web_bot_auth=True,
    )
    world.add_session(
        "auth",
        status="authenticating",
        created_at=iso(NOW - 100),
        last_accessed_at=iso(NOW - 30),
        idle_timeout_minutes=1,
        max_duration_minutes=5,
    )
    # The payload's duration is live-style nonsense for an ended session: closed_at wins.
    world.add_session("gone", status="closed", created_at=iso(NOW - 300))
    world.update_session("gone", closed_at=iso(NOW - 200), duration="PT900S", close_reason="manual")
    world.add_session("short", status="closed", created_at=iso(NOW - 300))
    world.update_session("short", closed_at=None, duration="PT41.5S", close_reason=None)
    world.add_session("boom", status="error", created_at=iso(NOW - 300), error="x" * 250)
    world.update_session("boom", closed_at=iso(NOW - 150), duration=None, close_reason="error")
    world.add_session("late", status="timed_out", created_at=iso(NOW - 300))
    world.update_session(
        "late",
        closed_at=None,
        duration=None,
        last_accessed_at=iso(NOW - 60),
        close_reason="idle_timeout",
    )
    world.add_session("odd", status="paused", created_at=iso(NOW - 10), max_duration_minutes=10)
    configured = ["auth", "gone", "short", "boom", "late", "odd"]
    clock = Clock(NOW + 20)
    # The active list only (the sweep's own list requests are tested in test_sweep.py).
    exporter = ExporterUnderTest(
        make_settings(api.url, session_ids=configured, sweep=False), clock=clock
    )
    exporter.start_http()
    try:
        assert exporter.cycle()
        text = exporter.get("/metrics").text
    finally:
        exporter.close()
    samples = parse_samples(text)
    types = family_types(text)

    assert types["notte_session_status"] == "gauge"
    for status in STATUSES:
        expected = 1.0 if status == "active" else 0.0
        assert value(samples, "notte_session_status", session_id="live", status=status) == expected
    assert value(samples, "notte_session_status", session_id="auth", status="authenticating") == 1
    assert value(samples, "notte_session_status", session_id="boom", status="error") == 1
    assert value(samples, "notte_session_status", session_id="odd", status="paused") == 1
    assert value(samples, "notte_session_status", session_id="odd", status="active") == 0
    assert value(samples, "notte_session_status", session_id="live", status="paused") is None

    assert types["notte_session_network_request_bytes"] == "counter"
    assert value(samples, "notte_session_network_request_bytes_total", session_id="live") == 1234
    assert value(samples, "notte_session_network_response_bytes_total", session_id="live") == 98765

    # Live: now - created_at. Ended: closed_at - created_at, else duration, else last access.
    durations = {"live": 120, "auth": 120, "odd": 30, "gone": 100, "short": 41.5, "boom": 150}
    for session_id, seconds in (*durations.items(), ("late", 240)):
        assert value(samples, "notte_session_duration_seconds", session_id=session_id) == seconds
    assert value(samples, "notte_session_idle_timeout_seconds", session_id="live") == 120
    assert value(samples, "notte_session_idle_remaining_seconds", session_id="live") == 60
    assert value(samples, "notte_session_idle_deadline_timestamp_seconds", session_id="live") == (
        NOW + 80
    )
    assert value(samples, "notte_session_max_duration_seconds", session_id="live") == 600
    assert value(samples, "notte_session_max_duration_remaining_seconds", session_id="live") == 480
    # authenticating is live: it counts down like an active session.
    assert value(samples, "notte_session_idle_remaining_seconds", session_id="auth") == 10
    assert value(samples, "notte_session_idle_deadline_timestamp_seconds", session_id="auth") == (
        NOW + 30
    )
    assert value(samples, "notte_session_max_duration_remaining_seconds", session_id="auth") == 180
    assert value(samples, "notte_session_max_duration_remaining_seconds", session_id="odd") == 570
    assert value(samples, "notte_session_created_timestamp_seconds", session_id="live") == NOW - 100
    assert value(samples, "notte_session_last_accessed_timestamp_seconds", session_id="live") == (
        NOW - 40
    )
    assert value(samples, "notte_session_closed_timestamp_seconds", session_id="gone") == NOW - 200
    assert value(samples, "notte_session_closed_timestamp_seconds", session_id="late") is None
    assert value(samples, "notte_session_steps", session_id="live") == 3
    for ended in ("gone", "short", "boom", "late"):
        assert value(samples, "notte_session_idle_remaining_seconds", session_id=ended) is None
        assert (
            value(samples, "notte_session_max_duration_remaining_seconds", session_id=ended) is None
        )
    info = {
        "session_id": "live",
        "browser_type": "firefox",
        "proxies": "false",
        "solve_captchas": "",
        "web_bot_auth": "true",
    }
    assert value(samples, "notte_session_info", **info) == 1
    info_labels = {
        tuple(name for name, _ in labels)
        for (name, labels) in samples
        if name == "notte_session_info"
    }
    assert info_labels == {
        ("browser_type", "proxies", "session_id", "solve_captchas", "web_bot_auth")
    }
    assert value(samples, "notte_session_error_info", session_id="boom", error="x" * 200) == 1
    assert close_reasons(samples) == {"gone": "manual", "boom": "error", "late": "idle_timeout"}

    assert types["notte_sessions"] == "gauge"
    by_status = {"active": 1, "authenticating": 1, "closed": 2, "error": 1, "timed_out": 1}
    for status, count in {**by_status, "paused": 1}.items():
        assert value(samples, "notte_sessions", status=status) == count
    assert types["notte_sessions_ended"] == "counter"
    ended_series = {
        labels: v for (name, labels), v in samples.items() if name == "notte_sessions_ended_total"
    }
    assert ended_series == {
        (("close_reason", reason), ("status", status)): 0
        for status in ENDED_STATUSES
        for reason in CLOSE_REASONS
    }
    assert value(samples, "notte_exporter_tracked_sessions", source="configured") == 6
    assert value(samples, "notte_exporter_tracked_sessions", source="discovered") == 1
    for reason in ("retention", "not_found", "limit"):
        assert value(samples, "notte_exporter_sessions_dropped_total", reason=reason) == 0
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_exporter_last_poll_success_timestamp_seconds") == NOW + 20
    assert types["notte_exporter_poll_duration_seconds"] == "histogram"
    assert value(samples, "notte_exporter_polls_total", result="success") == 1
    assert value(samples, "notte_exporter_polls_total", result="failure") == 0
    assert types["notte_exporter_api_request_duration_seconds"] == "histogram"
    assert (
        value(samples, "notte_exporter_api_requests_total", endpoint="list_sessions", code="200")
        == 1
    )
    assert value(samples, "notte_exporter_shard_ordinal") == 0
    assert value(samples, "notte_exporter_total_shards") == 1
    assert any(name == "notte_exporter_build_info" for name, _ in samples)


def test_sessions_ending_are_counted_by_status_and_close_reason(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    for session_id in ("idle", "long", "quiet"):
        world.add_session(session_id)
    with exporter_for(api.url) as exporter:
        assert exporter.cycle()
        world.end_session("idle", "timed_out")
        world.update_session("idle", close_reason="idle_timeout")
        world.end_session("long", "timed_out")
        world.update_session("long", close_reason="max_duration")
        world.end_session("quiet", "closed")
        world.update_session("quiet", close_reason=None)
        assert exporter.cycle()
        samples = exporter.metrics()
    ended = {
        ("timed_out", "idle_timeout"): 1,
        ("timed_out", "max_duration"): 1,
        ("closed", "unknown"): 1,
    }
    for status in ENDED_STATUSES:
        for reason in CLOSE_REASONS:
            count = ended.get((status, reason), 0)
            labels = {"status": status, "close_reason": reason}
            assert value(samples, "notte_sessions_ended_total", **labels) == count
    assert value(samples, "notte_session_status", session_id="quiet", status="closed") == 1
    assert close_reasons(samples) == {"idle": "idle_timeout", "long": "max_duration"}


def test_huge_numbers_make_the_item_invalid_and_metrics_keep_answering(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("fine")
    world.add_session("big-bytes", network_request_bytes=2**1024)
    world.add_session("big-minutes", idle_timeout_minutes=10**400)
    world.add_session("configured-big", status="authenticating", network_response_bytes=2**64)
    with exporter_for(api.url, session_ids=["configured-big"], sweep=False) as exporter:
        assert exporter.cycle()
        response = exporter.get("/metrics")
        om = exporter.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert om.status_code == 200
    samples = parse_samples(response.text)
    assert value(samples, "notte_session_status", session_id="fine", status="active") == 1
    for skipped in ("big-bytes", "big-minutes", "configured-big"):
        assert value(samples, "notte_session_status", session_id=skipped, status="active") is None
    bad = "notte_exporter_api_bad_data_total"
    # An authenticating session is live, so the active list carries it too.
    assert value(samples, bad, endpoint="list_sessions", kind="invalid_item") == 3
    assert value(samples, bad, endpoint="get_session", kind="invalid_item") == 1


def test_paging_lists_every_page_and_never_fetches_listed_sessions(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    for index in range(25):
        world.add_session(f"s{index:02d}")
    with exporter_for(api.url, page_size=10, sweep=False) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_sessions", status="active") == 25
    pages = [int(r.query["page"]) for r in world.request_log() if r.endpoint == "list_sessions"]
    assert pages == [1, 2, 3]
    assert world.requests_total("get_session") == 0


def test_paging_with_a_bare_list_stops_on_a_short_page(world: SimulatedNotte, serve: Serve) -> None:
    for index in range(20):
        world.add_session(f"s{index:02d}")
    api = serve(world, list_shape="list")
    with exporter_for(api.url, page_size=10, sweep=False) as exporter:
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_sessions", status="active") == 20
    # 10 + 10 + an empty third page: a full page means there may be more.
    assert world.requests_total("list_sessions") == 3


def test_active_to_error_flips_the_state_set_counts_once_and_stops_polling(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("a1")
    with exporter_for(api.url) as exporter:
        assert exporter.cycle()
        world.end_session("a1", "error", error="Browser crashed")
        assert exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_session_status", session_id="a1", status="error") == 1
        assert value(samples, "notte_session_status", session_id="a1", status="active") == 0
        assert total(samples, "notte_sessions_ended_total", status="error") == 1
        assert value(samples, "notte_session_error_info", session_id="a1", error="Browser crashed")
        assert exporter.cycle()
        assert exporter.cycle()
        assert total(exporter.metrics(), "notte_sessions_ended_total", status="error") == 1
    gets = [r for r in world.request_log() if r.endpoint == "get_session"]
    assert len(gets) == 1


def test_ended_discovered_session_is_dropped_after_retention(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("a1")
    clock = Clock(NOW)
    exporter = ExporterUnderTest(make_settings(api.url, retention=60), clock=clock)
    exporter.start_http()
    try:
        assert exporter.cycle()
        world.end_session("a1", "closed")
        clock.now = NOW + 10
        assert exporter.cycle()
        clock.now = NOW + 69
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_session_status", session_id="a1", status="closed")
        clock.now = NOW + 70
        assert exporter.cycle()
        samples = exporter.metrics()
    finally:
        exporter.close()
    assert value(samples, "notte_session_status", session_id="a1", status="closed") is None
    assert value(samples, "notte_exporter_sessions_dropped_total", reason="retention") == 1
    assert total(samples, "notte_sessions_ended_total", status="closed") == 1


def test_configured_session_answering_404_is_dropped_and_not_asked_again(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("c1")
    with exporter_for(api.url, session_ids=["c1", "missing"], discovery=False) as exporter:
        assert exporter.cycle()
        world.delete_session("c1")
        assert exporter.cycle()
        assert exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_session_status", session_id="c1", status="active") is None
    assert value(samples, "notte_exporter_sessions_dropped_total", reason="not_found") == 2
    gets = [r.path for r in world.request_log() if r.endpoint == "get_session"]
    assert gets.count("/sessions/missing") == 1
    assert gets.count("/sessions/c1") == 2


def test_ids_file_is_re_read_every_cycle(
    world: SimulatedNotte, api: SimulatorServer, tmp_path: Path
) -> None:
    world.add_session("one", status="closed")
    world.add_session("two", status="error")
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# watched\none\n")
    with exporter_for(api.url, session_ids_file=ids_file, discovery=False) as exporter:
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_session_status", session_id="one", status="closed")
        ids_file.write_text("two  # the other one\n")
        assert exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_session_status", session_id="two", status="error") == 1
    assert value(samples, "notte_session_status", session_id="one", status="closed") is None


def test_session_ids_reach_only_their_own_path(world: SimulatedNotte, api: SimulatorServer) -> None:
    hostile = ["../sessions", "a?b=1#c", "..", "%2e%2e"]
    with exporter_for(api.url, session_ids=hostile, discovery=False) as exporter:
        exporter.cycle()
    records = world.request_log()
    assert {r.endpoint for r in records} == {"get_session"}
    assert len(records) == len(hostile)


def test_readyz_is_503_until_the_first_success_then_200_for_good(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("a1")
    with exporter_for(api.url) as exporter:
        assert exporter.get("/healthz").status_code == 200
        world.inject(Fault(endpoint="list_sessions", status=500, count=3))
        assert not exporter.cycle()
        assert exporter.get("/readyz").status_code == 503
        assert exporter.cycle()
        assert exporter.get("/readyz").status_code == 200
        world.inject(Fault(status=503))
        assert not exporter.cycle()
        assert exporter.get("/readyz").status_code == 200
        samples = exporter.metrics()
    assert value(samples, "notte_up") == 0
    assert value(samples, "notte_session_status", session_id="a1", status="active") == 1
    assert value(samples, "notte_exporter_polls_total", result="failure") == 2


def test_landing_page_links_to_metrics(world: SimulatedNotte, api: SimulatorServer) -> None:
    with exporter_for(api.url) as exporter:
        page = exporter.get("/")
        assert page.status_code == 200
        assert 'href="/metrics"' in page.text.replace("'", '"')
        assert exporter.get("/nope").status_code == 404


def test_openmetrics_and_gzip_are_negotiated(world: SimulatedNotte, api: SimulatorServer) -> None:
    world.add_session("a1")
    with exporter_for(api.url) as exporter:
        assert exporter.cycle()
        om = exporter.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")
        assert om.text.count("# EOF") == 1
        zipped = exporter.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        plain = exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "notte_session_status" in zipped.text
    assert zipped.text.split("\n# HELP notte_up")[0] == plain.text.split("\n# HELP notte_up")[0]


def test_scheduler_runs_the_first_cycle_at_start(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("a1")
    exporter = ExporterUnderTest(make_settings(api.url, poll_interval=3600))
    exporter.serve()
    try:
        wait_until(lambda: exporter.get("/readyz").status_code == 200)
        assert value(exporter.metrics(), "notte_sessions", status="active") == 1
    finally:
        exporter.close()


def test_promtool_finds_no_problem_in_the_exposition(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.populate(active=5, ended=3)
    ended = [i for i in world.session_ids() if i not in world.session_ids(status="active")]
    with exporter_for(api.url, session_ids=ended) as exporter:
        assert exporter.cycle()
        body = exporter.get("/metrics").content
    assert_promtool_accepts(body)


def test_once_prints_metrics_and_exits_0(world: SimulatedNotte, api: SimulatorServer) -> None:
    world.add_session("a1")
    result = run_cli("--once", env={"NOTTE_API_URL": api.url, "NOTTE_API_KEY": API_KEY})
    assert result.returncode == 0, result.stderr
    samples = parse_samples(result.stdout)
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_session_status", session_id="a1", status="active") == 1


def test_once_exits_1_with_a_clear_message_when_the_api_is_unreachable() -> None:
    result = run_cli(
        "--once",
        "--api-url",
        "http://127.0.0.1:9",
        "--request-timeout",
        "1",
        "--poll-interval",
        "3",
        env={"NOTTE_API_KEY": API_KEY},
    )
    assert result.returncode == 1
    assert "poll cycle failed" in result.stderr
    assert API_KEY not in result.stderr + result.stdout


def test_once_exits_1_when_unauthorised(world: SimulatedNotte, api: SimulatorServer) -> None:
    result = run_cli("--once", env={"NOTTE_API_URL": api.url, "NOTTE_API_KEY": "wrong-key"})
    assert result.returncode == 1
    assert "401" in result.stderr


def test_demo_serves_sessions_of_every_status() -> None:
    process = subprocess.Popen(
        [
            *run_cli_argv(),
            "--demo",
            "--listen-address",
            "127.0.0.1:0",
            "--poll-interval",
            "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")},
    )
    try:
        assert process.stderr is not None
        port = None
        while port is None:
            line = process.stderr.readline()
            assert line, "the exporter exited before listening"
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None

        def statuses() -> set[str]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            samples = parse_samples(text)
            return {
                dict(labels)["status"]
                for (name, labels), v in samples.items()
                if name == "notte_session_status" and v == 1
            }

        wait_until(lambda: statuses() >= {"active", "closed", "error", "timed_out"}, timeout=20)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(10)
        assert process.stderr is not None
        process.stderr.close()
    assert returncode == 0


def run_cli_argv() -> list[str]:
    return [sys.executable, "-m", "exporter"]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--poll-interval", "-1"], {}, "NOTTE_EXPORTER_POLL_INTERVAL"),
        (["--poll-interval", "soon"], {}, "--poll-interval"),
        (["--bogus"], {}, "--bogus"),
        ([], {"NOTTE_EXPORTER_MAX_SESSIONS": "many"}, "NOTTE_EXPORTER_MAX_SESSIONS"),
        (
            ["--api-key-file", "/nonexistent/key"],
            {"NOTTE_API_KEY": ""},
            "bad setting NOTTE_API_KEY_FILE (--api-key-file): /nonexistent/key: No such file",
        ),
        ([], {"NOTTE_API_KEY_FILE": "/x"}, "NOTTE_API_KEY_FILE"),
        ([], {"NOTTE_API_KEY": ""}, "NOTTE_API_KEY"),
        (["--listen-address", "nowhere"], {}, "NOTTE_EXPORTER_LISTEN_ADDRESS"),
        (["--log-level", "loud"], {}, "NOTTE_EXPORTER_LOG_LEVEL"),
        (["--shard", "2", "--total-shards", "2"], {}, "NOTTE_EXPORTER_SHARD"),
        (
            ["--web-config-file", "/nonexistent/web.yml"],
            {},
            "bad setting NOTTE_EXPORTER_WEB_CONFIG_FILE (--web-config-file): "
            "/nonexistent/web.yml: cannot read: No such file",
        ),
        (["--web.listen-address", "nowhere"], {}, "NOTTE_EXPORTER_LISTEN_ADDRESS"),
        (["--log.level", "loud"], {}, "NOTTE_EXPORTER_LOG_LEVEL"),
        (["--poll", "5"], {}, "--poll"),  # no abbreviations
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_them(
    args: list[str], env: dict[str, str], named: str
) -> None:
    environment = {"NOTTE_API_KEY": API_KEY, **env}
    if environment["NOTTE_API_KEY"] == "":
        del environment["NOTTE_API_KEY"]
    result = run_cli(*args, env=environment, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert API_KEY not in result.stderr


def test_flag_beats_environment_beats_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("NOTTE_EXPORTER_PAGE_SIZE=7\nNOTTE_EXPORTER_RETENTION=11\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NOTTE_EXPORTER_RETENTION", "22")
    monkeypatch.setenv("NOTTE_EXPORTER_SESSION_IDS", "env1,env2")
    command = parse_command_line(
        ["--max-sessions", "33", "--session-id", "f1", "--session-id", "f2"]
    )
    settings = load_settings(command.flags)
    assert settings.page_size == 7
    assert settings.retention == 22
    assert settings.max_sessions == 33
    assert settings.session_ids == ["f1", "f2"]
