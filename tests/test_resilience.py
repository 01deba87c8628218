"""The exporter keeps serving through API faults: fault injection against the simulator.

Every test drives a real exporter over real HTTP on 127.0.0.1 and asserts what a
user sees: `/metrics`, `/readyz`, the log, and the requests the fake API received.
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import logging
import random
import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.app import build_app
from exporter.metrics.selfmetrics import SelfMetrics, create_self_metrics
from exporter.notte.apikey import ApiKeySource
from exporter.notte.client import NotteClient, RetryPolicy
from exporter.polling.configured import ConfiguredIds
from exporter.polling.poller import Poller, PollOptions
from exporter.polling.snapshot import SnapshotStore
from exporter.simulator import Fault, RequestRecord, SimulatedNotte, SimulatorServer
from tests.harness import (
    API_KEY,
    Clock,
    ExporterUnderTest,
    exporter_for,
    iso,
    log_lines,
    make_settings,
    parse_samples,
    value,
    wait_until,
)
from tests.process import ExporterProcess

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


def active_list_requests(world: SimulatedNotte) -> list[RequestRecord]:
    """Requests for the active list (the sweep lists `only_active=false` besides)."""
    return [
        r
        for r in world.request_log()
        if r.endpoint == "list_sessions" and r.query.get("only_active") == "true"
    ]


def polls(exporter: ExporterUnderTest, result: str) -> float:
    return value(exporter.metrics(), "notte_exporter_polls_total", result=result) or 0.0


# --- timeouts and the cycle's deadline --------------------------------------------------------


class RequestPacedMonotonic:
    """Monotonic time that moves `step` seconds each time the exporter finishes a request
    to the API (its own request counter says so), however long the request really took:
    the test, not the machine's load, decides how many requests fit before a deadline."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.metrics: SelfMetrics | None = None  # the exporter's, once it is built

    def __call__(self) -> float:
        return 5000.0 + self.step * (0 if self.metrics is None else self.finished())

    def finished(self) -> float:
        assert self.metrics is not None
        families = self.metrics.api_requests.collect()
        return sum(s.value for f in families for s in f.samples if s.name.endswith("_total"))


class FixedDelay(RetryPolicy):
    """Retries after a known delay, so a test can place the retry in the cycle."""

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.base_delay


@contextmanager
def paced_exporter(url: str, **settings: Any) -> Iterator[ExporterUnderTest]:
    """An exporter with a 10 s poll interval (a 9 s cycle deadline) whose clock moves 3.5 s
    a request: the deadline passes after three requests. Ten attempts, 10 ms apart, are
    allowed, so only the deadline stops the retries."""
    paced = RequestPacedMonotonic(step=3.5)
    exporter = ExporterUnderTest(
        make_settings(url, poll_interval=10, **settings),
        monotonic=paced,
        retry=FixedDelay(attempts=10, base_delay=0.01),
    )
    paced.metrics = exporter.app.metrics
    exporter.start_http()
    try:
        yield exporter
    finally:
        exporter.close()


