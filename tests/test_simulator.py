"""The fake Notte API behaves like the real one, and misbehaves exactly as told."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from exporter.labels import CLOSE_REASONS
from exporter.simulator import (
    BROWSERS,
    ENDED,
    LIST_ORDERS,
    Fault,
    SimulatedNotte,
    SimulatorServer,
    iso,
    parse_timestamp,
)
from tests.harness import API_KEY, Clock, Serve, wait_until

KEY = API_KEY  # the key the shared `api` fixture serves with
START = 1_800_000_000.0
AUTH = {"Authorization": f"Bearer {KEY}"}
LIST = "/sessions/"
CONTRACT_FIELDS = {
    "session_id", "status", "created_at", "last_accessed_at", "closed_at",
    "idle_timeout_minutes", "timeout_minutes", "max_duration_minutes", "duration",
    "close_reason", "steps", "error", "proxies", "browser_type", "network_request_bytes",
    "network_response_bytes", "user_agent", "viewport_width", "viewport_height",
    "solve_captchas", "cdp_url", "viewer_url", "web_bot_auth", "auth_ids", "system_hidden",
}  # fmt: skip
EXPECTED_CLOSE_REASON = {"closed": {"manual"}, "error": {"error"}}


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def world(clock: Clock) -> SimulatedNotte:
    return SimulatedNotte(seed=5, clock=clock)


@pytest.fixture
def client(api: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=5) as http:
        yield http


def live(world: SimulatedNotte, clock: Clock, seconds: int) -> None:
    for _ in range(seconds):
        clock.now += 1
        world.tick(1)


def everything(world: SimulatedNotte) -> str:
    return json.dumps([world.session(sid) for sid in world.session_ids()], sort_keys=True)


def listed(world: SimulatedNotte, *, only_active: bool, page_size: int = 100) -> list[Any]:
    """Every item of one listing, page after page, as the world serves it."""
    items: list[Any] = []
    for page in range(1, 10_000):
        chunk, has_next = world.page(
            page=page, page_size=page_size, only_active=only_active, include_system=True
        )
        items += chunk
        if not has_next:
            return items
    raise AssertionError("the listing never ends")


def ids(items: list[Any]) -> list[str]:
    return [item["session_id"] for item in items]


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
        for sid in world.session_ids(status):
            ended = world.session(sid)
            assert ended is not None
            assert ended["closed_at"]
            assert ended["duration"].startswith("PT")
            assert (ended["error"] is not None) == (status == "error")
            allowed = EXPECTED_CLOSE_REASON.get(status, {"idle_timeout", "max_duration"})
            assert ended["close_reason"] in allowed


def test_live_sessions_carry_a_duration_text_that_grows(
    world: SimulatedNotte, clock: Clock
) -> None:
    world.add_session("a")
    assert world.session("a")["duration"] == "PT0.000000S"  # type: ignore[index]
    live(world, clock, 5)
    assert world.session("a")["duration"] == "PT5.000000S"  # type: ignore[index]


def test_life_has_logins_that_finish_and_sessions_shorter_than_a_poll(
    world: SimulatedNotte, clock: Clock
) -> None:
    world.populate(active=12, authenticating=3)
    waiting = world.session_ids("authenticating")
    assert len(waiting) == 3
    assert all(world.session(sid)["auth_ids"] for sid in waiting)  # type: ignore[index]
    born = set(world.session_ids())
    for _ in range(300):
        live(world, clock, 1)
        for sid in world.session_ids("authenticating"):
            assert world.session(sid)["closed_at"] is None  # type: ignore[index]
    assert not set(waiting) & set(world.session_ids("authenticating"))
    assert set(waiting) - set(world.session_ids("error"))  # most logins succeed
    newcomers = [world.session(sid) for sid in world.session_ids() if sid not in born]
    assert any(s["auth_ids"] for s in newcomers if s)  # the life starts logins too

    def lifetime(sid: str) -> float:
        session = world.session(sid)
        assert session is not None
        closed, created = parse_timestamp(session["closed_at"]), session["created_at"]
        return (closed or 0) - (parse_timestamp(created) or 0)

    short = [sid for status in ENDED for sid in world.session_ids(status) if lifetime(sid) < 5]
    assert len(short) >= 10  # about one every 12 s
    assert set(short) & set(world.session_ids("error"))  # quick errors among them


def test_life_shows_traffic_steps_and_accesses(world: SimulatedNotte, clock: Clock) -> None:
    world.populate(active=12)
    before = listed(world, only_active=False)
    live(world, clock, 20)
    after = [s for s in listed(world, only_active=False) if s["session_id"] in ids(before)]

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
    assert (ended["duration"], ended["close_reason"]) == ("PT41.250000S", "error")
    assert parse_timestamp(ended["closed_at"]) == clock.now


def test_close_reason_says_which_ending_and_which_deadline(world: SimulatedNotte) -> None:
    world.add_session("closed")
    world.add_session("idle", idle_timeout_minutes=1, max_duration_minutes=15)
    world.add_session("long", idle_timeout_minutes=5, max_duration_minutes=2)
    world.add_session("told")
    world.end_session("closed")
    world.end_session("idle", "timed_out")
    world.end_session("long", "timed_out")
    world.end_session("told", "timed_out", close_reason="unknown")
    reasons = {sid: world.session(sid)["close_reason"] for sid in world.session_ids()}  # type: ignore[index]
    assert reasons == {
        "closed": "manual",
        "idle": "idle_timeout",
        "long": "max_duration",
        "told": "unknown",
    }
    assert set(reasons.values()) <= set(CLOSE_REASONS)
    assert world.session("idle")["timeout_minutes"] == 1  # type: ignore[index]


def test_timeouts_in_the_life_end_at_the_deadline_that_comes_first(clock: Clock) -> None:
    world = SimulatedNotte(seed=1, clock=clock, target_active=0)
    world.add_session("idle", idle_timeout_minutes=1, max_duration_minutes=15)
    world.add_session("long", idle_timeout_minutes=5, max_duration_minutes=2)
    clock.now += 121
    world.tick(121)  # a deadline that passed since the last tick beats any work in this one
    ended = {sid: world.session(sid) for sid in ("idle", "long")}
    assert {sid: s["status"] for sid, s in ended.items() if s} == {
        "idle": "timed_out",
        "long": "timed_out",
    }
    assert ended["idle"]["close_reason"] == "idle_timeout"  # type: ignore[index]
    assert ended["long"]["close_reason"] == "max_duration"  # type: ignore[index]


def test_populated_ended_sessions_ended_in_the_past_and_are_not_listed(
    world: SimulatedNotte, clock: Clock
) -> None:
    world.populate(active=2, ended=3)
    active = world.session_ids("active")
    ended = [world.session(sid) for sid in world.session_ids() if sid not in active]
    assert sorted(s["status"] for s in ended if s) == sorted(ENDED)
    closed_at = [parse_timestamp(s["closed_at"]) for s in ended if s]
    assert all(when is not None and when < clock.now - 60 for when in closed_at)
    assert all(s["close_reason"] in CLOSE_REASONS for s in ended if s)
    assert set(ids(listed(world, only_active=True))) == set(world.session_ids("active"))


def test_list_pages_newest_first_by_default_with_has_next_and_no_total(
    world: SimulatedNotte, clock: Clock, client: httpx.Client
) -> None:
    for index in range(25):
        clock.now += 1
        world.add_session(f"s{index:02d}")
    world.add_session("gone", status="closed")  # ended half an hour ago: last when listed
    pages = [
        client.get(LIST, params={"only_active": "true", "page": p, "page_size": 10}).json()
        for p in (1, 2, 3)
    ]
    assert [sorted(p) for p in pages] == [
        ["has_next", "has_previous", "items", "page", "page_size"]
    ] * 3
    assert [(p["page"], p["page_size"]) for p in pages] == [(1, 10), (2, 10), (3, 10)]
    assert [p["has_next"] for p in pages] == [True, True, False]
    assert [p["has_previous"] for p in pages] == [False, True, True]
    assert [i for p in pages for i in ids(p["items"])] == [f"s{24 - i:02d}" for i in range(25)]
    everything = client.get(LIST, params={"only_active": "false", "page_size": 100}).json()
    assert ids(everything["items"]) == [f"s{24 - i:02d}" for i in range(25)] + ["gone"]


def test_list_order_applies_to_both_listings(clock: Clock) -> None:
    orders = {}
    for order in LIST_ORDERS:
        world = SimulatedNotte(seed=4, clock=Clock(START), list_order=order)
        for index in range(40):
            world.add_session(f"s{index:02d}", created_at=iso(START + index))
            if index % 3 == 0:
                world.end_session(f"s{index:02d}")
        orders[order] = (
            ids(listed(world, only_active=False, page_size=7)),
            ids(listed(world, only_active=True, page_size=7)),
        )
    every, live_only = orders["oldest"]
    assert every == [f"s{i:02d}" for i in range(40)]
    assert live_only == [f"s{i:02d}" for i in range(40) if i % 3]
    assert orders["newest"] == (every[::-1], live_only[::-1])
    shuffled_every, shuffled_live = orders["shuffled"]
    assert sorted(shuffled_every) == every
    assert shuffled_every not in (every, every[::-1])
    assert shuffled_live == [i for i in shuffled_every if i in live_only]  # one permutation
    again = SimulatedNotte(seed=4, clock=Clock(START), list_order="shuffled")
    for index in range(40):
        again.add_session(f"s{index:02d}", created_at=iso(START + index))
    assert ids(listed(again, only_active=False)) == shuffled_every  # fixed by the seed
    with pytest.raises(ValueError, match="list_order"):
        SimulatedNotte(list_order="random")


def test_listing_without_the_slash_redirects_like_fastapi(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    query = "page=2&page_size=5&only_active=false"
    with httpx.Client(base_url=api.url) as anonymous:  # the redirect comes before auth
        answer = anonymous.get(f"/sessions?{query}")
    assert answer.status_code == 307
    assert answer.headers["Location"] == f"{api.url}{LIST}?{query}"
    assert answer.content == b""
    with httpx.Client(headers=AUTH, follow_redirects=True) as http:
        followed = http.get(f"{api.url}/sessions?{query}")
    assert (followed.status_code, followed.json()["page"]) == (200, 2)
    log = world.request_log()
    assert [(r.path, r.status) for r in log] == [
        ("/sessions", 307),
        ("/sessions", 307),
        (LIST, 200),
    ]


def test_bare_list_shape_answers_a_json_list(world: SimulatedNotte, serve: Serve) -> None:
    world.populate(active=3)
    api = serve(world, list_shape="list")
    with httpx.Client(base_url=api.url, headers=AUTH) as http:
        first = http.get(LIST, params={"page": 1, "page_size": 2}).json()
        second = http.get(LIST, params={"page": 2, "page_size": 2}).json()
    assert isinstance(first, list)
    assert (len(first), len(second)) == (2, 1)


def test_system_sessions_are_listed_unless_excluded(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.add_session("user")
    world.add_session("sys", system=True)
    default = client.get(LIST, params={"page": 1, "page_size": 10}).json()
    params: dict[str, str | int] = {"page": 1, "page_size": 10, "include_system": "false"}
    plain = client.get(LIST, params=params).json()
    assert {s["session_id"]: s["system_hidden"] for s in default["items"]} == {
        "user": False,
        "sys": True,
    }
    assert ids(plain["items"]) == ["user"]
    world.update_session("user", system_hidden=True)
    assert client.get(LIST, params=params).json()["items"] == []


def test_raw_list_items_are_appended_until_cleared(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.add_session("ok")
    world.add_raw_list_item({"session_id": 5, "status": ["no"]})
    assert client.get(LIST).json()["items"][1] == {"session_id": 5, "status": ["no"]}
    world.clear_raw_list_items()
    assert len(client.get(LIST).json()["items"]) == 1


def test_invalid_paging_is_422_with_fastapi_detail(client: httpx.Client) -> None:
    for params, field in (
        ({"page": 0}, "page"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page": "x"}, "page"),
        ({"only_active": "maybe"}, "only_active"),
        ({"include_system": "2"}, "include_system"),
    ):
        answer = client.get(LIST, params=params)
        assert answer.status_code == 422
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["query", field]
        assert isinstance(error["msg"], str)
        assert isinstance(error["type"], str)
    assert client.get(LIST, params={"page_size": 100}).status_code == 200
    assert client.get(LIST, params={"only_active": "no", "unknown": "x"}).status_code == 200


def test_a_missing_or_wrong_key_is_401(world: SimulatedNotte, api: SimulatorServer) -> None:
    world.add_session("a")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        answer = httpx.get(f"{api.url}/sessions/a", headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Invalid API key"}
    assert [r.authorised for r in world.request_log()] == [False, False, False]


def test_unknown_deleted_and_unrouted_are_404(world: SimulatedNotte, client: httpx.Client) -> None:
    world.add_session("a")
    assert client.get("/sessions/a").status_code == 200
    world.delete_session("a")
    assert client.get("/sessions/a").json() == {"detail": "Session not found"}
    assert client.get("/sessions/nobody").status_code == 404
    assert client.get(LIST).json()["items"] == []
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
    assert client.get(LIST).status_code == 200
    codes = [client.get("/sessions/a").status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert [r.status for r in world.request_log()] == [200, 500, 500, 200]


def test_a_fault_without_count_lasts_until_cleared(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    world.inject(Fault(status=429, retry_after="7"))
    for path in (LIST, "/sessions/a"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
        assert answer.json() == {"detail": "Injected fault"}
    world.clear_faults()
    assert client.get(LIST).status_code == 200


def test_a_fault_can_send_a_body_that_is_not_json(
    world: SimulatedNotte, client: httpx.Client
) -> None:
    fault = Fault(endpoint="list_sessions", body=b"<html>not json", count=1)
    world.inject(fault)
    world.inject(Fault(status=502, body=b"Bad Gateway"))
    answer = client.get(LIST)
    assert (answer.status_code, answer.content) == (200, b"<html>not json")
    assert answer.headers["Content-Length"] == str(len(b"<html>not json"))
    assert fault.count == 1  # the world counts down its own copy
    answer = client.get(LIST)
    assert (answer.status_code, answer.content) == (502, b"Bad Gateway")


def test_a_slow_body_arrives_whole(world: SimulatedNotte, client: httpx.Client) -> None:
    world.add_session("a")
    world.inject(Fault(slow_body=0.3, count=1))
    started = time.monotonic()
    answer = client.get("/sessions/a")
    assert time.monotonic() - started >= 0.25  # a lower bound: no load makes it fail
    assert answer.json()["session_id"] == "a"


def test_stop_releases_a_hanging_request_quickly(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    world.inject(Fault(hang=60))
    outcome: list[Any] = []

    def ask() -> None:
        try:
            outcome.append(httpx.get(f"{api.url}{LIST}", headers=AUTH, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_until(lambda: world.requests_total("list_sessions") == 1)
    started = time.monotonic()
    api.stop()
    asker.join(5)
    # Real time is the behaviour: stop() does not wait out the minute-long hang.
    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], httpx.HTTPError)
    api.stop()  # idempotent


def test_stop_cuts_off_keep_alive_connections(world: SimulatedNotte) -> None:
    api = SimulatorServer(world, api_key=KEY)
    api.stop()  # before start: nothing to do
    with SimulatorServer(world, api_key=KEY) as api, httpx.Client(headers=AUTH) as http:
        assert http.get(f"{api.url}{LIST}").headers.get("Connection") != "close"
        url = api.url
        started = time.monotonic()
        api.stop()
        # Real time: stop() does not wait for the kept-alive connection's next request.
        assert time.monotonic() - started < 1
        with pytest.raises(httpx.TransportError):
            http.get(f"{url}{LIST}")


def test_requests_are_counted_and_logged(world: SimulatedNotte, client: httpx.Client) -> None:
    world.add_session("a")
    client.get(LIST, params={"only_active": "true", "page": 2, "page_size": 5})
    client.get("/sessions/a")
    client.get("/sessions/a")
    client.get("/favicon.ico")
    assert world.requests_total() == 4
    assert [world.requests_total(e) for e in ("list_sessions", "get_session", "other")] == [1, 2, 1]
    first = world.request_log()[0]
    assert first.query == {"only_active": "true", "page": "2", "page_size": "5"}
    assert (first.path, first.status, first.authorised) == (LIST, 200, True)
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
        items, has_next = world.page(
            page=page, page_size=100, only_active=True, include_system=False
        )
        json.dumps(items)
        seen += ids(items)
    # Real time is the behaviour (bench/scale.py lists 10k sessions): ~0.1 s when the
    # listing is sorted once; a sort per page adds ~0.5 s, and a busy machine more.
    assert time.monotonic() - started < 1.0
    assert (len(set(seen)), has_next) == (10_000, False)


@contextmanager
def simulator_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`python -m exporter.simulator` as a user runs it, with its first line read."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url, key = process.stdout.readline().split()  # the first line, flushed at once
        yield process, url, key
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_simulator_runs_on_its_own_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    with simulator_process("--port", "0", "--seed", "3") as (process, url, key):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        auth = {"Authorization": f"Bearer {key}"}
        params = {"only_active": "false", "page_size": 100}
        items = httpx.get(f"{url}{LIST}", params=params, headers=auth).json()["items"]
        assert {item["status"] for item in items} & set(ENDED)
        assert any(item["auth_ids"] for item in items)  # managed-auth logins, done or not
        assert httpx.get(f"{url}{LIST}", headers={"Authorization": "Bearer no"}).status_code == 401
        process.send_signal(stop_signal)
        assert process.wait(timeout=5) == 0


def test_the_simulator_takes_the_key_it_is_given() -> None:
    with simulator_process("--api-key", "sk-mine") as (process, url, key):
        assert key == "sk-mine"
        answer = httpx.get(f"{url}{LIST}", headers={"Authorization": "Bearer sk-mine"})
        assert answer.status_code == 200
        process.terminate()
        assert process.wait(timeout=5) == 0
