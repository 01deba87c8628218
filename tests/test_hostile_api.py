"""A hostile Notte API cannot stop the exporter, silence `/metrics` or make `notte_up` lie.

The simulator answers with what an attacker (or a broken proxy) would send: bodies of
hundreds of megabytes, an endless chunked body, a gzip bomb, JSON nested 100,000 deep,
an answer about another session, redirects, a self-signed certificate. For each, the
cycle fails (or the one item is skipped) as the contract says, the failure is counted
and logged with its cause, `/metrics` keeps answering, and memory stays bounded. The
large cases run in a subprocess exporter whose peak RSS (VmHWM) is read from /proc.

Every server is on 127.0.0.1; every case is bounded in time (a few seconds at most).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.simulator import Fault, SimulatedNotte, SimulatorServer
from tests.certs import make_certs
from tests.harness import (
    API_KEY,
    ExporterUnderTest,
    exporter_for,
    log_lines,
    parse_samples,
    value,
    wait_until,
)
from tests.process import ExporterProcess

MiB = 1 << 20


@pytest.fixture
def world() -> SimulatedNotte:
    world = SimulatedNotte(seed=11)
    world.add_session("s1")
    return world


def bad_data(exporter: ExporterUnderTest, kind: str, endpoint: str) -> float:
    samples = exporter.metrics()
    return value(samples, "notte_exporter_api_bad_data_total", endpoint=endpoint, kind=kind) or 0


def failures_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in log_lines(caplog.records) if "poll cycle failed" in r.getMessage()
    ]


def deep_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


# --- in process, one cycle at a time: what is counted, logged and exported ------------------


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault(endpoint="list_sessions", body=deep_json()), "not_json"),
        (Fault(endpoint="list_sessions", body=b"[" * (64 << 10), repeat=64), "too_large"),
        (Fault(endpoint="list_sessions", body=b" " * (16 << 10), endless=True), "too_large"),
        (Fault(endpoint="list_sessions", body=b" " * (4 * MiB), gzip=True), "too_large"),
    ],
    ids=["deep-json", "over-the-cap", "endless", "gzip-bomb"],
)
def test_a_hostile_list_answer_fails_the_cycle_and_is_counted(
    world: SimulatedNotte,
    api: SimulatorServer,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
    kind: str,
) -> None:
    caplog.set_level(logging.INFO)
    with exporter_for(api.url, poll_interval=5, max_response_bytes=2 * MiB) as exporter:
        assert exporter.cycle()
        world.inject(fault)
        assert not exporter.cycle()
        samples = exporter.metrics()
        assert value(samples, "notte_up") == 0
        assert bad_data(exporter, kind, "list_sessions") == 1
        # The last known values stay exported through the failure.
        assert value(samples, "notte_session_status", session_id="s1", status="active") == 1
        world.clear_faults()
        assert exporter.cycle()
        assert value(exporter.metrics(), "notte_up") == 1
    [failed] = failures_logged(caplog)
    assert "list_sessions" in failed
    if kind == "too_large":
        assert "2 MiB cap (max_response_bytes)" in failed


def test_an_answer_about_another_session_is_not_accepted(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    world.add_session("other", status="error")
    imposter = json.dumps(world.session("other")).encode()
    with exporter_for(api.url, discovery=False, session_ids=["s1"]) as exporter:
        assert exporter.cycle()
        world.inject(Fault(endpoint="get_session", body=imposter))
        assert not exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_up") == 0
    assert value(samples, "notte_session_status", session_id="s1", status="active") == 1
    assert not any(("session_id", "other") in labels for (_, labels) in samples)
    assert bad_data_of(samples, "wrong_session", "get_session") == 1
    [failed] = failures_logged(caplog)
    assert "asked for session s1, the answer is about session other" in failed


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def bad_data_of(samples: Samples, kind: str, endpoint: str) -> float:
    return value(samples, "notte_exporter_api_bad_data_total", endpoint=endpoint, kind=kind) or 0


def test_json_nested_too_deep_for_one_session_fails_the_cycle(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    with exporter_for(api.url, discovery=False, session_ids=["s1"]) as exporter:
        world.inject(Fault(endpoint="get_session", body=deep_json(), count=1))
        assert not exporter.cycle()
        assert bad_data(exporter, "not_json", "get_session") == 1
        assert value(exporter.metrics(), "notte_up") == 0
        assert exporter.cycle()


@pytest.mark.parametrize(
    "bad_id", ["x" * 70_000, "a\nb\x1b[31m", "s\x00"], ids=["70k", "control", "nul"]
)
def test_a_session_id_no_url_can_carry_is_skipped_once_logged_and_counted(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture, bad_id: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with exporter_for(api.url, discovery=False, session_ids=[bad_id, "s1"]) as exporter:
        assert exporter.cycle()
        assert exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_up") == 1
    assert value(samples, "notte_session_status", session_id="s1", status="active") == 1
    assert bad_data_of(samples, "unusable_id", "get_session") == 2
    assert [r.path for r in world.request_log()] == ["/sessions/s1", "/sessions/s1"]
    warned = [r.getMessage() for r in log_lines(caplog.records) if "cannot ask" in r.getMessage()]
    assert len(warned) == 1  # once per ID, not once per cycle
    assert len(warned[0]) < 300
    assert warned[0].isprintable()


def test_a_redirect_is_not_followed_and_the_log_names_its_target(
    world: SimulatedNotte, api: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    target = "https://collector.example:8443/grab/it?token=abc123"
    world.inject(Fault(endpoint="list_sessions", status=307, headers={"Location": target}))
    with exporter_for(api.url) as exporter:
        assert not exporter.cycle()
        samples = exporter.metrics()
    assert value(samples, "notte_up") == 0
    labels = {"endpoint": "list_sessions", "code": "307"}
    assert value(samples, "notte_exporter_api_requests_total", **labels) == 1
    assert world.requests_total() == 1  # not retried, not followed
    [failed] = failures_logged(caplog)
    assert "HTTP 307 to https://collector.example:8443/grab/it" in failed
    assert "abc123" not in failed


def test_a_refused_connection_names_the_host_and_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = placeholder.getsockname()[1]
        with exporter_for(f"http://127.0.0.1:{port}") as exporter:
            assert not exporter.cycle()
    [failed] = failures_logged(caplog)
    expected = f"list_sessions: cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    assert expected in failed


@pytest.fixture
def self_signed_api(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on loopback with a self-signed certificate: no client trusts it."""
    certs = make_certs(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.other_crt, certs.other_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                # The client rejects the certificate, as it should: the handshake fails.
                with contextlib.suppress(OSError):
                    context.wrap_socket(connection, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_certificate_nobody_vouches_for_is_named_in_the_log(
    self_signed_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    with exporter_for(self_signed_api) as exporter:
        assert not exporter.cycle()
        assert value(exporter.metrics(), "notte_up") == 0
    [failed] = failures_logged(caplog)
    host = self_signed_api.removeprefix("https://")
    assert f"cannot connect to {host}: TLS certificate verification failed" in failed
    assert "self-signed certificate" in failed


# --- a real exporter process: memory stays bounded, /metrics keeps answering ---------------


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, "no VmHWM in /proc (Linux only)"
    return int(match.group(1))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed `/metrics`; it must answer promptly whatever the API is doing.

    Real time is the behaviour: the scrape path never waits on the API, whose hostile
    answers here take seconds or never end; 2 s is generous for a loaded machine."""
    started = time.monotonic()
    response = httpx.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started < 2
    return parse_samples(response.text)


HOSTILE_BODIES: list[tuple[str, Fault]] = [
    # 200 MB, honestly announced: refused on its Content-Length, nothing read.
    ("200 MB body", Fault(endpoint="list_sessions", body=b" " * MiB, repeat=200)),
    # No length at all, and no end: read up to the cap, then the connection is dropped.
    ("endless body", Fault(endpoint="list_sessions", body=b"[" * (64 << 10), endless=True)),
    # ~2 MB on the wire that would expand to 2 GiB: decoded up to the cap only.
    ("gzip bomb", Fault(endpoint="list_sessions", body=b" " * (16 * MiB), gzip=True, repeat=128)),
    # Under the byte cap, but ~400 MiB once parsed: refused on its count of values.
    ("dict bomb", Fault(endpoint="list_sessions", body=b"[" + b"{}," * (5 * MiB) + b"{}]")),
]


def test_hostile_bodies_keep_memory_bounded_and_metrics_truthful(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    """The default 16 MiB cap, against a subprocess exporter: its peak RSS grows by no
    more than a few times the cap, where issue 11 saw 1.6 to 4.2 GB."""
    args = ("--api-url", api.url, "--poll-interval", "0.5", "--request-timeout", "5")
    with ExporterProcess(*args, env={"NOTTE_API_KEY": API_KEY}) as exporter:
        url = exporter.wait_listening()

        def up() -> float | None:
            return value(scrape(url), "notte_up")

        wait_until(lambda: up() == 1, timeout=20)
        baseline = vm_hwm_kib(exporter.process.pid)
        for _name, fault in HOSTILE_BODIES:
            before = value(scrape(url), "notte_exporter_api_bad_data_total",
                           endpoint="list_sessions", kind="too_large") or 0  # fmt: skip
            world.inject(fault)

            def counted(before: float = before) -> bool:
                samples = scrape(url)
                too_large = value(samples, "notte_exporter_api_bad_data_total",
                                  endpoint="list_sessions", kind="too_large")  # fmt: skip
                return (too_large or 0) > before and value(samples, "notte_up") == 0

            wait_until(counted, timeout=20)
            world.clear_faults()
            wait_until(lambda: up() == 1, timeout=20)
        growth_mib = (vm_hwm_kib(exporter.process.pid) - baseline) / 1024
        assert growth_mib < 64, f"peak RSS grew by {growth_mib:.0f} MiB"
        assert "max_response_bytes" in exporter.stderr
        assert exporter.stop() == 0