def test_a_hanging_api_is_cut_by_the_request_timeout_until_the_deadline_and_a_later_cycle_works(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("a1")
    with paced_exporter(api.url, request_timeout=0.2) as exporter:
        assert exporter.cycle()
        world.inject(Fault(hang=60))

        assert not exporter.cycle(timeout=10)

        samples = exporter.metrics()
        assert value(samples, "notte_up") == 0
        # Three requests, each cut by the 0.2 s request timeout (were one left to hang, the
        # cycle's own cut-off would end it: one request), then the deadline had passed.
        hung = value(
            samples, "notte_exporter_api_requests_total", endpoint="list_sessions", code="error"
        )
        assert hung == 3
        assert world.requests_total() == 3 + 2  # after the first cycle's list and sweep
        assert value(samples, "notte_session_status", session_id="a1", status="active") == 1

        world.clear_faults()
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_up") == 1


def test_cycles_keep_their_schedule_and_never_pile_up_while_the_api_hangs(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world.add_session("a1")
    world.inject(Fault(hang=60))
    # One attempt a cycle, cut by the request timeout: a cycle ends ~0.2 s before the next
    # is due. Retries would run it to its cut-off, 15 ms before (5% of 0.3 s): too close
    # for a busy machine, whose scheduler then skips a run. The deadline has its tests.
    exporter = ExporterUnderTest(
        make_settings(api.url, poll_interval=0.3, request_timeout=0.1),
        retry=RetryPolicy(attempts=1),
    )
    exporter.serve()
    try:
        wait_until(lambda: polls(exporter, "failure") >= 1)
        first, started = polls(exporter, "failure"), time.monotonic()
        wait_until(lambda: polls(exporter, "failure") >= first + 6, timeout=8)
        elapsed = time.monotonic() - started
        scrape_started = time.monotonic()
        assert exporter.get("/metrics").status_code == 200
        scrape_time = time.monotonic() - scrape_started
    finally:
        exporter.close()

    # The scheduler runs on real time (no clock to inject), and its cadence is what is
    # checked here. Six cycles due every 0.3 s take about 1.8 s: fewer than 1.2 s would
    # mean cycles stacked up (a lower bound no load can break); the upper bound leaves a
    # busy machine 2 s of slack, and the scheduler logging nothing (below) shows that no
    # run was skipped or found another still running.
    assert 1.2 <= elapsed <= 4.0
    # The scrape path never waits on the API, which hangs for a minute here: a second
    # is generous for a loaded machine and far below what a wait would cost.
    assert scrape_time < 1.0
    problems = log_lines(caplog.records)
    assert [r.getMessage() for r in problems if r.name.startswith("apscheduler")] == []
    failed = [r for r in problems if "poll cycle failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(endpoint="list_sessions", status=500, count=2), "500"),
        (Fault(endpoint="list_sessions", status=503, count=1), "503"),
        (Fault(endpoint="list_sessions", status=429, count=1), "429"),
        (Fault(endpoint="list_sessions", hang=60, count=1), "error"),
    ],
    ids=["500", "503", "429-without-retry-after", "timeout"],
)
def test_transient_failures_are_retried_within_the_cycle(
    world: SimulatedNotte, api: SimulatorServer, fault: Fault, code: str
) -> None:
    world.add_session("a1")
    world.inject(fault)
    # A second of timeout: the hang is cut by it, and a busy machine's retry is not.
    with exporter_for(api.url, poll_interval=10, request_timeout=1.0) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()
    failures = fault.count or 0
    assert len(active_list_requests(world)) == failures + 1
    assert value(samples, "notte_exporter_api_retries_total", endpoint="list_sessions") == failures
    assert (
        value(samples, "notte_exporter_api_requests_total", endpoint="list_sessions", code=code)
        == failures
    )
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_session_status", session_id="a1", status="active") == 1


def test_a_client_error_is_not_retried(world: SimulatedNotte, api: SimulatorServer) -> None:
    world.inject(Fault(endpoint="list_sessions", status=422))
    with exporter_for(api.url, poll_interval=10) as exporter:
        assert not exporter.cycle()
        assert not exporter.cycle()
    assert world.requests_total() == 2


def test_retries_stop_at_the_cycle_deadline(world: SimulatedNotte, api: SimulatorServer) -> None:
    world.inject(Fault(status=500))
    with paced_exporter(api.url) as exporter:
        assert not exporter.cycle()
        samples = exporter.metrics()
    # Ten attempts were allowed; the deadline passed after the third answer.
    assert world.requests_total() == 3
    assert value(samples, "notte_exporter_api_retries_total", endpoint="list_sessions") == 2
    assert value(samples, "notte_up") == 0


@pytest.mark.parametrize(
    ("first", "said"),
    [
        (Fault(status=503, count=1), "HTTP 503"),
        (Fault(status=429, retry_after="0.3", count=1), "429"),
    ],
    ids=["503", "429"],
)
def test_a_retry_cut_short_by_the_deadline_reports_what_caused_it(
    world: SimulatedNotte,
    api: SimulatorServer,
    caplog: pytest.LogCaptureFixture,
    first: Fault,
    said: str,
) -> None:
    caplog.set_level(logging.INFO)
    world.inject(first)
    world.inject(Fault(hang=30))  # the retry hangs until its deadline cuts it
    interval = 2.0
    exporter = ExporterUnderTest(
        make_settings(api.url, poll_interval=interval, request_timeout=5),
        retry=FixedDelay(attempts=3, base_delay=0.1),
    )
    exporter.start_http()
    try:
        # The retry outlives the first cycle (which has no answer), and its deadline cuts
        # it within the next one: that cycle reports what caused the retry. The next cycle
        # starts one interval after the first, as the scheduler starts it: started back to
        # back, its wait would end a few milliseconds after the cut, a race a slow machine
        # loses. One interval later it ends 0.1 interval (200 ms) after the cut.
        started = time.monotonic()
        assert not exporter.cycle()
        time.sleep(max(0.0, started + interval - time.monotonic()))
        assert not exporter.cycle()
        samples = exporter.metrics()
    finally:
        exporter.close()
    assert world.requests_total() == 2
    assert value(samples, "notte_exporter_api_retries_total", endpoint="list_sessions") == 1
    cut = value(samples, "notte_exporter_api_requests_total", endpoint="list_sessions", code="cut")
    assert cut == 1
    failed = [r.getMessage() for r in log_lines(caplog.records) if "poll cycle" in r.getMessage()]
    assert len(failed) == 2
    assert "no answer" in failed[0]
    assert said in failed[1]
    assert "timed out" not in failed[1]


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=4.0)
    rng = random.Random(11)
    for attempt in range(6):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # the whole range is used...
        assert min(delays) < ceiling * 0.1  # ...from zero: full jitter
        assert len(set(delays)) == len(delays)


