"""The sweep: the paging plan on fake pages, then the exporter against the simulator.

The unit tests drive `SweepRun` over an in-memory listing (a list of
`(session_id, created_at)`), the way the poller drives it over HTTP. The rest
run a real exporter over real HTTP against the simulator, with one clock for
the world and the exporter, and assert on `/metrics` and on the requests the
fake API received.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from exporter.notte.client import RetryPolicy
from exporter.notte.model import Session, parse_session
from exporter.polling.sweep import SweepState, classify, settle, start_sweep
from exporter.simulator import Fault, SimulatedNotte, SimulatorServer
from tests.harness import (
    API_KEY,
    Clock,
    ExporterUnderTest,
    iso,
    log_lines,
    make_settings,
    parse_samples,
    run_cli,
    value,
)

NOW = 1_800_000_000.0
SLACK = 5.0

# --- order detection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "order"),
    [
        ([], "unknown"),
        ([NOW], "unknown"),
        ([NOW, NOW], "unknown"),  # a tie says nothing
        ([NOW, NOW + 3], "unknown"),  # within the slack: both orders fit
        ([NOW + 10, NOW], "newest"),
        ([NOW, NOW + 10], "oldest"),
        ([NOW + 100, NOW + 103, NOW + 60], "newest"),  # commit-order jitter within the slack
        ([NOW, NOW - 3, NOW + 60], "oldest"),
        ([NOW, NOW + 10, NOW + 2], "unsorted"),
        ([NOW + 50, NOW, NOW + 100], "unsorted"),
    ],
)
def test_classify_learns_the_order_from_created_at(created: list[float], order: str) -> None:
    assert classify(created, SLACK) == order


def test_new_evidence_settles_the_order_and_a_contradiction_means_none() -> None:
    assert settle("unknown", "newest") == "newest"
    assert settle("newest", "unknown") == "newest"
    assert settle("oldest", "oldest") == "oldest"
    assert settle("newest", "oldest") == "unsorted"
    assert settle("unsorted", "unknown") == "unsorted"


# --- the paging plan on fake pages -------------------------------------------------------------


@dataclass
class Listing:
    """A fake `only_active=false` listing, in the order the API would give it."""

    items: list[tuple[str, float]]
    page_size: int = 3
    has_next: bool = True  # False: a bare JSON list, which says nothing of more pages

    def page(self, number: int) -> list[tuple[str, float]]:
        start = (number - 1) * self.page_size
        return self.items[start : start + self.page_size]


@dataclass
class Swept:
    state: SweepState
    found: list[str]
    pages: list[int]
    capped: bool


def sweep(state: SweepState, listing: Listing, max_pages: int = 100) -> Swept:
    run = start_sweep(state, page_size=listing.page_size, max_pages=max_pages, slack=SLACK)
    pages = []
    while run.next_page is not None:
        number = run.next_page
        pages.append(number)
        items = listing.page(number)
        more = number * listing.page_size < len(listing.items) if listing.has_next else None
        sessions = [session(i, t) for i, t in items]
        run = run.read(number, sessions, item_count=len(items), has_next=more)
    state, found = run.finish()
    return Swept(state, sorted(s.session_id for s in found), pages, run.capped)


def session(session_id: str, created: float, status: str = "active") -> Session:
    return parse_session({"session_id": session_id, "status": status, "created_at": iso(created)})


def history(count: int, *, start: float = NOW, step: float = 60.0) -> list[tuple[str, float]]:
    """`count` sessions, oldest first, `step` seconds apart."""
    return [(f"old{i:03d}", start + i * step) for i in range(count)]


def newer(count: int, after: float, prefix: str = "new") -> list[tuple[str, float]]:
    return [(f"{prefix}{i:03d}", after + 60 * (i + 1)) for i in range(count)]


@pytest.mark.parametrize("has_next", [True, False], ids=["items", "bare-list"])
def test_newest_first_reads_down_to_the_last_sweep_and_a_quiet_cycle_costs_one_request(
    has_next: bool,
) -> None:
    old = history(10)
    first = sweep(SweepState(), Listing(old[::-1], has_next=has_next))
    assert (first.found, first.pages, first.state.order) == ([], [1], "newest")

    quiet = sweep(first.state, Listing(old[::-1], has_next=has_next))
    assert (quiet.found, quiet.pages) == ([], [1])

    fresh = newer(7, old[-1][1])
    after = sweep(quiet.state, Listing((old + fresh)[::-1], has_next=has_next))
    assert after.found == [i for i, _ in fresh]
    assert after.pages == [1, 2, 3]  # page 3 holds the first session the last sweep saw
    again = sweep(after.state, Listing((old + fresh)[::-1], has_next=has_next))
    assert (again.found, again.pages) == ([], [1])


def test_oldest_first_finds_the_last_page_once_then_reads_from_it() -> None:
    old = history(40)  # 14 pages of 3, the last holding one session
    first = sweep(SweepState(), Listing(old))
    assert first.found == []
    assert first.state.order == "oldest"
    assert first.pages == [1, 2, 4, 8, 16, 12, 14]  # gallop, then bisect: 2 x log2(14)
    assert first.state.tail == 14

    quiet = sweep(first.state, Listing(old))
    assert (quiet.found, quiet.pages) == ([], [14])

    fresh = newer(2, old[-1][1])
    after = sweep(quiet.state, Listing(old + fresh))
    assert after.found == ["new000", "new001"]
    assert after.pages == [14]  # full now, and has_next says it is the last
    bare = sweep(quiet.state, Listing(old + fresh, has_next=False))
    assert bare.pages == [14, 15]  # a bare list: one more page to be sure, never more
    quiet = sweep(after.state, Listing(old + fresh))
    assert (quiet.found, quiet.pages) == ([], [14])

    many = newer(10, fresh[-1][1], prefix="burst")
    burst = sweep(quiet.state, Listing(old + fresh + many))
    assert burst.found == [i for i, _ in many]
    assert burst.pages == [14, 15, 16, 17, 18]
    assert burst.state.tail == 18


def test_oldest_first_steps_back_when_the_listing_shrank() -> None:
    old = history(40)
    state = sweep(SweepState(), Listing(old)).state
    # The API forgets its 9 oldest sessions (three pages): the tail moved back.
    fresh = newer(4, old[-1][1])
    shrunk = sweep(state, Listing(old[9:] + fresh))
    assert shrunk.found == [i for i, _ in fresh]
    assert shrunk.pages == [14, 13, 12, 11]
    assert shrunk.state.tail == 12


def test_an_exact_last_page_is_found_by_bisection_or_by_has_next() -> None:
    old = history(36)  # exactly 12 full pages
    bare = sweep(SweepState(), Listing(old, has_next=False))
    assert bare.pages == [1, 2, 4, 8, 16, 12, 14, 13]
    assert bare.state.tail == 12
    told = sweep(SweepState(), Listing(old))
    assert told.pages == [1, 2, 4, 8, 16, 12]  # page 12 says has_next: false
    assert told.state.tail == 12


def test_a_listing_in_no_time_order_turns_the_sweep_off() -> None:
    shuffled = [history(12)[i] for i in (5, 0, 9, 3, 11, 1, 7, 2, 10, 4, 8, 6)]
    first = sweep(SweepState(), Listing(shuffled))
    assert first.state.order == "unsorted"
    assert not first.state.enabled
    assert first.pages == [1]
    assert start_sweep(first.state, page_size=3, max_pages=10).next_page is None


def test_a_known_order_contradicted_later_turns_the_sweep_off() -> None:
    old = history(10)
    state = sweep(SweepState(), Listing(old[::-1])).state
    assert state.order == "newest"
    fresh = newer(3, old[-1][1])
    after = sweep(state, Listing(old + fresh))  # now oldest first
    assert not after.state.enabled


def test_ties_within_the_slack_leave_the_order_unknown_and_every_page_is_read() -> None:
    crowd = [(f"c{i}", NOW + i * 0.1) for i in range(8)]  # eight sessions in a second
    first = sweep(SweepState(), Listing(crowd))
    assert first.state.order == "unknown"
    assert first.pages == [1, 2, 3]
    fresh = newer(2, NOW)
    after = sweep(first.state, Listing(crowd + fresh))
    assert after.found == ["new000", "new001"]
    assert after.state.order == "oldest"


def test_a_first_sweep_of_an_empty_listing_reports_everything_after_it() -> None:
    first = sweep(SweepState(), Listing([]))
    assert first.state.bearings
    assert first.pages == [1]
    fresh = newer(5, NOW)
    after = sweep(first.state, Listing(fresh[::-1]))
    assert after.found == [i for i, _ in fresh]


def test_a_session_committed_late_within_the_slack_is_found_once() -> None:
    old = history(4)
    state = sweep(SweepState(), Listing(old[::-1])).state
    mark = old[-1][1]
    late = [("late", mark - 3), ("too-late", mark - 30)]
    listing = Listing(sorted(old + late, key=lambda item: -item[1]))
    found = sweep(state, listing)
    assert found.found == ["late"]
    assert sweep(found.state, listing).found == []


def test_a_sweep_cut_short_reports_what_it_found_and_the_next_reads_back() -> None:
    old = history(10)
    state = sweep(SweepState(), Listing(old[::-1])).state
    fresh = newer(7, old[-1][1])
    listing = Listing((old + fresh)[::-1])
    run = start_sweep(state, page_size=3, max_pages=100, slack=SLACK)
    items = listing.page(1)
    run = run.read(1, [session(i, t) for i, t in items], item_count=3, has_next=True)
    assert run.next_page == 2  # ... and then the request fails
    cut, found = run.finish()
    assert sorted(s.session_id for s in found) == ["new004", "new005", "new006"]
    assert cut.mark == state.mark
    after = sweep(cut, listing)
    assert after.found == ["new000", "new001", "new002", "new003"]
    assert after.pages == [1, 2, 3]


def test_the_page_cap_bounds_a_sweep() -> None:
    old = history(10)
    state = sweep(SweepState(), Listing(old[::-1])).state
    fresh = newer(30, old[-1][1])
    capped = sweep(state, Listing((old + fresh)[::-1]), max_pages=4)
    assert capped.capped
    assert capped.pages == [1, 2, 3, 4]
    assert len(capped.found) == 12


# --- against the simulator ------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def world(clock: Clock, request: pytest.FixtureRequest) -> SimulatedNotte:
    """A world listing in `order`, with `sessions` live sessions a minute apart:
    `(order, sessions)` is the test's indirect parameter, `("newest", 3)` without one."""
    order, sessions = getattr(request, "param", ("newest", 3))
    world = SimulatedNotte(seed=5, clock=clock, list_order=order)
    for index in range(sessions):
        created = NOW - 3600 + index * 60
        world.add_session(f"live{index:02d}", created_at=iso(created))
    return world


