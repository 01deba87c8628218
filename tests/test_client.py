"""Unit tests of the Notte client over httpx.MockTransport (no sockets but one refused port)."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import random
import socket
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from exporter.metrics.selfmetrics import SelfMetrics, create_self_metrics
from exporter.notte.apikey import ApiKeySource
from exporter.notte.client import (
    MAX_SESSION_ID_LENGTH,
    ApiUnreachable,
    BadResponse,
    InvalidSession,
    NotteClient,
    RateLimited,
    ResponseTooLarge,
    RetryPolicy,
    Unauthorized,
    UnusableSessionId,
    UpstreamError,
    parse_retry_after,
    session_path,
)
from exporter.simulator import SimulatedNotte

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


async def list_page(client: NotteClient, deadline: float | None = None) -> Any:
    """Page 1 of the active list."""
    return await client.list_sessions(
        page=1, page_size=10, only_active=True, include_system=False, deadline=deadline or far()
    )


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
            await list_page(client, now[0] + 60)
        now[0] += 119.5  # still paused: fails at once, nothing sent
        with pytest.raises(RateLimited):
            await client.get_session("a", deadline=now[0] + 0.4)
        assert len(calls) == 1
        now[0] += 0.5  # the pause is over
        with pytest.raises(RateLimited):
            await client.get_session("a", deadline=now[0] + 60)

    asyncio.run(run())
    assert len(calls) == 2


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
    page_object = {"items": items, "page": 1, "page_size": 10, "has_next": False}
    body = items if shape == "list" else {**page_object, "has_previous": False}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(body).encode())

    client, metrics = make_client(handler)

    async def run() -> None:
        page = await list_page(client)
        assert [s.session_id for s in page.sessions] == ["a"]
        assert page.item_count == 3
        assert bad_data(metrics, "invalid_item", "list_sessions") == 2
        assert page.has_next is (False if shape == "items" else None)

    asyncio.run(run())
    invalid = metrics.registry.get_sample_value(
        "notte_exporter_api_bad_data_total", {"endpoint": "list_sessions", "kind": "invalid_item"}
    )
    assert invalid == 2


@pytest.mark.parametrize(
    ("only_active", "include_system"), [(True, False), (False, True), (False, False)]
)
def test_list_asks_for_sessions_slash_with_every_parameter_spelled_out(
    only_active: bool, include_system: bool
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "page": 3, "page_size": 25})

    client, _ = make_client(handler)
    page = asyncio.run(
        client.list_sessions(
            page=3,
            page_size=25,
            only_active=only_active,
            include_system=include_system,
            deadline=far(),
        )
    )
    assert page.item_count == 0
    assert seen[0].url.path == "/sessions/"
    assert dict(seen[0].url.params) == {
        "page": "3",
        "page_size": "25",
        "only_active": str(only_active).lower(),
        "include_system": str(include_system).lower(),
    }


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("30", now=0) == 30
    assert parse_retry_after(formatdate(1000 + 45, usegmt=True), now=1000) == pytest.approx(45)
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("-3", now=0) == 0
    assert parse_retry_after("99999999", now=0) == 3600


# -- hostile answers: bounded bodies, checked answers, unusable IDs, named causes ------------

CAP = 1 << 20  # the tests' max_response_bytes


class Chunks(httpx.AsyncByteStream):
    """A response body streamed from an iterator of chunks, counting what was read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.read += len(chunk)
            yield chunk


def streamed(chunks: Iterator[bytes], **headers: str) -> tuple[Handler, Chunks]:
    stream = Chunks(chunks)
    return lambda request: httpx.Response(200, headers=headers, stream=stream), stream