# --- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["seconds", "http-date"])
def test_retry_after_pauses_every_request_across_cycles(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture, retry_after: str
) -> None:
    caplog.set_level(logging.INFO)
    world.add_session("a1")
    monotonic, wall = Clock(5000.0), Clock(1_800_000_000.0)
    settings = make_settings(api.url, poll_interval=1, session_ids=["a1"])
    exporter = ExporterUnderTest(settings, monotonic=monotonic, clock=wall)
    exporter.start_http()
    try:
        assert exporter.cycle()
        world.reset_requests()
        # A pause of 2 s, either way; the cycle that resumes has 0.3 s of it left.
        if retry_after == "seconds":
            header = "2"
        else:  # an HTTP date, read against the exporter's wall clock
            when = datetime.fromtimestamp(wall.now + 2, UTC)
            header = email.utils.format_datetime(when, usegmt=True)
        resume_at = 5001.7
        world.inject(Fault(status=429, retry_after=header, count=1))

        assert not exporter.cycle()
        assert world.requests_total() == 1

        # A cycle may wait 0.9 s at most (its deadline, in a 1 s interval): one that starts
        # with more of the pause left fails at once, and sends nothing.
        for monotonic.now in (5000.5, 5001.0):
            assert not exporter.cycle()
            assert world.requests_total() == 1, "a request went out during the pause"
            samples = exporter.metrics()
            assert value(samples, "notte_up") == 0
            assert value(samples, "notte_session_status", session_id="a1", status="active") == 1

        # One that starts with less waits the rest out (real time: a lower bound, which
        # no load can break), then asks.
        monotonic.now = resume_at
        started = time.monotonic()
        assert exporter.cycle()
        assert time.monotonic() - started >= 0.25
        assert world.requests_total() > 1
        assert value(exporter.metrics(), "notte_up") == 1
    finally:
        exporter.close()
    # The pause counted down through failing cycles: one line when they began.
    lines = [r.getMessage() for r in log_lines(caplog.records)]
    assert len(lines) == 1, lines
    assert "429" in lines[0] or "Retry-After" in lines[0]


