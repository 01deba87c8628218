"""The poll engine's promise, over real HTTP against the simulator: behind a slow API
every session is refreshed in turn, no request is thrown away, and the concurrency
cap holds as the API sees it; with shards, every session is seen by exactly one replica."""

from __future__ import annotations

import logging

import pytest

from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import Fault, SimulatedNotte
from tests.harness import (
    Clock,
    ExporterUnderTest,
    exporter_for,
    make_settings,
    value,
    wait_until,
)


def cut_requests(exporter: ExporterUnderTest) -> float:
    families = exporter.app.metrics.api_requests.collect()
    return sum(s.value for f in families for s in f.samples if s.labels.get("code") == "cut")


def exported(exporter: ExporterUnderTest) -> set[str]:
    return {s.session_id for s in exporter.app.store.current.sessions}


def test_eight_sessions_behind_a_half_second_api_with_two_slots_are_all_exported_within_6s(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    """The case from the issue, run by the real scheduler: one second between cycles,
    each answer taking 0.5 s, two requests at once: four answers a second, none cut."""
    configured = [f"s{index}" for index in range(8)]
    for session_id in configured:
        world.add_session(session_id)
    world.inject(Fault(endpoint="get_session", hang=0.5))
    exporter = ExporterUnderTest(
        make_settings(
            api.url, session_ids=configured, discovery=False, poll_interval=1, max_concurrency=2
        )
    )
    exporter.serve()
    try:
        wait_until(lambda: exported(exporter) == set(configured), timeout=6)
        assert world.max_in_flight() <= 2
        assert cut_requests(exporter) == 0
    finally:
        exporter.close()


def test_thirty_sessions_at_0_7s_with_three_slots_are_all_refreshed_again_in_turn(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    configured = [f"c{index:02d}" for index in range(30)]
    for session_id in configured:
        world.add_session(session_id, steps=[])
    world.inject(Fault(endpoint="get_session", hang=0.7))
    settings = {"discovery": False, "poll_interval": 1, "max_concurrency": 3}
    with exporter_for(api.url, session_ids=configured, **settings) as exporter:
        results = []
        while len(results) < 20 and exported(exporter) != set(configured):
            results.append(exporter.cycle())
        # The first fetch goes alone (the key may be refused) and may miss the first cycle.
        assert all(results[1:]), results
        # Three slots, 0.7 s an answer: about three answers a cycle, ten cycles, and slack.
        assert exported(exporter) == set(configured), f"after {len(results)} cycles"
        assert len(results) <= 15
        for session_id in configured:  # every session changes: each must be asked again
            world.update_session(session_id, steps=[1])
        cycles = 0
        steps: list[float | None] = []
        while cycles < 20 and steps.count(1) < len(configured):
            cycles += 1
            assert exporter.cycle()
            samples = exporter.metrics()
            steps = [value(samples, "notte_session_steps", session_id=i) for i in configured]
        assert steps.count(1) == len(configured), f"not refreshed after {cycles} cycles: {steps}"
        assert cycles <= 15
        assert world.max_in_flight() <= 3
        assert cut_requests(exporter) == 0
        assert (value(samples, "notte_exporter_polls_total", result="failure") or 0) <= 1


def test_an_answer_that_arrives_after_its_cycle_is_applied_by_the_next_and_not_asked_again(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("slow", steps=[])
    world.add_session("fast", steps=[])
    settings = {"session_ids": ["slow", "fast"], "discovery": False, "max_concurrency": 2}
    with exporter_for(api.url, poll_interval=1, request_timeout=5, **settings) as exporter:
        assert exporter.cycle()
        world.update_session("slow", steps=[1, 2])
        world.update_session("fast", steps=[1])
        world.reset_requests()
        world.inject(Fault(endpoint="get_session", hang=1.2, count=1))  # slow's answer: late
        assert exporter.cycle()  # fast answered: a success, with slow deferred
        samples = exporter.metrics()
        assert value(samples, "notte_session_steps", session_id="fast") == 1
        assert value(samples, "notte_session_steps", session_id="slow") == 0
        assert value(samples, "notte_exporter_deferred_sessions") == 1
        assert exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_session_steps", session_id="slow") == 2  # the late answer
        asked = [r.path for r in world.request_log()]
        assert asked.count("/sessions/slow") == 1  # waited for, not asked again
        assert value(samples, "notte_exporter_deferred_sessions") == 0
        assert cut_requests(exporter) == 0
        assert world.max_in_flight() <= 2


def test_the_oldest_refresh_age_grows_while_a_session_is_starved_and_falls_when_refreshed(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.add_session("a")
    clock = Clock(1_800_000_000.0)
    settings = make_settings(api.url, session_ids=["a"], discovery=False)
    exporter = ExporterUnderTest(settings, clock=clock)
    exporter.start_http()

    def age() -> float | None:
        return value(exporter.metrics(), "notte_exporter_oldest_refresh_age_seconds")

    try:
        assert age() == 0  # nothing tracked yet
        assert exporter.cycle()
        clock.now += 7
        assert age() == 7  # live: it grows between cycles
        world.inject(Fault(endpoint="get_session", status=503))
        assert not exporter.cycle()
        clock.now += 30
        assert age() == 37  # a failed cycle refreshed nothing
        world.clear_faults()
        assert exporter.cycle()
        assert age() == 0
    finally:
        exporter.close()


def test_a_blocked_cycle_keeps_the_order_the_next_cycle_asks_the_oldest_first(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    configured = ["a", "b", "c"]
    for session_id in configured:
        world.add_session(session_id)
    settings = {"discovery": False, "max_concurrency": 1, "poll_interval": 1}
    with exporter_for(api.url, session_ids=configured, **settings) as exporter:
        world.inject(Fault(endpoint="get_session", hang=0.6, count=2))
        assert exporter.cycle()  # a answers; b answers late; c is never asked
        world.inject(Fault(endpoint="get_session", status=401, count=1))
        world.reset_requests()
        assert not exporter.cycle()  # c, the one never answered, is refused: nothing else
        assert [r.path for r in world.request_log()] == ["/sessions/c"]
        world.reset_requests()
        assert exporter.cycle()
        asked = [r.path.removeprefix("/sessions/") for r in world.request_log()]
        assert asked[0] == "c"  # still the oldest: the refused cycle lost nothing
        assert sorted(asked) == configured


def test_a_list_cut_at_the_page_cap_is_not_taken_as_whole_and_says_so(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for index in range(3):
        world.add_session(f"early{index}")
    # max_sessions 2, page size 1: the cap is 3 pages.
    settings = {"max_sessions": 2, "page_size": 1, "sweep": False}
    with exporter_for(api.url, **settings) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_exporter_session_list_truncated") == 0
        tracked = exported(exporter)
        for index in range(4):
            world.add_session(f"late{index}")
        world.reset_requests()
        assert exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_exporter_session_list_truncated") == 1
        # Sessions the cut list did not return are not taken to have ended: each is
        # fetched, still active, and stays exported.
        assert tracked <= exported(exporter)
        for session_id in tracked:
            assert value(samples, "notte_session_status", session_id=session_id, status="active")
    warnings = [r.getMessage() for r in caplog.records if "page cap" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_three_shards_over_25000_sessions_see_every_session_exactly_once(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    """Each replica reads the whole fleet's list (page cap per fleet, not per replica)
    and keeps its own share; together they cover every active session once."""
    world.populate(active=25_000)
    active = set(world.session_ids("active"))
    assert len(active) == 25_000
    seen: list[set[str]] = []
    for shard in range(3):
        exporter = ExporterUnderTest(
            make_settings(
                api.url, shard=shard, total_shards=3, sweep=False, page_size=100, poll_interval=60
            )
        )
        try:
            world.reset_requests()
            assert exporter.cycle(timeout=90)
            seen.append(exported(exporter))
            assert world.requests_total("list_sessions") == 25_000 // 100
            registry = exporter.app.metrics.registry
            assert registry.get_sample_value("notte_exporter_session_list_truncated") == 0
        finally:
            exporter.close()
    assert set().union(*seen) == active
    assert sum(len(part) for part in seen) == len(active)


def test_a_listing_slower_than_a_cycle_goes_on_into_the_next_and_is_no_failure(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    for index in range(3):
        world.add_session(f"listed{index}")
    world.inject(Fault(endpoint="list_sessions", hang=0.4))  # three pages: 1.2 s
    settings = {"page_size": 1, "sweep": False, "poll_interval": 1}
    with exporter_for(api.url, **settings) as exporter:
        assert exporter.cycle()  # pages answered, the list not whole yet: slow, not down
        assert value(exporter.metrics(), "notte_up") == 1
        assert exporter.cycle()  # the listing ends in this one, which applies it
        assert exported(exporter) == {f"listed{index}" for index in range(3)}
        pages = [r.query["page"] for r in world.request_log() if r.endpoint == "list_sessions"]
        assert pages == ["1", "2", "3"]  # each page once: the listing was not started over
        assert cut_requests(exporter) == 0
