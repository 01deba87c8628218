"""The simulator and the exporter held against the vendor's own models (notte-sdk 1.10.0).

A fake that shares our assumptions cannot catch them: here every answer the
simulator gives validates against `notte_sdk._generated.models`, every list
query the exporter sends validates against `ListSessionsParametersQuery`, and
the SDK's own client lists and reads sessions from the simulator.

notte-sdk is a dev dependency (never a runtime one). Its import has side
effects, so the `sdk` fixture turns them off before the first import: no
telemetry, no PyPI version check, no `nest_asyncio` patch of this process's
event loops, and proxies that lead nowhere for anything but loopback, so
nothing can reach the internet.
"""

from __future__ import annotations

import json
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from exporter.labels import CLOSE_REASONS, ENDED_STATUSES, LIST_SESSIONS, STATUSES
from exporter.simulator import SimulatedNotte, SimulatorServer
from exporter.simulator.world import populate_account
from tests.harness import API_KEY, Clock, ExporterUnderTest, make_settings

SDK_VERSION = "1.10.0"
KEY = API_KEY  # the key ExporterUnderTest sends
START = 1_800_000_000.0
LIST = "/sessions/"
LIVE_STATUSES = [status for status in STATUSES if status not in ENDED_STATUSES]
NOWHERE = "http://127.0.0.1:9"  # the discard port: a proxy that refuses every connection