# --- 401 and 403 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "discovery"), [(401, True), (403, False)], ids=["401-listing", "403-fetching"]
)
def test_a_refused_key_means_down_one_log_line_one_request_a_cycle_and_recovery(
    world: SimulatedNotte,
    api: SimulatorServer,
    caplog: pytest.LogCaptureFixture,
    code: int,
    discovery: bool,
) -> None:
    caplog.set_level(logging.INFO)
    configured = ["c1", "c2", "c3", "c4"]
    for session_id in configured:
        world.add_session(session_id)
    with exporter_for(api.url, session_ids=configured, discovery=discovery) as exporter:
        assert exporter.cycle()
        if code == 401:
            api.api_key = "sk-rotated-elsewhere"
        else:
            world.inject(Fault(status=403))
        caplog.clear()
        # A healthy API gets a full wave at once (a probe would slow a merely slow API):
        # the first refusal costs at most one request a slot, and every later cycle one.
        world.reset_requests()
        assert not exporter.cycle()
        assert world.requests_total() <= min(len(configured), exporter.settings.max_concurrency)
        for _ in range(3):
            world.reset_requests()
            assert not exporter.cycle()
            assert world.requests_total() == 1, "a refused key must cost one request a cycle"
        samples = exporter.metrics()
        assert value(samples, "notte_up") == 0
        assert value(samples, "notte_session_status", session_id="c1", status="active") == 1
        assert exporter.get("/readyz").status_code == 200
        lines = [r.getMessage() for r in log_lines(caplog.records)]
        assert len(lines) == 1, lines
        assert str(code) in lines[0]
        assert "API key" in lines[0]

        api.api_key = API_KEY
        world.clear_faults()
        caplog.clear()
        assert exporter.cycle()
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_up") == 1
    recovered = [r.getMessage() for r in log_lines(caplog.records, level=logging.INFO)]
    assert len(recovered) == 1, recovered
    assert "succeeded" in recovered[0]