@pytest.fixture
def exporter(api: SimulatorServer, clock: Clock) -> Iterator[ExporterUnderTest]:
    settings = make_settings(api.url, page_size=5, poll_interval=10)
    # One attempt a request: these tests are about what the sweep reads, not retries,
    # and an outage of eight cycles would otherwise sleep out eight backoffs.
    under_test = ExporterUnderTest(settings, clock=clock, retry=RetryPolicy(attempts=1))
    under_test.start_http()
    try:
        yield under_test
    finally:
        under_test.close()


def swept_pages(world: SimulatedNotte) -> list[int]:
    """The pages of `only_active=false` the exporter asked for, in order."""
    return [
        int(r.query["page"])
        for r in world.request_log()
        if r.endpoint == "list_sessions" and r.query.get("only_active") == "false"
    ]


def ended(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], status: str) -> float:
    """`notte_sessions_ended_total` for one status, summed over its other labels."""
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "notte_sessions_ended_total" and ("status", status) in labels
    )


def quick_session(world: SimulatedNotte, clock: Clock, session_id: str, status: str) -> None:
    """A session that starts and ends between two polls."""
    clock.now += 3
    world.add_session(session_id)
    clock.now += 3
    world.end_session(session_id, status, error="Browser crashed" if status == "error" else None)
    clock.now += 4