@dataclass(frozen=True)
class Sdk:
    models: ModuleType
    client: Any  # notte_sdk.NotteClient


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Sdk:
    """The SDK, imported with its network side effects off (see the module docstring)."""
    monkeypatch.setenv("DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("NOTTE_ENABLE_NEST_ASYNCIO", "false")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, NOWHERE)
        monkeypatch.setenv(name.lower(), NOWHERE)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("NOTTE_API_URL", raising=False)
    monkeypatch.delenv("NOTTE_API_KEY", raising=False)
    with warnings.catch_warnings():
        # The SDK's own modules still use pydantic's deprecated class-based config.
        warnings.simplefilter("ignore", DeprecationWarning)
        import notte_core
        import notte_core.telemetry
        import notte_sdk
        from notte_sdk._generated import models
        from notte_sdk.endpoints.base import BaseClient

    assert notte_sdk.__version__ == SDK_VERSION
    assert notte_core.telemetry.DISABLE_TELEMETRY, "notte_sdk was imported with telemetry on"
    assert not notte_core.nest_asyncio_enabled, "notte_sdk patched asyncio"
    monkeypatch.setattr(BaseClient, "check_and_warn_version_mismatch", lambda self: None)
    return Sdk(models=models, client=notte_sdk.NotteClient)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def world(clock: Clock) -> SimulatedNotte:
    """A world that has lived: every status, system sessions, ended ones of every kind."""
    world = SimulatedNotte(seed=11, clock=clock)
    world.populate(active=10, authenticating=3, ended=6)
    for _ in range(240):
        clock.now += 1
        world.tick(1)
    for status in STATUSES:
        world.add_session(f"fresh-{status}", status=status)
        world.add_session(f"system-{status}", status=status, system=True)
    return world


@pytest.fixture
def http(api: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        yield client


def all_pages(http: httpx.Client, **params: Any) -> list[httpx.Response]:
    answers = []
    for page in range(1, 1000):
        answer = http.get(LIST, params={**params, "page": page})
        assert answer.status_code == 200, answer.text
        answers.append(answer)
        if not answer.json()["has_next"]:
            return answers
    raise AssertionError("the listing never ends")


def test_notte_sdk_is_a_dev_dependency_only() -> None:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    assert f"notte-sdk=={SDK_VERSION}" in project["optional-dependencies"]["dev"]
    runtime = project["dependencies"] + project["optional-dependencies"]["test"]
    assert not [dependency for dependency in runtime if "notte" in dependency]


def test_every_session_the_simulator_serves_is_a_session_response(
    sdk: Sdk, world: SimulatedNotte, http: httpx.Client
) -> None:
    seen: dict[str, Any] = {}
    for sid in world.session_ids():
        answer = http.get(f"/sessions/{sid}")
        assert answer.status_code == 200
        session = sdk.models.SessionResponse.model_validate_json(answer.content)
        assert session.model_extra == {}, f"fields the API does not have: {session.model_extra}"
        assert answer.json()["timeout_minutes"] == session.idle_timeout_minutes
        seen[sid] = session
    assert {s.status for s in seen.values()} == set(STATUSES)
    assert {s.close_reason for s in seen.values() if s.status in ENDED_STATUSES} >= {
        "manual",
        "error",
        "idle_timeout",
    }
    assert all(s.close_reason in CLOSE_REASONS for s in seen.values() if s.closed_at)
    assert all(s.close_reason is None for s in seen.values() if s.status not in ENDED_STATUSES)
    assert all(s.duration and s.duration.startswith("PT") for s in seen.values())
    assert {sid for sid, s in seen.items() if s.system_hidden} == {
        f"system-{status}" for status in STATUSES
    }


@pytest.mark.parametrize("only_active", ["true", "false"])
@pytest.mark.parametrize("include_system", ["true", "false"])
def test_every_page_the_simulator_serves_is_a_paginated_session_response(
    sdk: Sdk, world: SimulatedNotte, http: httpx.Client, only_active: str, include_system: str
) -> None:
    model = sdk.models.PaginatedResponseSessionResponse
    listed = []
    for answer in all_pages(
        http, page_size=7, only_active=only_active, include_system=include_system
    ):
        assert set(answer.json()) == set(model.model_fields)
        page = model.model_validate_json(answer.content)
        assert all(item.model_extra == {} for item in page.items)
        listed += page.items
    ended = {sid for status in ENDED_STATUSES for sid in world.session_ids(status)}
    expected = [
        sid
        for sid in world.session_ids()
        if (only_active == "false" or sid not in ended)
        and (include_system == "true" or not sid.startswith("system-"))
    ]
    assert sorted(s.session_id for s in listed) == sorted(expected)


def test_the_default_listing_is_the_apis_default_query(
    sdk: Sdk, world: SimulatedNotte, http: httpx.Client
) -> None:
    defaults = sdk.models.ListSessionsParametersQuery()
    page = http.get(LIST).json()  # no parameters at all
    assert (page["page"], page["page_size"]) == (defaults.page, defaults.page_size)
    live = [item for answer in all_pages(http) for item in answer.json()["items"]]
    assert defaults.include_system is True
    assert {item["session_id"] for item in live if item["system_hidden"]} == {
        f"system-{status}" for status in LIVE_STATUSES
    }
    assert defaults.only_active is True
    assert all(item["status"] not in ENDED_STATUSES for item in live)


def test_a_rejected_query_is_an_http_validation_error(sdk: Sdk, http: httpx.Client) -> None:
    for params in ({"page_size": 101}, {"page": 0}, {"include_system": "perhaps"}):
        answer = http.get(LIST, params=params)
        assert answer.status_code == 422
        error = sdk.models.HTTPValidationError.model_validate_json(answer.content)
        assert error.detail
        assert error.detail[0].loc[0] == "query"


@pytest.mark.parametrize("include_system", [False, True])
def test_every_list_query_the_exporter_sends_is_a_list_sessions_query(
    sdk: Sdk, world: SimulatedNotte, api: SimulatorServer, clock: Clock, include_system: bool
) -> None:
    """Needs the client that lists at `/sessions/` and always sends include_system."""
    model = sdk.models.ListSessionsParametersQuery
    settings = make_settings(api.url, include_system=include_system, page_size=5)
    exporter = ExporterUnderTest(settings, clock=clock)
    try:
        world.reset_requests()
        for _ in range(3):
            assert exporter.cycle()
            clock.now += 5
            world.tick(5)
    finally:
        exporter.close()
    queries = [r for r in world.request_log() if r.endpoint == LIST_SESSIONS]
    assert queries
    for record in queries:
        assert (record.path, record.status) == (LIST, 200)
        assert set(record.query) <= set(model.model_fields), record.query
        params = model.model_validate(record.query)
        assert params.include_system is include_system
        assert "include_system" in record.query  # the API's default is true: always say
    assert any(model.model_validate(r.query).only_active for r in queries)


def test_the_sdk_client_lists_and_reads_the_simulators_sessions(
    sdk: Sdk, world: SimulatedNotte, api: SimulatorServer
) -> None:
    with sdk.client(api_key=KEY, server_url=api.url, max_retries=0) as client:

        def every(**params: Any) -> list[Any]:
            sessions: list[Any] = []
            for page in range(1, 100):
                chunk = client.sessions.list(page=page, page_size=50, **params)
                sessions += chunk
                if len(chunk) < 50:
                    return sessions
            raise AssertionError("the listing never ends")

        live = every(only_active=True)
        everything = every(only_active=False, include_system=False)
        assert {s.session_id for s in live} == {
            sid for status in LIVE_STATUSES for sid in world.session_ids(status)
        }
        assert {s.session_id for s in everything} == {
            sid for sid in world.session_ids() if not sid.startswith("system-")
        }
        for status in STATUSES:
            read = client.sessions.status(f"fresh-{status}")
            assert (read.session_id, read.status) == (f"fresh-{status}", status)
        ended = client.sessions.status(world.session_ids("timed_out")[0])
        assert ended.close_reason in ("idle_timeout", "max_duration")
        assert {r.path for r in world.request_log() if r.endpoint == LIST_SESSIONS} == {LIST}


# --- beyond sessions: functions, runs, the runtime, usage -----------------------------------


@pytest.fixture
def account(clock: Clock) -> SimulatedNotte:
    """The demo's account after ten minutes of life: scheduled and hand-run functions, runs
    under way, closed and failed, and a usage period."""
    world = SimulatedNotte(seed=5, clock=clock)
    populate_account(world)
    world.add_function("gone", name="retired", status="deleted")
    for _ in range(600):
        clock.now += 1
        world.tick(1)
    return world


@pytest.fixture
def account_http(account: SimulatedNotte, serve: Any) -> Iterator[httpx.Client]:
    server = serve(account)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        yield client


def pages_of(http: httpx.Client, path: str, **params: Any) -> list[httpx.Response]:
    answers = []
    for page in range(1, 1000):
        answer = http.get(path, params={**params, "page": page})
        assert answer.status_code == 200, answer.text
        answers.append(answer)
        if not answer.json()["has_next"]:
            return answers
    raise AssertionError("the listing never ends")


def strict(model: Any, content: bytes | dict[str, Any]) -> Any:
    """Validate an answer against a generated model, and hold it to no field the model lacks
    (these models ignore extra fields, so `model_extra` cannot tell)."""
    raw = json.loads(content) if isinstance(content, bytes) else content
    extra = set(raw) - set(model.model_fields)
    assert not extra, f"fields {model.__name__} does not have: {extra}"
    return model.model_validate(raw)


@pytest.mark.parametrize("only_active", ["true", "false"])
def test_every_functions_page_is_a_paginated_function_list(
    sdk: Sdk, account_http: httpx.Client, only_active: str
) -> None:
    model = sdk.models.PaginatedResponseFunctionListItemResponse
    items = []
    for answer in pages_of(account_http, "/functions/", page_size=2, only_active=only_active):
        assert set(answer.json()) == set(model.model_fields)
        page = model.model_validate_json(answer.content)
        for raw in answer.json()["items"]:
            strict(sdk.models.FunctionListItemResponse, raw)
        items += page.items
    names = {item.name for item in items}
    assert ("retired" in names) is (only_active == "false")
    assert {"checkout-monitor", "daily-report", "lead-enricher", "price-scraper"} <= names


def test_every_function_detail_is_a_function_with_link(
    sdk: Sdk, account: SimulatedNotte, account_http: httpx.Client
) -> None:
    listed = account_http.get("/functions/", params={"only_active": "false"}).json()["items"]
    schedules = {}
    for item in listed:
        answer = account_http.get(f"/functions/{item['function_id']}")
        assert answer.status_code == 200
        detail = strict(sdk.models.FunctionWithLinkResponse, answer.content)
        schedules[detail.name] = (detail.schedule_cron, detail.schedule_state)
    assert schedules["checkout-monitor"] == ("rate(1 minute)", "enabled")
    assert schedules["lead-enricher"][1] == "paused"
    assert schedules["price-scraper"] == (None, None)
    assert account_http.get("/functions/nope").status_code == 404


def test_every_runs_page_is_a_paginated_run_list_and_every_run_a_run_response(
    sdk: Sdk, account: SimulatedNotte, account_http: httpx.Client
) -> None:
    model = sdk.models.PaginatedResponseFunctionRunListItemResponse
    statuses = set()
    listed = account_http.get("/functions/", params={"only_active": "false"}).json()["items"]
    for item in listed:
        path = f"/functions/{item['function_id']}/runs/"
        for answer in pages_of(account_http, path, page_size=5, only_active="false"):
            assert set(answer.json()) == set(model.model_fields)
            page = model.model_validate_json(answer.content)
            for raw in answer.json()["items"]:
                strict(sdk.models.FunctionRunListItemResponse, raw)
            for run in page.items:
                statuses.add(run.status)
                one = account_http.get(
                    f"{path}{run.function_run_id}", params={"payload_mode": "references"}
                )
                detail = strict(sdk.models.GetFunctionRunResponse, one.content)
                assert (detail.status, detail.session_id) == (run.status, run.session_id)
                assert (detail.logs, detail.result) == (None, None)
                assert (detail.stopped_at is None) is (run.status == "active")
                assert run.session_id is None or account.session(run.session_id) is not None
    assert statuses == {"active", "closed", "failed"}


def test_the_runs_listing_defaults_to_every_status(
    sdk: Sdk, account: SimulatedNotte, account_http: httpx.Client
) -> None:
    assert sdk.models.ListFunctionRunsByFunctionIdParametersQuery().only_active is False
    assert sdk.models.ListFunctionsParametersQuery().only_active is True
    fid = account_http.get("/functions/").json()["items"][0]["function_id"]
    every = account_http.get(f"/functions/{fid}/runs/", params={"page_size": 100}).json()
    active = account_http.get(
        f"/functions/{fid}/runs/", params={"page_size": 100, "only_active": "true"}
    ).json()
    assert {r["status"] for r in active["items"]} <= {"active"}
    assert len(every["items"]) >= len(active["items"])
    for params in ({"page_size": 101}, {"only_active": "perhaps"}, {"source": "fax"}):
        answer = account_http.get(f"/functions/{fid}/runs/", params=params)
        assert answer.status_code == 422
        assert sdk.models.HTTPValidationError.model_validate_json(answer.content).detail


@pytest.mark.parametrize("status", ["ok", "degraded", "unreachable"])
def test_the_runtime_health_is_a_runtime_health_response(
    sdk: Sdk, account: SimulatedNotte, account_http: httpx.Client, status: str
) -> None:
    account.set_runtime(status)
    answer = account_http.get("/functions/health")
    health = strict(sdk.models.FunctionRuntimeHealthResponse, answer.content)
    assert health.status == status
    assert health.reachable is (status != "unreachable")
    assert (health.latency_ms is None) is (status == "unreachable")


def test_usage_is_a_usage_response_whose_balance_falls(
    sdk: Sdk, account: SimulatedNotte, account_http: httpx.Client, clock: Clock
) -> None:
    first = strict(sdk.models.UsageResponse, account_http.get("/usage").content)
    for _ in range(120):
        clock.now += 1
        account.tick(1)
    later = strict(sdk.models.UsageResponse, account_http.get("/usage").content)
    assert later.balance_amount < first.balance_amount
    assert later.total_cost > first.total_cost
    assert later.balance_amount == pytest.approx(
        later.subscription_balance_amount + later.topup_balance_amount
    )
    total = later.browser_usage_cost + later.proxy_usage_cost + later.llm_usage_cost
    assert later.total_cost == pytest.approx(total + later.function_usage_cost)
    account.set_usage(None)
    assert account_http.get("/usage").status_code == 404


def test_every_account_query_the_exporter_sends_is_the_apis_query(
    sdk: Sdk, account: SimulatedNotte, serve: Any, clock: Clock
) -> None:
    """The functions, runs and run queries, each held to its generated parameters model;
    `only_active`, `include_system` and `payload_mode` are always sent (the server's
    defaults differ from list to list)."""
    server = serve(account)
    exporter = ExporterUnderTest(
        make_settings(server.url, page_size=2), clock=clock, monotonic=clock
    )
    try:
        account.reset_requests()
        for _ in range(4):
            assert exporter.full_cycle()
            clock.now += 30
            account.tick(30)
    finally:
        exporter.close()
    models = {
        "list_functions": sdk.models.ListFunctionsParametersQuery,
        "list_function_runs": sdk.models.ListFunctionRunsByFunctionIdParametersQuery,
        "get_function_run": sdk.models.FunctionRunGetMetadataParametersQuery,
        "get_function": sdk.models.FunctionDownloadUrlParametersQuery,
        "functions_health": sdk.models.FunctionRuntimeHealthParametersQuery,
        "get_usage": sdk.models.GetUsageParametersQuery,
    }
    seen = set()
    for record in account.request_log():
        if record.endpoint not in models:
            continue
        seen.add(record.endpoint)
        assert record.status == 200, record
        model = models[record.endpoint]
        assert set(record.query) <= set(model.model_fields), record.query
        params = model.model_validate(record.query)
        if record.endpoint == "list_functions":
            assert (params.only_active, record.query["include_system"]) == (True, "false")
        if record.endpoint == "list_function_runs":
            assert record.query["only_active"] == "false"
            assert params.page_size == 2
        if record.endpoint == "get_function_run":
            assert params.payload_mode == "references"
    assert seen >= {"list_functions", "list_function_runs", "get_function", "get_usage"}
    assert "functions_health" in seen