def test_a_fixed_key_file_is_picked_up_without_a_restart(
    world: SimulatedNotte, api: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world.add_session("a1")
    key_file = tmp_path / "notte-key"
    key_file.write_text("sk-the-old-revoked-key\n")
    exporter = ExporterUnderTest(
        make_settings(api.url, api_key=None, api_key_file=key_file),
        api_key=ApiKeySource(path=key_file),
    )
    exporter.start_http()
    try:
        for _ in range(3):
            world.reset_requests()
            assert not exporter.cycle()
            assert world.requests_total() == 1
        assert exporter.get("/readyz").status_code == 503
        assert value(exporter.metrics(), "notte_up") == 0
        refused = [r.getMessage() for r in log_lines(caplog.records)]
        assert len(refused) == 1, refused
        assert "401" in refused[0]

        key_file.write_text(API_KEY + "\n")
        world.reset_requests()
        assert exporter.cycle()
        samples = exporter.metrics()
    finally:
        exporter.close()
    assert all(record.authorised for record in world.request_log())
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_session_status", session_id="a1", status="active") == 1


# --- 404 ------------------------------------------------------------------------------------


def test_sessions_answering_404_are_dropped_and_counted(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("listed")
    world.add_session("configured")
    with exporter_for(api.url, session_ids=["configured"]) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_session_status", session_id="listed", status="active") == 1
        assert value(samples, "notte_session_status", session_id="configured", status="active")
        world.delete_session("listed")
        world.delete_session("configured")
        assert exporter.cycle()
        assert exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_session_status", session_id="listed", status="active") is None
    assert value(samples, "notte_session_status", session_id="configured", status="active") is None
    assert value(samples, "notte_exporter_sessions_dropped_total", reason="not_found") == 2
    assert value(samples, "notte_up") == 1
    paths = [r.path for r in world.request_log() if r.endpoint == "get_session"]
    # Each was asked once, when it left the active list, and never again.
    assert paths.count("/sessions/listed") == 1
    assert paths.count("/sessions/configured") == 1


# --- bad data -------------------------------------------------------------------------------


def test_bad_list_items_are_skipped_logged_and_counted_and_the_rest_lands(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world.add_session("good", network_request_bytes=5)
    world.add_session("big", network_request_bytes=2**63 - 1, max_duration_minutes=1e6)
    world.add_session("odd", status="paused")
    bad_items = [
        {"session_id": "huge", "status": "active", "network_request_bytes": 10**30},
        {"session_id": "long", "status": "active", "max_duration_minutes": 1e9},
        {"session_id": "negative", "status": "active", "network_request_bytes": -1},
        {"session_id": "wrong-type", "status": "active", "network_response_bytes": "lots"},
        {"session_id": "bad-date", "status": "active", "created_at": "yesterday"},
        {"status": "active"},
        {"session_id": 7, "status": "active"},
        "not an object",
        None,
    ]
    for item in bad_items:
        world.add_raw_list_item(item)
    with exporter_for(api.url, session_ids=["odd"], sweep=False) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()

    def bad(endpoint: str, kind: str) -> float | None:
        return value(samples, "notte_exporter_api_bad_data_total", endpoint=endpoint, kind=kind)

    assert bad("list_sessions", "invalid_item") == len(bad_items)
    assert bad("get_session", "unknown_status") == 1
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_session_network_request_bytes_total", session_id="good") == 5
    assert value(samples, "notte_session_network_request_bytes_total", session_id="big") == 2**63
    assert value(samples, "notte_session_max_duration_seconds", session_id="big") == 6e7
    assert value(samples, "notte_session_status", session_id="odd", status="paused") == 1
    for item in bad_items[:5]:
        assert isinstance(item, dict)
        assert (
            value(samples, "notte_session_status", session_id=item["session_id"], status="active")
            is None
        )
    skipped = [r.getMessage() for r in log_lines(caplog.records) if "skipping" in r.getMessage()]
    assert len(skipped) == len(bad_items)
    for field in ("network_request_bytes", "max_duration_minutes"):
        assert any(field in line for line in skipped)


@pytest.mark.parametrize(
    ("endpoint", "body", "kind"),
    [
        ("list_sessions", b"<html>Bad Gateway</html>", "not_json"),
        ("get_session", b"{not json", "not_json"),
        ("list_sessions", b'{"detail": "weird"}', "bad_shape"),
    ],
    ids=["list-not-json", "get-not-json", "list-bad-shape"],
)
def test_an_unusable_body_fails_the_cycle_but_the_rest_still_lands(
    world: SimulatedNotte, api: SimulatorServer, endpoint: str, body: bytes, kind: str
) -> None:
    world.add_session("listed", steps=[])
    world.add_session("configured", status="paused", steps=[])
    with exporter_for(api.url, session_ids=["configured"]) as exporter:
        assert exporter.cycle()
        world.update_session("listed", steps=[1, 2])
        world.update_session("configured", steps=[1, 2, 3])
        world.inject(Fault(endpoint=endpoint, body=body, count=1))
        assert not exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_exporter_api_bad_data_total", endpoint=endpoint, kind=kind) == 1
    assert value(samples, "notte_up") == 0
    assert value(samples, "notte_exporter_polls_total", result="failure") == 1
    # What the bad body did not touch landed; what it touched keeps its last values.
    listed_ok, configured_ok = endpoint == "get_session", endpoint == "list_sessions"
    assert value(samples, "notte_session_steps", session_id="listed") == (2 if listed_ok else 0)
    assert value(samples, "notte_session_steps", session_id="configured") == (
        3 if configured_ok else 0
    )
    assert value(samples, "notte_session_status", session_id="listed", status="active") == 1


def test_an_invalid_session_answer_is_skipped_and_its_last_values_stay(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("c1", status="paused", steps=[1])
    with exporter_for(api.url, session_ids=["c1"], discovery=False) as exporter:
        assert exporter.cycle()
        world.update_session("c1", network_request_bytes=-5, steps=[1, 2])
        assert exporter.cycle()
        samples = exporter.metrics()
    invalid = value(
        samples, "notte_exporter_api_bad_data_total", endpoint="get_session", kind="invalid_item"
    )
    assert invalid == 1
    assert value(samples, "notte_session_steps", session_id="c1") == 1
    assert value(samples, "notte_up") == 1


# --- a failed cycle keeps the last known values -------------------------------------------------


def test_a_failed_cycle_keeps_the_last_values_and_readiness_tells_the_truth(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session(
        "a1",
        created_at=iso(NOW - 60),
        last_accessed_at=iso(NOW - 10),
        idle_timeout_minutes=5,
        network_request_bytes=4321,
    )
    clock = Clock(NOW)
    # No retries: a retry's jittered delay could carry the 500 past the first cycle's
    # deadline into the next (a race that slow machines lose); this test is about what a
    # failed cycle keeps, not about retries.
    exporter = ExporterUnderTest(
        make_settings(api.url, poll_interval=0.5), clock=clock, retry=RetryPolicy(attempts=1)
    )
    exporter.start_http()
    try:
        world.inject(Fault(status=500))
        assert not exporter.cycle()
        assert exporter.get("/readyz").status_code == 503
        samples = exporter.metrics()
        assert value(samples, "notte_up") == 0
        assert value(samples, "notte_exporter_last_poll_success_timestamp_seconds") == 0

        world.clear_faults()
        assert exporter.cycle()
        assert exporter.get("/readyz").status_code == 200
        before = exporter.metrics()
        assert value(before, "notte_session_idle_remaining_seconds", session_id="a1") == 290

        world.inject(Fault(status=502))
        clock.now = NOW + 30
        assert not exporter.cycle()
        after = exporter.metrics()
        assert exporter.get("/readyz").status_code == 200
    finally:
        exporter.close()
    assert value(after, "notte_up") == 0
    assert value(after, "notte_session_status", session_id="a1", status="active") == 1
    assert value(after, "notte_session_network_request_bytes_total", session_id="a1") == 4321
    assert value(after, "notte_session_idle_remaining_seconds", session_id="a1") == 260
    assert value(after, "notte_exporter_last_poll_success_timestamp_seconds") == NOW
    assert value(after, "notte_sessions", status="active") == 1


# --- memory and logs through a long outage --------------------------------------------------------


def test_memory_and_logs_stay_flat_through_hundreds_of_failing_cycles(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    world.populate(active=20)
    # (fault, cycles), 300 cycles in all; a hang costs a whole (short) cycle, the rest
    # a few milliseconds, and a Retry-After pause makes the cycles that follow fail at
    # once. Empty bodies: the fake writes a body apart from its headers, which costs
    # a delayed ACK (~40 ms) on loopback, too close to these timeouts.
    outages = [
        (Fault(status=500, body=b""), 60),
        (Fault(hang=0.5), 6),
        (Fault(body=b""), 80),  # 200 with a body that is not JSON
        (Fault(status=401, body=b""), 80),
        (Fault(status=429, retry_after="0.3", body=b""), 74),
    ]
    # Retries still happen, but without the production backoff's sleeps: the point
    # here is hundreds of failing cycles, quickly.
    exporter = ExporterUnderTest(
        make_settings(api.url, poll_interval=0.2, request_timeout=0.1),
        retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001),
    )
    exporter.start_http()

    def outage(share: float) -> None:
        for fault, cycles in outages:
            world.clear_faults()
            world.inject(fault)
            for _ in range(max(1, int(cycles * share))):
                assert not exporter.cycle()
            world.reset_requests()  # the fake's request log is not the exporter's memory
            paused_until = time.time() + float(fault.retry_after or 0)
            wait_until(lambda: time.time() >= paused_until, timeout=5)  # noqa: B023
        # Not gzip: a cached gzip render holds a 256 KiB compressor, and a render thread
        # replacing one while memory was measured showed as 290 KB grown, in both passes.
        plain = {"Accept-Encoding": "identity"}
        assert exporter.get("/metrics", headers=plain).status_code == 200

    def growth() -> int:
        """Bytes still allocated after one whole outage that were not before it."""
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        outage(1.0)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before

    tracemalloc.start()
    try:
        assert exporter.cycle()
        outage(0.1)  # warm up: every code path, label, pooled connection and cached render
        caplog.clear()
        grown = [growth(), growth()]
        samples = exporter.metrics()
    finally:
        tracemalloc.stop()
        exporter.close()
    failures = value(samples, "notte_exporter_polls_total", result="failure")
    assert failures is not None
    assert failures >= 2 * sum(cycles for _, cycles in outages)
    # A leak grows in both passes; a one-off allocation (a cache filled, a buffer
    # of some thread the process shares with the rest of the suite) in one only.
    assert min(grown) < 128 * 1024, f"{grown} bytes more, each pass of 300 failing cycles"
    # One line per change of failure (five here), not one per cycle or request. A
    # machine too busy for these tiny timeouts sees a hang now and then where
    # there was none, and logs that change too: some more lines, never hundreds.
    lines = [r.getMessage() for r in log_lines(caplog.records, level=logging.INFO)]
    assert 1 <= len(lines) <= 2 * 30, lines  # two passes


# --- shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_exporter_within_5_seconds_while_a_request_hangs(
    world: SimulatedNotte, api: SimulatorServer, signum: int
) -> None:
    world.inject(Fault(hang=120))
    with ExporterProcess(
        "--poll-interval", "60", "--request-timeout", "50", "--session-id", "s1",
        env={"NOTTE_API_URL": api.url, "NOTTE_API_KEY": API_KEY},
    ) as process:  # fmt: skip
        process.wait_listening()
        wait_until(lambda: world.requests_total() >= 1)
        started = time.monotonic()
        returncode = process.stop(signum, timeout=10)
        elapsed = time.monotonic() - started
        stderr = process.stderr
    assert returncode == 0, stderr
    # The contract's bound, in real time: what a process manager waits before SIGKILL.
    assert elapsed < 5, stderr
    assert "Traceback" not in stderr
    assert "stopping" in stderr


# --- a slow API: deferral, never a thrown-away cycle ------------------------------------------


def test_thirty_sessions_behind_a_slow_api_are_all_exported_in_turn_with_notte_up_1(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    configured = [f"c{index:02d}" for index in range(30)]
    for session_id in configured:
        world.add_session(session_id)
    world.inject(Fault(endpoint="get_session", hang=0.4))
    settings = {"discovery": False, "poll_interval": 1, "max_concurrency": 2}
    with exporter_for(api.url, session_ids=configured, **settings) as exporter:
        cycles = 0
        while cycles < 20:
            cycles += 1
            assert exporter.cycle()
            samples = exporter.metrics()
            assert value(samples, "notte_up") == 1
            if value(samples, "notte_sessions", status="active") == len(configured):
                break
    assert value(samples, "notte_sessions", status="active") == len(configured)
    # About three fetches fit in a cycle (the first goes alone, in case the key is refused):
    # ten cycles, and some slack for a busy machine.
    assert cycles <= 15, f"every session exported after {cycles} cycles"
    assert value(samples, "notte_exporter_polls_total", result="failure") == 0
    assert (value(samples, "notte_exporter_deferred_sessions") or 0) > 0
    lines = [r.getMessage() for r in log_lines(caplog.records)]
    assert len(lines) == 1, lines
    assert "deferred" in lines[0]


class SteppingMonotonic(RequestPacedMonotonic):
    """Monotonic time that jumps past any cycle's start-by time after every `every`
    answers the exporter got, so a test decides how many fetches fit in a cycle."""

    def __init__(self, every: int) -> None:
        super().__init__(step=100.0)
        self.every = every
        self.steps_left = 1_000_000

    def __call__(self) -> float:
        steps = 0 if self.metrics is None else int(self.finished()) // self.every
        return 5000.0 + self.step * min(steps, self.steps_left)


def test_deferred_sessions_are_asked_first_next_cycle_and_deferral_logs_its_start_and_end(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    configured = [f"c{index}" for index in range(10)]
    for session_id in configured:
        world.add_session(session_id)
    monotonic = SteppingMonotonic(every=3)
    settings = make_settings(
        api.url, session_ids=configured, discovery=False, poll_interval=10, max_concurrency=1
    )
    app = build_app(
        settings, ApiKeySource(key=SecretStr(API_KEY)), process_metrics=False, monotonic=monotonic
    )
    monotonic.metrics = app.metrics
    loop = asyncio.new_event_loop()

    def cycle() -> tuple[list[str], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        world.reset_requests()
        assert loop.run_until_complete(app.poller.run_cycle())
        asked = [r.path.removeprefix("/sessions/") for r in world.request_log()]
        return asked, parse_samples(app.exposition.body(openmetrics=False, gzip=False).decode())

    try:
        asked, samples = cycle()
        assert asked == ["c0", "c1", "c2"]
        assert value(samples, "notte_exporter_deferred_sessions") == 7
        assert value(samples, "notte_up") == 1
        assert value(samples, "notte_sessions", status="active") == 3
        assert cycle()[0] == ["c3", "c4", "c5"]  # the deferred ones first
        assert cycle()[0] == ["c6", "c7", "c8"]
        asked, samples = cycle()
        assert asked == ["c9", "c0", "c1"]  # then, in turn, the ones asked longest ago
        assert value(samples, "notte_sessions", status="active") == 10
        monotonic.steps_left = 0  # the API is fast again: the time no longer jumps
        asked, samples = cycle()
        assert asked == ["c2", "c3", "c4", "c5", "c6", "c7", "c8", "c0", "c1", "c9"]
        assert value(samples, "notte_exporter_deferred_sessions") == 0
        assert value(samples, "notte_exporter_polls_total", result="failure") == 0
    finally:
        loop.run_until_complete(app.aclose())
        loop.close()
    lines = [
        r for r in log_lines(caplog.records, level=logging.INFO) if "deferred" in r.getMessage()
    ]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO], lines


def test_a_cycle_cut_by_its_deadline_keeps_what_it_fetched_but_one_with_no_answer_fails(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("c1", steps=[])
    world.add_session("c2", steps=[])
    settings = {"session_ids": ["c1", "c2"], "discovery": False, "max_concurrency": 1}
    with exporter_for(api.url, poll_interval=1, request_timeout=5, **settings) as exporter:
        assert exporter.cycle()
        world.update_session("c1", steps=[1])
        world.inject(Fault(endpoint="get_session", count=1))  # c1: answered at once
        world.inject(Fault(endpoint="get_session", hang=30))  # c2: cut by the deadline
        assert exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_session_steps", session_id="c1") == 1
        assert value(samples, "notte_exporter_deferred_sessions") == 1
        assert value(samples, "notte_up") == 1
        # Nothing answers at all: the API is down, not slow.
        assert not exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_up") == 0
    assert value(samples, "notte_session_steps", session_id="c2") == 0


# --- any exception fails the cycle, never the next one -----------------------------------------


def test_an_exception_outside_the_clients_errors_fails_the_cycle_and_the_next_one_works(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world.add_session("a1")
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads: RecursionError
    with exporter_for(api.url) as exporter:
        assert exporter.cycle()
        world.inject(Fault(endpoint="list_sessions", body=deep, count=1))
        caplog.clear()
        assert not exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_up") == 0
        assert value(samples, "notte_exporter_polls_total", result="failure") == 1
        assert value(samples, "notte_session_status", session_id="a1", status="active") == 1
        failed = [r.getMessage() for r in log_lines(caplog.records)]
        assert len(failed) == 1, failed
        assert "poll cycle failed" in failed[0]
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_up") == 1


class BrokenOnce(ConfiguredIds):
    """Configured IDs whose first read raises something no code expects."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.calls = 0

    def current(self) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("something no one expected")
        return super().current()


def test_any_exception_in_a_cycle_is_a_failed_cycle_logged_with_its_cause(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world.add_session("c1")
    settings = make_settings(api.url, discovery=False)
    metrics = create_self_metrics(process_metrics=False)
    client = NotteClient(
        base_url=api.url,
        api_key=ApiKeySource(key=SecretStr(API_KEY)),
        request_timeout=2,
        max_concurrency=2,
        metrics=metrics,
    )
    store = SnapshotStore()
    poller = Poller(
        options=PollOptions.from_settings(settings),
        client=client,
        configured=BrokenOnce(["c1"]),
        metrics=metrics,
        store=store,
    )
    loop = asyncio.new_event_loop()
    try:
        assert not loop.run_until_complete(poller.run_cycle())
        assert metrics.registry.get_sample_value("notte_up") == 0
        assert metrics.registry.get_sample_value(
            "notte_exporter_polls_total", {"result": "failure"}
        )
        assert loop.run_until_complete(poller.run_cycle())
        assert metrics.registry.get_sample_value("notte_up") == 1
        assert [s.session_id for s in store.current.sessions] == ["c1"]
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
    lines = [r.getMessage() for r in log_lines(caplog.records)]
    assert lines == ["poll cycle failed: RuntimeError: something no one expected"]