@pytest.mark.parametrize(
    "world", [("newest", 12), ("oldest", 12)], ids=["newest-first", "oldest-first"], indirect=True
)
def test_a_session_that_starts_and_ends_between_two_cycles_is_exported_and_counted_once(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    assert exporter.cycle()
    quick_session(world, clock, "quick-error", "error")
    quick_session(world, clock, "quick-closed", "closed")
    assert exporter.cycle()
    samples = exporter.metrics()
    assert value(samples, "notte_session_status", session_id="quick-error", status="error") == 1
    assert value(samples, "notte_session_status", session_id="quick-closed", status="closed") == 1
    assert value(
        samples, "notte_session_error_info", session_id="quick-error", error="Browser crashed"
    )
    reason = "notte_session_close_reason"
    assert value(samples, reason, session_id="quick-error", close_reason="error") == 1
    assert value(samples, reason, session_id="quick-closed", close_reason="manual") == 1
    clock.now += 10
    assert exporter.cycle()
    samples = exporter.metrics()
    assert ended(samples, "error") == 1
    assert ended(samples, "closed") == 1
    total = "notte_sessions_ended_total"
    assert value(samples, total, status="error", close_reason="error") == 1
    assert value(samples, total, status="closed", close_reason="manual") == 1
    assert value(samples, "notte_exporter_tracked_sessions", source="discovered") == 14
    assert value(samples, "notte_exporter_sweep_enabled") == 1
    assert value(samples, "notte_up") == 1
    # Retention counts from when the exporter saw them end.
    clock.now += 900
    assert exporter.cycle()
    samples = exporter.metrics()
    assert value(samples, "notte_session_status", session_id="quick-error", status="error") is None
    assert ended(samples, "error") == 1


@pytest.mark.parametrize("world", [("newest", 12)], indirect=True)
def test_a_session_that_began_and_ended_during_an_outage_is_seen_after_it(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    assert exporter.cycle()
    world.inject(Fault(status=503))
    for index in range(8):  # more than a page of sessions come and go meanwhile
        quick_session(world, clock, f"gone{index}", "timed_out")
        assert not exporter.cycle()
    world.clear_faults()
    world.reset_requests()
    assert exporter.cycle()
    samples = exporter.metrics()
    for index in range(8):
        found = value(
            samples, "notte_session_status", session_id=f"gone{index}", status="timed_out"
        )
        assert found == 1
    assert ended(samples, "timed_out") == 8
    # 8 new sessions then the 12 seen before, 5 a page: down to where the last good sweep stopped.
    assert swept_pages(world) == [1, 2]


@pytest.mark.parametrize("world", [("oldest", 23)], indirect=True)
def test_an_oldest_first_api_has_its_short_sessions_caught_from_the_tail(
    world: SimulatedNotte, exporter: ExporterUnderTest, clock: Clock
) -> None:
    assert exporter.cycle()
    assert swept_pages(world) == [1, 2, 4, 8, 6, 5]  # 23 sessions: the tail is page 5
    world.reset_requests()
    quick_session(world, clock, "quick", "error")
    assert exporter.cycle()
    assert swept_pages(world) == [5]
    samples = exporter.metrics()
    assert value(samples, "notte_session_status", session_id="quick", status="error") == 1
    world.reset_requests()
    quick_session(world, clock, "quick2", "closed")
    quick_session(world, clock, "quick3", "closed")
    assert exporter.cycle()
    assert swept_pages(world) == [5, 6]  # page 5 is full now: one more page
    samples = exporter.metrics()
    assert ended(samples, "error") == 1
    assert ended(samples, "closed") == 2


@pytest.mark.parametrize("world", [("shuffled", 12)], indirect=True)
def test_an_api_in_no_time_order_turns_the_sweep_off_cleanly(
    world: SimulatedNotte,
    exporter: ExporterUnderTest,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    assert exporter.cycle()
    samples = exporter.metrics()
    assert value(samples, "notte_exporter_sweep_enabled") == 0
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_sessions", status="active") == 12
    world.reset_requests()
    quick_session(world, clock, "quick", "error")
    world.add_session("later")
    for _ in range(3):
        assert exporter.cycle()
    assert swept_pages(world) == []
    samples = exporter.metrics()
    assert value(samples, "notte_exporter_sweep_enabled") == 0
    assert value(samples, "notte_exporter_sweep_configured") == 1  # so the alert fires
    assert value(samples, "notte_session_status", session_id="later", status="active") == 1
    warnings = [r.getMessage() for r in log_lines(caplog.records)]
    assert len(warnings) == 1, warnings
    assert "sweep is off" in warnings[0]


@pytest.mark.parametrize(
    "overrides",
    [{"sweep": False}, {"discovery": False, "session_ids": ["live00"]}],
    ids=["no-sweep", "no-discovery"],
)
def test_without_sweep_or_discovery_nothing_lists_ended_sessions(
    world: SimulatedNotte, api: SimulatorServer, clock: Clock, overrides: dict[str, object]
) -> None:
    under_test = ExporterUnderTest(make_settings(api.url, **overrides), clock=clock)
    under_test.start_http()
    try:
        for _ in range(2):
            assert under_test.cycle()
            quick_session(world, clock, f"quick{clock.now}", "closed")
        samples = under_test.metrics()
    finally:
        under_test.close()
    assert swept_pages(world) == []
    assert world.requests_total() > 0
    assert value(samples, "notte_exporter_sweep_enabled") == 0
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_exporter_poll_interval_seconds") == 30
    assert value(samples, "notte_exporter_deferred_sessions") == 0


@pytest.mark.parametrize(
    ("flags", "pages", "enabled"),
    [
        ([], [1], 1),
        (["--no-sweep"], [], 0),
        (["--no-discovery", "--session-id", "live00"], [], 0),
    ],
    ids=["default", "no-sweep", "no-discovery"],
)
def test_the_command_line_turns_the_sweep_on_and_off(
    world: SimulatedNotte, api: SimulatorServer, flags: list[str], pages: list[int], enabled: int
) -> None:
    env = {"NOTTE_API_URL": api.url, "NOTTE_API_KEY": API_KEY}
    result = run_cli("--once", *flags, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert swept_pages(world) == pages
    samples = parse_samples(result.stdout)
    assert value(samples, "notte_exporter_sweep_enabled") == enabled
    # What the settings asked for: a sweep off on purpose raises no alert.
    assert value(samples, "notte_exporter_sweep_configured") == enabled
