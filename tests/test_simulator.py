"""The fake Notte API behaves like the real one, and misbehaves exactly as told."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.simulator import (
    BROWSERS,
    ENDED,
    Fault,
    SimulatedNotte,
    SimulatorServer,
    iso,
    parse_timestamp,
)
from tests.harness import Clock, wait_until

KEY = "sk-sim-test"
START = 1_800_000_000.0
AUTH = {"Authorization": f"Bearer {KEY}"}
CONTRACT_FIELDS = {
    "session_id", "status", "created_at", "last_accessed_at", "closed_at",
    "idle_timeout_minutes", "max_duration_minutes", "duration", "steps", "error", "proxies",
    "browser_type", "use_file_storage", "network_request_bytes", "network_response_bytes",
    "user_agent", "viewport_width", "viewport_height", "headless", "solve_captchas", "cdp_url",
    "viewer_url", "web_bot_auth",
}  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def world(clock: Clock) -> SimulatedNotte:
    return SimulatedNotte(seed=5, clock=clock)


@pytest.fixture
def server(world: SimulatedNotte) -> Iterator[SimulatorServer]:
    with SimulatorServer(world, api_key=KEY) as api:
        yield api


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as http:
        yield http


def live(world: SimulatedNotte, clock: Clock, seconds: int) -> None:
    for _ in range(seconds):
        clock.now += 1
        world.tick(1)


def everything(world: SimulatedNotte) -> str:
    return json.dumps([world.session(sid) for sid in world.session_ids()], sort_keys=True)


def test_same_seed_and_clock_give_the_same_world() -> None:
    worlds = []
    for seed in (3, 3, 4):
        clock = Clock(START)
        world = SimulatedNotte(seed=seed, clock=clock)
        world.populate(active=20, ended=4)
        live(world, clock, 90)
        worlds.append(everything(world))
    assert worlds[0] == worlds[1]
    assert worlds[0] != worlds[2]


def test_life_ends_sessions_in_every_way_and_keeps_the_population_near_the_target(
    world: SimulatedNotte, clock: Clock
) -> None:
    world.populate(active=12)
    populations = []
    for _ in range(300):
        live(world, clock, 1)
        populations.append(len(world.session_ids("active")))
        if all(world.session_ids(status) for status in ENDED):
            break
    assert all(world.session_ids(status) for status in ENDED)
    assert min(populations) >= 4
    assert max(populations) <= 24
    for status in ENDED:
        ended = world.session(world.session_ids(status)[0])
        assert ended is not None
        assert ended["closed_at"]
        assert ended["duration"].startswith("PT")
        assert (ended["error"] is not None) == (status == "error")


def test_life_shows_traffic_steps_and_accesses(world: SimulatedNotte, clock: Clock) -> None:
    world.populate(active=12)
    before = world.list_page(page=1, page_size=100, only_active=False, include_system=True)
    live(world, clock, 20)
    after = world.list_page(page=1, page_size=100, only_active=False, include_system=True)

    def total(sessions: list[Any], field: str) -> int:
        return sum(len(s[field]) if field == "steps" else s[field] for s in sessions)

    for field in ("network_request_bytes", "network_response_bytes", "steps"):
        assert total(after, field) > total(before, field)
    assert any(s["last_accessed_at"] == iso(clock.now) for s in after)


def test_odd_injected_values_do_not_stop_the_life(world: SimulatedNotte, clock: Clock) -> None:
    world.add_session("odd")
    world.update_session(
        "odd",
        steps="none",
        network_request_bytes="lots",
        idle_timeout_minutes=None,
        created_at="yesterday",
        last_accessed_at=17,
    )
    live(world, clock, 30)
    odd = world.session("odd")
    assert odd is not None
    assert (odd["steps"], odd["network_request_bytes"]) == ("none", "lots")


def test_session_is_stored_with_every_contract_field(world: SimulatedNotte) -> None:
    session = world.add_session()
    assert re.fullmatch(r"sess-[0-9a-f]{12}", session["session_id"])
    assert (session["status"], session["closed_at"]) == ("active", None)
    assert session["created_at"] == "2027-01-15T08:00:00.000000Z"
    assert session["browser_type"] in BROWSERS
    assert session.keys() >= CONTRACT_FIELDS


def test_end_session_sets_the_ending_fields(world: SimulatedNotte, clock: Clock) -> None:
    world.add_session("a")
    clock.now += 41.25
    world.end_session("a", "error", error="Browser crashed: Target closed")
    ended = world.session("a")
    assert ended is not None
    assert (ended["status"], ended["error"]) == ("error", "Browser crashed: Target closed")
    assert ended["duration"] == "PT41.250000S"
    assert parse_timestamp(ended["closed_at"]) == clock.now


def test_populated_ended_sessions_ended_in_the_past_and_are_not_listed(
    world: SimulatedNotte, clock: Clock
) -> None:
    world.populate(active=2, ended=3)
    active = world.session_ids("active")
    ended = [world.session(sid) for sid in world.session_ids() if sid not in active]
    assert sorted(s["status"] for s in ended if s) == sorted(ENDED)
    closed_at = [parse_timestamp(s["closed_at"]) for s in ended if s]
    assert all(when is not None and when < clock.now - 60 for when in closed_at)
    listed = world.list_page(page=1, page_size=10, only_active=True, include_system=False)
    assert {s["session_id"] for s in listed} == set(world.session_ids("active"))


def test_list_pages_in_a_stable_order_with_has_next(
    world: SimulatedNotte, clock: Clock, client: httpx.Client
) -> None:
    for index in range(25):
        clock.now += 1
        world.add_session(f"s{24 - index:02d}")
    world.add_session("gone", status="closed")
    pages = [
        client.get("/sessions/", params={"only_active": "true", "page": p, "page_size": 10}).json()
        for p in (1, 2, 3)
    ]
    assert [p["has_next"] for p in pages] == [True, True, False]
    assert [p["total"] for p in pages] == [25, 25, 25]
    ids = [item["session_id"] for p in pages for item in p["items"]]
    assert ids == [f"s{24 - i:02d}" for i in range(25)]  # by created_at, not by ID


def test_bare_list_shape_answers_a_json_list(world: SimulatedNotte) -> None:
    world.populate(active=3)
    with (
        SimulatorServer(world, api_key=KEY, list_shape="list") as api,
        httpx.Client(base_url=api.url, headers=AUTH) as http,
    ):
        first = http.get("/sessions/", params={"page": 1, "page_size": 2}).json()
        second = http.get("/sessions/", params={"page": 2, "page_size": 2}).json()
    assert isinstance(first, list)
    assert (len(first), len(second)) == (2, 1)


def test_system_sessions_are_listed_only_when_asked(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.add_session("user")
    world.add_session("sys", system=True)
    plain = client.get("/sessions/", params={"page": 1, "page_size": 10}).json()
    params: dict[str, str | int] = {"page": 1, "page_size": 10, "include_system": "true"}
    everything = client.get("/sessions/", params=params).json()
    assert [s["session_id"] for s in plain["items"]] == ["user"]
    assert {s["session_id"] for s in everything["items"]} == {"user", "sys"}


def test_raw_list_items_are_appended_until_cleared(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.add_session("ok")
    world.add_raw_list_item({"session_id": 5, "status": ["no"]})
    assert client.get("/sessions/").json()["items"][1] == {"session_id": 5, "status": ["no"]}
    world.clear_raw_list_items()
    assert len(client.get("/sessions/").json()["items"]) == 1


def test_invalid_paging_is_422(client: httpx.Client) -> None:
    for params in ({"page": 0}, {"page_size": 1001}, {"page": "x"}, {"only_active": "maybe"}):
        assert client.get("/sessions/", params=params).status_code == 422
    assert client.get("/sessions/", params={"page_size": 1000}).status_code == 200


def test_a_missing_or_wrong_key_is_401(world: SimulatedNotte, server: SimulatorServer) -> None:
    world.add_session("a")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        answer = httpx.get(f"{server.url}/sessions/a", headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Invalid API key"}
    assert [r.authorised for r in world.request_log()] == [False, False, False]


def test_unknown_deleted_and_unrouted_are_404(world: SimulatedNotte, client: httpx.Client) -> None:
    world.add_session("a")
    assert client.get("/sessions/a").status_code == 200
    world.delete_session("a")
    assert client.get("/sessions/a").json() == {"detail": "Session not found"}
    assert client.get("/sessions/nobody").status_code == 404
    assert client.get("/sessions/").json()["items"] == []
    assert client.get("/elsewhere").status_code == 404
    assert client.post("/sessions").status_code == 404
    assert [r.endpoint for r in world.request_log()][-2:] == ["other", "other"]


def test_session_id_is_the_percent_decoded_rest_of_the_path(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.add_session("../x")
    world.add_session("a?b=1#c")
    assert client.get("/sessions/..%2Fx").json()["session_id"] == "../x"
    assert client.get("/sessions/a%3Fb%3D1%23c").json()["session_id"] == "a?b=1#c"
    log = world.request_log()
    assert [r.endpoint for r in log] == ["get_session", "get_session"]
    assert [r.path for r in log] == ["/sessions/..%2Fx", "/sessions/a%3Fb%3D1%23c"]


def test_a_counted_fault_hits_n_requests_then_the_api_is_normal(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.add_session("a")
    world.inject(Fault(endpoint="get_session", status=500, count=2))
    assert client.get("/sessions/").status_code == 200
    codes = [client.get("/sessions/a").status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert [r.status for r in world.request_log()] == [200, 500, 500, 200]


def test_a_fault_without_count_lasts_until_cleared(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.inject(Fault(status=429, retry_after="7"))
    for path in ("/sessions/", "/sessions/a"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
        assert answer.json() == {"detail": "Injected fault"}
    world.clear_faults()
    assert client.get("/sessions/").status_code == 200


def test_a_fault_can_send_a_body_that_is_not_json(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    fault = Fault(endpoint="list_sessions", body=b"<html>not json", count=1)
    world.inject(fault)
    world.inject(Fault(status=502, body=b"Bad Gateway"))
    answer = client.get("/sessions/")
    assert (answer.status_code, answer.content) == (200, b"<html>not json")
    assert answer.headers["Content-Length"] == str(len(b"<html>not json"))
    assert fault.count == 1  # the world counts down its own copy
    answer = client.get("/sessions/")
    assert (answer.status_code, answer.content) == (502, b"Bad Gateway")


def test_a_slow_body_arrives_whole(world: SimulatedNotte, client: httpx.Client) -> None:
    world.add_session("a")
    world.inject(Fault(slow_body=0.3, count=1))
    started = time.monotonic()
    answer = client.get("/sessions/a")
    assert time.monotonic() - started >= 0.25
    assert answer.json()["session_id"] == "a"


def test_stop_releases_a_hanging_request_quickly(
    world: SimulatedNotte, server: SimulatorServer
) -> None:
    world.inject(Fault(hang=60))
    outcome: list[Any] = []

    def ask() -> None:
        try:
            outcome.append(httpx.get(f"{server.url}/sessions/", headers=AUTH, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_until(lambda: world.requests_total("list_sessions") == 1)
    started = time.monotonic()
    server.stop()
    asker.join(5)
    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], httpx.HTTPError)
    server.stop()  # idempotent


def test_stop_cuts_off_keep_alive_connections(world: SimulatedNotte) -> None:
    api = SimulatorServer(world, api_key=KEY)
    api.stop()  # before start: nothing to do
    with SimulatorServer(world, api_key=KEY) as api, httpx.Client(headers=AUTH) as http:
        assert http.get(f"{api.url}/sessions/").headers.get("Connection") != "close"
        url = api.url
        started = time.monotonic()
        api.stop()
        assert time.monotonic() - started < 1
        with pytest.raises(httpx.TransportError):
            http.get(f"{url}/sessions/")


def test_the_list_is_at_sessions_slash_and_sessions_redirects_there_keeping_the_query(
    world: SimulatedNotte, server: SimulatorServer
) -> None:
    world.add_session("a")
    answer = httpx.get(f"{server.url}/sessions", params={"page": 1, "page_size": 5})
    assert answer.status_code == 307  # before auth, as FastAPI's redirect_slashes does
    assert answer.headers["Location"] == f"{server.url}/sessions/?page=1&page_size=5"
    followed = httpx.get(answer.headers["Location"], headers=AUTH)
    assert [item["session_id"] for item in followed.json()["items"]] == ["a"]


def test_requests_are_counted_and_logged(world: SimulatedNotte, client: httpx.Client) -> None:
    world.add_session("a")
    client.get("/sessions/", params={"only_active": "true", "page": 2, "page_size": 5})
    client.get("/sessions/a")
    client.get("/sessions/a")
    client.get("/favicon.ico")
    assert world.requests_total() == 4
    assert [world.requests_total(e) for e in ("list_sessions", "get_session", "other")] == [1, 2, 1]
    first = world.request_log()[0]
    assert first.query == {"only_active": "true", "page": "2", "page_size": "5"}
    assert (first.path, first.status, first.authorised) == ("/sessions/", 200, True)
    world.reset_requests()
    assert world.requests_total() == 0
    assert world.request_log() == []


def test_background_ticking_brings_the_world_to_life() -> None:
    world = SimulatedNotte(seed=2)
    with SimulatorServer(world, tick_interval=0.02):
        wait_until(lambda: world.session_ids("active"), timeout=5)


def test_listing_ten_thousand_sessions_is_quick() -> None:
    world = SimulatedNotte(seed=9, clock=Clock(START))
    world.populate(active=10_000)
    started = time.monotonic()
    seen = []
    for page in range(1, 101):
        items = world.list_page(page=page, page_size=100, only_active=True, include_system=False)
        json.dumps(items)
        seen += [item["session_id"] for item in items]
    assert time.monotonic() - started < 1.0
    assert len(set(seen)) == 10_000
