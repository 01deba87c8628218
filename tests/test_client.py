"""Unit tests of the Notte client over httpx.MockTransport (no sockets)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from email.utils import formatdate

import httpx
import pytest
from pydantic import SecretStr

from exporter.apikey import ApiKeySource
from exporter.client import (
    BadResponse,
    NotteClient,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    parse_retry_after,
    session_path,
)
from exporter.selfmetrics import SelfMetrics, create_self_metrics

KEY = "test-key-5e1f"
Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: object) -> tuple[NotteClient, SelfMetrics]:
    metrics = create_self_metrics(process_metrics=False)
    client = NotteClient(
        base_url="http://notte.test",
        api_key=ApiKeySource(key=SecretStr(KEY)),
        request_timeout=5,
        max_concurrency=4,
        metrics=metrics,
        max_response_bytes=kwargs.pop("max_response_bytes", 1 << 20),  # type: ignore[arg-type]
        retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001),
        transport=httpx.MockTransport(handler),
        rng=random.Random(1),
        **kwargs,  # type: ignore[arg-type]
    )
    return client, metrics


def far() -> float:
    return time.monotonic() + 60


@pytest.mark.parametrize(
    ("session_id", "path"),
    [
        ("abc", "/sessions/abc"),
        ("../x", "/sessions/%2E%2E%2Fx"),
        ("..", "/sessions/%2E%2E"),
        ("a?b#c", "/sessions/a%3Fb%23c"),
        ("sp ace/é", "/sessions/sp%20ace%2F%C3%A9"),
    ],
)
def test_session_ids_are_one_encoded_path_segment(session_id: str, path: str) -> None:
    assert session_path(session_id) == path
    assert httpx.URL("http://h" + path).raw_path == path.encode()


def test_requests_carry_bearer_key_and_user_agent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"session_id": "a", "status": "active"})

    client, _ = make_client(handler)

    async def run() -> None:
        await client.get_session("a", deadline=far())
        await client.aclose()

    asyncio.run(run())
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["User-Agent"].startswith("notte-exporter/")


def test_server_errors_are_retried_then_succeed() -> None:
    answers = iter([500, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"session_id": "a", "status": "active"})

    client, metrics = make_client(handler)
    session = asyncio.run(client.get_session("a", deadline=far()))
    assert session.session_id == "a"
    registry = metrics.registry
    retries = registry.get_sample_value(
        "notte_exporter_api_retries_total", {"endpoint": "get_session"}
    )
    assert retries == 2
    assert (
        registry.get_sample_value(
            "notte_exporter_api_requests_total", {"endpoint": "get_session", "code": "503"}
        )
        == 1
    )


def test_unauthorised_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(401, json={"detail": "no"})

    client, _ = make_client(handler)

    async def run() -> None:
        with pytest.raises(Unauthorized) as info:
            await client.get_session("a", deadline=far())
        assert KEY not in str(info.value)

    asyncio.run(run())
    assert len(calls) == 1


def test_retry_after_pauses_every_later_request() -> None:
    now = [1000.0]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "120"})

    client, _ = make_client(handler, monotonic=lambda: now[0])

    async def run() -> None:
        with pytest.raises(RateLimited):
            await client.get_session("a", deadline=now[0] + 60)
        with pytest.raises(RateLimited):
            await client.list_sessions(
                page=1, page_size=10, include_system=False, deadline=now[0] + 60
            )

    asyncio.run(run())
    assert len(calls) == 1
    assert client.paused_for == pytest.approx(120)


def test_body_that_is_not_json_is_a_bad_response() -> None:
    client, metrics = make_client(lambda request: httpx.Response(200, content=b"<html>"))

    async def run() -> None:
        with pytest.raises(BadResponse):
            await client.get_session("a", deadline=far())

    asyncio.run(run())
    value = metrics.registry.get_sample_value(
        "notte_exporter_api_bad_data_total", {"endpoint": "get_session", "kind": "not_json"}
    )
    assert value == 1


@pytest.mark.parametrize("shape", ["list", "items"])
def test_both_list_shapes_and_invalid_items(shape: str) -> None:
    items = [
        {"session_id": "a", "status": "active"},
        {"session_id": "b", "status": "active", "network_request_bytes": -5},
        "not an object",
    ]
    body = items if shape == "list" else {"items": items, "has_next": False}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["only_active"] == "true"
        return httpx.Response(200, content=json.dumps(body).encode())

    client, _ = make_client(handler)

    async def run() -> None:
        page = await client.list_sessions(
            page=1, page_size=10, include_system=False, deadline=far()
        )
        assert [s.session_id for s in page.sessions] == ["a"]
        assert page.item_count == 3
        assert page.invalid_count == 2
        assert page.has_next is (False if shape == "items" else None)

    asyncio.run(run())


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("30", now=0) == 30
    assert parse_retry_after(formatdate(1000 + 45, usegmt=True), now=1000) == pytest.approx(45)
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("-3", now=0) == 0
    assert parse_retry_after("99999999", now=0) == 3600
