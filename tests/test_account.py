"""The account beyond sessions, over real HTTP against the simulator: functions and their
runs, the functions runtime, usage and balance, and what they must not disturb."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from exporter.labels import LIST_FUNCTION_RUNS, RUN_FAILED
from exporter.polling.schedule import BadSchedule, parse_schedule
from exporter.simulator import SimulatedNotte, SimulatorServer
from tests.harness import API_KEY, Clock, ExporterUnderTest, log_lines, make_settings, value

START = 1_800_000_000.0  # 2027-01-15 08:00 UTC, a Friday
ACCOUNT_ENDPOINTS = (
    "list_functions",
    "get_function",
    "list_function_runs",
    "get_function_run",
    "functions_health",
    "get_usage",
)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def world(clock: Clock) -> SimulatedNotte:
    world = SimulatedNotte(seed=4, clock=clock)
    world.add_session("s1")
    world.add_function("f1", name="checkout-monitor")
    world.start_usage(balance=30.0)
    return world


@pytest.fixture
def exporter(api: SimulatorServer, clock: Clock) -> ExporterUnderTest:
    exporter = ExporterUnderTest(make_settings(api.url, page_size=3), clock=clock, monotonic=clock)
    exporter.start_http()
    yield exporter
    exporter.close()


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_runs_that_start_and_end_between_two_cycles_are_counted_once_with_their_status(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    assert exporter.full_cycle()
    samples = exporter.metrics()
    labels = {"function_id": "f1"}
    assert value(samples, "notte_function_runs_total", status="closed", **labels) == 0
    assert value(samples, "notte_function_runs_total", status=RUN_FAILED, **labels) == 0
    clock.now += 5
    quick = world.start_run("f1", seconds=3)
    failing = world.start_run("f1", seconds=2, fails=True)
    for _ in range(5):  # five more runs: two pages of runs are new since the last cycle
        world.start_run("f1", seconds=1)
    clock.now += 10
    world.tick(10)
    for _ in range(3):  # the same runs, asked again: not counted again
        assert exporter.full_cycle()
        clock.now += 15
    samples = exporter.metrics()
    assert value(samples, "notte_function_runs_total", status="closed", **labels) == 6
    assert value(samples, "notte_function_runs_total", status="failed", **labels) == 1
    assert value(samples, "notte_function_run_duration_seconds_count", **labels) == 7
    assert value(samples, "notte_function_run_duration_seconds_bucket", le="5.0", **labels) == 7
    assert value(samples, "notte_function_runs_active", **labels) == 0
    newest_failed = value(
        samples, "notte_function_last_run_timestamp_seconds", status="failed", **labels
    )
    assert newest_failed == START + 5
    assert quick != failing


def test_a_long_run_past_the_pages_read_is_asked_for_and_seen_ending(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    long_run = world.start_run("f1")
    clock.now += 1
    assert exporter.full_cycle()
    session_link = exporter.metrics()
    link = {"function_id": "f1", "function_run_id": long_run}
    assert any(
        name == "notte_function_run_session_info" and dict(series).items() >= link.items()
        for name, series in session_link
    )
    for _ in range(7):  # newer runs push it past the first page
        clock.now += 1
        world.start_run("f1", seconds=1)
    clock.now += 10
    world.tick(10)
    assert exporter.full_cycle()  # reads every page: all the runs are new
    world.end_run("f1", long_run, RUN_FAILED)
    clock.now += 15
    world.reset_requests()
    assert exporter.full_cycle()
    samples = exporter.metrics()
    assert value(samples, "notte_function_runs_total", function_id="f1", status="failed") == 1
    assert value(samples, "notte_function_runs_active", function_id="f1") == 0
    paths = [r.path for r in world.request_log()]
    assert f"/functions/f1/runs/{long_run}" in paths
    assert paths.count("/functions/f1/runs/") == 1  # a quiet function: one page


def test_a_schedules_next_run_follows_its_cron_and_its_rate(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    world.add_function("weekday", schedule_cron="cron(0 8 ? * MON-FRI *)", schedule_state="enabled")
    world.add_function("rate", schedule_cron="rate(5 minutes)", schedule_state="enabled")
    world.add_function("paused", schedule_cron="rate(5 minutes)", schedule_state="paused")
    world.add_function("broken", schedule_cron="cron(0 8 * *)", schedule_state="enabled")
    run = world.start_run("rate", seconds=1)
    assert run
    world.tick(1)
    assert exporter.full_cycle()
    samples = exporter.metrics()
    next_run = "notte_function_next_run_timestamp_seconds"
    # The weekday cron: no run yet, the last change an hour before START (Friday 07:00).
    assert value(samples, next_run, function_id="weekday") == at("2027-01-15T08:00:00")
    assert value(samples, next_run, function_id="rate") == START + 300
    assert value(samples, next_run, function_id="paused") is None
    assert value(samples, next_run, function_id="broken") is None
    bad = {"endpoint": "get_function", "kind": "bad_schedule"}
    assert value(samples, "notte_exporter_api_bad_data_total", **bad) == 1
    info = [dict(s) for n, s in samples if n == "notte_function_info"]
    assert {i["function_id"]: i["schedule_state"] for i in info}["paused"] == "paused"


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("cron(0 8 ? * MON-FRI *)", "2027-01-15T08:00:00", "2027-01-18T08:00:00"),
        ("0 8 ? * 2-6 *", "2027-01-15T08:00:00", "2027-01-18T08:00:00"),  # 2-6: Monday-Friday
        ("cron(0/15 * * * ? *)", "2027-01-15T08:07:00", "2027-01-15T08:15:00"),
        ("cron(0 18 ? * 6L *)", "2027-01-01T00:00:00", "2027-01-29T18:00:00"),  # last Friday
        ("cron(0 10 ? * 2#1 *)", "2027-01-05T00:00:00", "2027-02-01T10:00:00"),  # 1st Monday
        ("cron(30 9 1 * ? 2028)", "2027-01-15T08:00:00", "2028-01-01T09:30:00"),
        ("rate(5 minutes)", "2027-01-15T08:00:00", "2027-01-15T08:05:00"),
        ("rate(1 hour)", "2027-01-15T08:00:00", "2027-01-15T09:00:00"),
        ("rate(2 days)", "2027-01-15T08:00:00", "2027-01-17T08:00:00"),
    ],
)
def test_eventbridge_expressions_read_as_eventbridge_means_them(
    text: str, after: str, expected: str
) -> None:
    assert parse_schedule(text).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    "text", ["", "* * * * *", "cron(0 25 * * ? *)", "rate(0 minutes)", "rate(5 weeks)", "x" * 300]
)
def test_an_unreadable_expression_is_bad_data(text: str) -> None:
    with pytest.raises(BadSchedule):
        parse_schedule(text)


def test_the_cron_parser_is_loaded_only_when_a_cron_is_read() -> None:
    code = (
        "import sys; import exporter.app; from exporter.polling.schedule import parse_schedule; "
        "parse_schedule('rate(5 minutes)'); print('croniter' in sys.modules, end=' '); "
        "parse_schedule('cron(0 12 * * ? *)'); print('croniter' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout == "False True\n"


def test_usage_and_the_runtime_are_exported_and_the_balance_falls(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    assert exporter.full_cycle()
    first = exporter.metrics()
    assert value(first, "notte_usage_balance", kind="total") == pytest.approx(30.0)
    assert value(first, "notte_usage_limit", kind="subscription") == 50
    assert value(first, "notte_usage_limit_exceeded") == 0
    assert value(first, "notte_functions_runtime_status", status="ok") == 1
    assert value(first, "notte_functions_runtime_status", status="degraded") == 0
    assert value(first, "notte_functions_runtime_reachable") == 1
    world.start_run("f1", seconds=100)
    world.set_runtime("degraded")
    for _ in range(20):
        clock.now += 15
        world.tick(15)
        assert exporter.full_cycle()
    later = exporter.metrics()
    assert value(later, "notte_usage_balance", kind="total") < 30.0
    assert value(later, "notte_functions_runtime_status", status="degraded") == 1


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (None, "unavailable"),
        ({"plan_type": "pro"}, "bad_shape"),
        ("not an object", "bad_shape"),
        ("huge", "bad_shape"),
    ],
)
def test_usage_that_is_missing_or_does_not_fit_leaves_the_sessions_untouched(
    world: SimulatedNotte,
    exporter: ExporterUnderTest,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    kind: str,
) -> None:
    if answer == "huge":
        huge = world.usage()
        huge["balance_amount"] = 10**400
        answer = huge
    world.set_usage(answer)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert exporter.full_cycle()
    samples = exporter.metrics()
    assert not [name for name, _ in samples if name.startswith("notte_usage")]
    bad = value(samples, "notte_exporter_api_bad_data_total", endpoint="get_usage", kind=kind)
    assert bad == 1  # asked once: the usage interval is five minutes
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_session_status", session_id="s1", status="active") == 1
    assert value(samples, "notte_function_runs_active", function_id="f1") == 0
    warnings = [r for r in log_lines(caplog.records) if "usage" in r.getMessage()]
    assert len(warnings) == 1
    text = exporter.get("/metrics").text + caplog.text
    assert API_KEY not in text


def test_no_functions_and_no_usage_ask_nothing_of_the_account(
    api: SimulatorServer, world: SimulatedNotte, clock: Clock
) -> None:
    settings = make_settings(api.url, functions=False, usage=False)
    exporter = ExporterUnderTest(settings, clock=clock, monotonic=clock)
    exporter.start_http()
    try:
        assert exporter.full_cycle()
        samples = exporter.metrics()
    finally:
        exporter.close()
    assert {r.endpoint for r in world.request_log()} <= {"list_sessions", "get_session"}
    assert not [n for n, _ in samples if n.startswith(("notte_function", "notte_usage"))]


def test_the_sessions_request_economy_is_the_same_with_the_account_on(
    api: SimulatorServer, world: SimulatedNotte, clock: Clock
) -> None:
    def session_requests(**overrides: object) -> list[str]:
        world.reset_requests()
        exporter = ExporterUnderTest(
            make_settings(api.url, **overrides), clock=clock, monotonic=clock
        )
        try:
            for _ in range(3):
                assert exporter.full_cycle()
                clock.now += 30
        finally:
            exporter.close()
        return [r.path for r in world.request_log() if r.endpoint not in ACCOUNT_ENDPOINTS]

    assert session_requests() == session_requests(functions=False, usage=False)


def test_the_account_waits_out_a_failed_sessions_cycle(
    world: SimulatedNotte, exporter: ExporterUnderTest
) -> None:
    from exporter.simulator import Fault

    world.inject(Fault(endpoint="list_sessions", status=401))
    assert not exporter.full_cycle()
    assert not [r for r in world.request_log() if r.endpoint in ACCOUNT_ENDPOINTS]


def test_a_failing_runs_listing_keeps_what_is_known(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    from exporter.simulator import Fault

    world.start_run("f1", seconds=1000)
    assert exporter.full_cycle()
    world.inject(Fault(endpoint=LIST_FUNCTION_RUNS, status=500))
    clock.now += 15
    assert exporter.full_cycle()  # the sessions' part succeeded: the cycle did
    samples = exporter.metrics()
    assert value(samples, "notte_function_runs_active", function_id="f1") == 1
    assert value(samples, "notte_up") == 1