def gzip_bomb(expanded: int) -> Iterator[bytes]:
    """gzip members of 16 MiB of spaces each, back to back (RFC 1952): `expanded` bytes once
    decoded, about 1/1000 of that on the wire, never held in memory whole."""
    member = gzip.compress(b" " * (16 << 20))
    return itertools.repeat(member, expanded // (16 << 20))


def bad_data(metrics: SelfMetrics, kind: str, endpoint: str = "get_session") -> float | None:
    return metrics.registry.get_sample_value(
        "notte_exporter_api_bad_data_total", {"endpoint": endpoint, "kind": kind}
    )


def peak_allocated(run: Callable[[], object]) -> int:
    """Peak bytes Python allocated while `run` ran."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_stops_at_the_cap_without_expanding() -> None:
    handler, stream = streamed(gzip_bomb(2 << 30), **{"Content-Encoding": "gzip"})
    client, metrics = make_client(handler, max_response_bytes=CAP)

    def run() -> None:
        with pytest.raises(ResponseTooLarge) as info:
            asyncio.run(client.get_session("a", deadline=far()))
        assert "get_session" in str(info.value)
        assert "1 MiB" in str(info.value)

    assert peak_allocated(run) < 8 * CAP
    assert stream.read < 1 << 20  # a few members of the 2 MB bomb, not all of it
    assert bad_data(metrics, "too_large") == 1


def test_an_endless_body_stops_at_the_cap() -> None:
    handler, stream = streamed(itertools.repeat(b"[" * 65536))
    client, metrics = make_client(handler, max_response_bytes=CAP)
    with pytest.raises(ResponseTooLarge):
        asyncio.run(list_page(client))
    assert CAP < stream.read <= CAP + 65536
    assert bad_data(metrics, "too_large", "list_sessions") == 1


def test_a_declared_length_over_the_cap_fails_before_reading() -> None:
    handler, stream = streamed(iter([b"x" * 10]), **{"Content-Length": str(CAP + 1)})
    client, _ = make_client(handler, max_response_bytes=CAP)
    with pytest.raises(ResponseTooLarge):
        asyncio.run(client.get_session("a", deadline=far()))
    assert stream.read == 0


def test_a_body_at_the_cap_is_accepted() -> None:
    body = json.dumps({"session_id": "a", "status": "active"}).encode()
    handler, _ = streamed(iter([body.ljust(CAP)]))
    client, _ = make_client(handler, max_response_bytes=CAP)
    assert asyncio.run(client.get_session("a", deadline=far())).session_id == "a"


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("gzip", lambda data: gzip.compress(data[:5]) + gzip.compress(data[5:])),  # two members
        ("deflate", zlib.compress),
        ("deflate", deflate_raw),
        ("identity", lambda data: data),
    ],
    ids=["gzip", "gzip-members", "deflate", "raw-deflate", "identity"],
)
def test_compressed_bodies_are_decoded(encoding: str, encode: Callable[[bytes], bytes]) -> None:
    body = encode(json.dumps({"session_id": "a", "status": "active"}).encode())
    pieces = iter([body[i : i + 7] for i in range(0, len(body), 7)])
    handler, _ = streamed(pieces, **{"Content-Encoding": encoding})
    client, _ = make_client(handler, max_response_bytes=CAP)
    assert asyncio.run(client.get_session("a", deadline=far())).session_id == "a"


@pytest.mark.parametrize(
    ("encoding", "body"), [("br", b"\x00\x01"), ("gzip", b"not gzip at all")], ids=["br", "corrupt"]
)
def test_bodies_that_cannot_be_decoded_are_bad_responses(encoding: str, body: bytes) -> None:
    handler, _ = streamed(iter([body]), **{"Content-Encoding": encoding})
    client, metrics = make_client(handler, max_response_bytes=CAP)
    with pytest.raises(BadResponse):
        asyncio.run(client.get_session("a", deadline=far()))
    assert bad_data(metrics, "not_json") == 1


def test_the_client_asks_only_for_encodings_it_can_bound() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"session_id": "a", "status": "active"})

    client, _ = make_client(handler)
    asyncio.run(client.get_session("a", deadline=far()))
    assert seen[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("endpoint", ["get_session", "list_sessions"])
def test_json_nested_too_deep_is_a_bad_response(endpoint: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    client, metrics = make_client(
        lambda request: httpx.Response(200, content=deep), max_response_bytes=16 << 20
    )

    async def call() -> object:
        if endpoint == "get_session":
            return await client.get_session("a", deadline=far())
        return await list_page(client)

    with pytest.raises(BadResponse):
        asyncio.run(call())
    assert bad_data(metrics, "not_json", endpoint) == 1


def test_an_answer_about_another_session_is_refused() -> None:
    client, metrics = make_client(
        lambda request: httpx.Response(200, json={"session_id": "b", "status": "active"})
    )
    with pytest.raises(BadResponse) as info:
        asyncio.run(client.get_session("a", deadline=far()))
    assert not isinstance(info.value, InvalidSession)
    assert "'a'" not in str(info.value)
    assert "session a," in str(info.value)
    assert bad_data(metrics, "wrong_session") == 1


@pytest.mark.parametrize(
    "session_id",
    ["", "a" * 70_000, "a" * (MAX_SESSION_ID_LENGTH + 1), "a\nb", "a\x00b", "a\x1b[2Jb", "\x85"],
    ids=["empty", "64k", "long", "newline", "nul", "escape", "c1"],
)
def test_an_unusable_session_id_is_refused_before_any_request(session_id: str) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"session_id": session_id, "status": "active"})

    client, metrics = make_client(handler)
    with pytest.raises(UnusableSessionId) as info:
        asyncio.run(client.get_session(session_id, deadline=far()))
    assert calls == []
    assert bad_data(metrics, "unusable_id") == 1
    message = str(info.value)
    assert len(message) < 300
    assert message.isprintable()


def test_a_redirect_is_not_followed_and_names_where_it_pointed() -> None:
    calls: list[httpx.Request] = []
    location = "https://user:pw@evil.example:8443/steal/it?key=secret#frag"

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(307, headers={"Location": location})

    client, metrics = make_client(handler)
    with pytest.raises(UpstreamError) as info:
        asyncio.run(client.get_session("a", deadline=far()))
    message = str(info.value)
    assert "HTTP 307" in message
    assert "https://evil.example:8443/steal/it" in message
    assert "secret" not in message
    assert "user" not in message
    assert "pw@" not in message
    assert len(calls) == 1
    registry = metrics.registry
    labels = {"endpoint": "get_session", "code": "307"}
    assert registry.get_sample_value("notte_exporter_api_requests_total", labels) == 1


def test_a_relative_redirect_names_the_api_host() -> None:
    client, _ = make_client(
        lambda request: httpx.Response(301, headers={"Location": "/sessions/?page=1"})
    )
    with pytest.raises(UpstreamError) as info:
        asyncio.run(client.get_session("a", deadline=far()))
    assert "HTTP 301 to http://notte.test/sessions/," in str(info.value)


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def chained(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            chained(httpx.ConnectError("All connection attempts failed"),
                    ConnectionRefusedError(111, "Connect call failed ('1.2.3.4', 443)")),
            "cannot connect to notte.test:80: [Errno 111] Connection refused",
        ),
        (
            chained(httpx.ConnectError("[Errno -2] Name or service not known"),
                    socket.gaierror(-2, "Name or service not known")),
            "cannot connect to notte.test:80: name resolution failed",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "connection to notte.test:80 failed: RemoteProtocolError: Server disconnected",
        ),
    ],
    ids=["refused", "dns", "protocol"],
)  # fmt: skip
def test_transport_errors_name_the_host_and_the_cause(error: Exception, said: str) -> None:
    client, _ = make_client(raising(error))
    with pytest.raises(ApiUnreachable) as info:
        asyncio.run(list_page(client))
    message = str(info.value)
    assert message.startswith("list_sessions: ")
    assert said in message
    assert KEY not in message
    assert "page_size" not in message


def test_a_refused_connection_names_the_host_port_and_errno() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound, not listening: connections are refused
        metrics = create_self_metrics(process_metrics=False)
        client = NotteClient(
            base_url=f"http://127.0.0.1:{port}",
            api_key=ApiKeySource(key=SecretStr(KEY)),
            request_timeout=5,
            max_concurrency=1,
            metrics=metrics,
            max_response_bytes=CAP,
            retry=RetryPolicy(attempts=1),
        )

        async def run() -> None:
            try:
                await client.get_session("a", deadline=far())
            finally:
                await client.aclose()

        with pytest.raises(ApiUnreachable) as info:
            asyncio.run(run())
    assert str(info.value) == (
        f"get_session: cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    )


def test_json_holding_too_many_values_for_its_size_is_not_parsed() -> None:
    """`[{},{},...]` costs ~25 times its size once parsed: the values are capped too."""
    bomb = b"[" + b"{}," * 200_000 + b"{}]"  # 600 KB, under the 1 MiB cap
    client, metrics = make_client(
        lambda request: httpx.Response(200, content=bomb), max_response_bytes=CAP
    )
    with pytest.raises(ResponseTooLarge) as info:
        asyncio.run(list_page(client))
    assert "JSON values" in str(info.value)
    assert bad_data(metrics, "too_large", "list_sessions") == 1


def test_a_full_page_of_realistic_sessions_is_well_within_the_caps() -> None:
    world = SimulatedNotte(seed=2)
    world.populate(active=50, ended=50)
    items, _ = world.page(page=1, page_size=100, only_active=False, include_system=True)
    body = json.dumps({"items": items, "has_next": False}).encode()
    client, metrics = make_client(
        lambda request: httpx.Response(200, content=body), max_response_bytes=256 << 10
    )
    page = asyncio.run(list_page(client))
    assert page.item_count == 100
    assert not bad_data(metrics, "too_large", "list_sessions")
