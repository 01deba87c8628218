"""Hostile clients never deny an authorised scrape.

Slowloris connections (headers one byte at a time), a flood of wrong passwords,
headers that never end, half-started TLS handshakes: each is bounded in count
and time here, on loopback only, while a Prometheus-like client keeps scraping
with credentials it has used before and must be answered within a second.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.simulator import SimulatorServer
from exporter.web.authorisation import request_path
from exporter.web.connections import held_bytes, outgoing
from exporter.web.http11 import REPEAT_REFUSAL_HOLD_SECONDS
from exporter.web.http_server import MetricsServer, listen_backlog
from exporter.web.lobby import ACCEPTS_PER_TURN
from exporter.web.webconfig import load_web_config
from tests.certs import make_certs
from tests.harness import ExporterUnderTest, make_settings, parse_samples, value
from tests.http11_peer import read_head_and_body
from tests.process import ExporterProcess

HOSTILE_CONNECTIONS = 300
ATTACK_SECONDS = 2.0
PASSWORD = "prometheus-scrape-password"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()  # ~60 ms a check
RIGHT = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}


@pytest.fixture(scope="module")
def guarded(
    module_api: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExporterUnderTest]:
    """An exporter with basic auth, whose scraper's credentials were checked once already."""
    path = tmp_path_factory.mktemp("web") / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    exporter = ExporterUnderTest(make_settings(module_api.url), web_config=load_web_config(path))
    exporter.start_http()
    assert exporter.cycle()
    assert exporter.get("/metrics", headers=RIGHT).status_code == 200
    yield exporter
    exporter.close()


def scrape_seconds(url: str, **kwargs: object) -> float:
    """One authorised scrape on a new connection; how long it took to get a whole answer."""
    started = time.monotonic()
    response = httpx.get(url + "/metrics", headers=RIGHT, timeout=5, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert value(parse_samples(response.text), "notte_up") == 1
    return elapsed


@contextmanager
def hostile(port: int, mode: str) -> Iterator[collections.Counter[str]]:
    """HOSTILE_CONNECTIONS hostile connections (`tests.hostile_peer`, in its own process)
    while the block runs; then the tally of what the server did to them."""
    peer = subprocess.Popen(
        [sys.executable, "-m", "tests.hostile_peer", "--port", str(port), "--mode", mode,
         "--connections", str(HOSTILE_CONNECTIONS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    tally: collections.Counter[str] = collections.Counter()
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "ready"
        yield tally
    finally:
        out, _ = peer.communicate(input="", timeout=15)
    tally.update(json.loads(out.strip().splitlines()[-1]))


def attack_while_scraping(url: str) -> list[float]:
    """Scrape every 0.25 s for ATTACK_SECONDS; the durations.

    Real time is the behaviour here (no clock to inject into sockets and threads): an
    authorised scrape is answered within a second under attack, as Prometheus needs.
    A denied one would wait out a header deadline (10 s) or a whole flood."""
    durations = []
    deadline = time.monotonic() + ATTACK_SECONDS
    while time.monotonic() < deadline:
        durations.append(scrape_seconds(url))
        time.sleep(0.25)
    return durations


def test_slowloris_connections_do_not_deny_an_authorised_scrape(
    guarded: ExporterUnderTest,
) -> None:
    assert guarded.server is not None
    with hostile(guarded.server.port, "slowloris") as tally:
        durations = attack_while_scraping(guarded.url)
    assert max(durations) < 1.0, durations
    assert tally["closed"] == 0, tally  # all still dribbling: none hit its deadline yet


@pytest.mark.parametrize("mode", ["wrong-password", "no-password"])
def test_a_flood_of_unauthorised_requests_does_not_deny_an_authorised_scrape(
    guarded: ExporterUnderTest, mode: str
) -> None:
    assert guarded.server is not None
    with hostile(guarded.server.port, mode) as tally:
        durations = attack_while_scraping(guarded.url)
        started = time.monotonic()
        assert httpx.get(guarded.url + "/healthz", timeout=5).status_code == 200  # the kubelet
        durations.append(time.monotonic() - started)
    assert max(durations) < 1.0, durations
    # Every request was answered: the wrong passwords at once when the checks were all taken.
    assert set(tally) <= {"401", "429"}, tally
    assert tally["401"] > 0
    assert (tally["429"] > 0) is (mode == "wrong-password")


@pytest.fixture
def short_deadlines(guarded: ExporterUnderTest) -> Iterator[MetricsServer]:
    """A second server for the same exporter, with deadlines short enough to wait for."""
    server = MetricsServer(
        ("127.0.0.1", 0),
        exposition=guarded.app.exposition,
        store=guarded.app.store,
        header_timeout=0.3,
        idle_timeout=0.3,
    )
    server.start()
    yield server
    server.stop()


def seconds_until_closed(sock: socket.socket, dribble: bytes = b"") -> float:
    """Send `dribble` every 50 ms until the server closes the connection; how long it took."""
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < 5:
        try:
            if dribble:
                sock.send(dribble)
            if sock.recv(65536) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - started


@pytest.mark.parametrize(
    "opening",
    [b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"GET /metrics HTTP/1.1\r\nX-"],
    ids=["silent", "header-that-never-ends", "header-name-that-never-ends"],
)
def test_a_request_head_is_cut_at_the_header_deadline(
    short_deadlines: MetricsServer, opening: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", short_deadlines.port), timeout=5) as sock:
        sock.sendall(opening)
        took = seconds_until_closed(sock, dribble=b"a" if opening else b"")
    # The socket deadline itself, in real time (0.3 s): not before it, and well within
    # 2 s of it on a busy machine.
    assert 0.25 < took < 2, took


def test_a_first_head_is_due_from_accept_however_long_its_client_stayed_silent(
    guarded: ExporterUnderTest,
) -> None:
    """A silent connection waits as a bare socket; when it speaks, its conversation
    keeps the deadline it had at accept, not a fresh one."""
    server = MetricsServer(
        ("127.0.0.1", 0),
        exposition=guarded.app.exposition,
        store=guarded.app.store,
        header_timeout=1.0,
    )
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            accepted = time.monotonic()
            time.sleep(0.6)  # a client that says nothing for a while
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            seconds_until_closed(sock, dribble=b"a")
            took = time.monotonic() - accepted
    finally:
        server.stop()
    # 1 s from accept; a deadline restarted at the first byte would end at 1.6 s.
    assert 0.95 < took < 1.45, took


def test_a_kept_alive_connections_next_head_is_cut_at_the_header_deadline(
    short_deadlines: MetricsServer,
) -> None:
    """Between requests the connection rests without a coroutine; its next head still has
    the header deadline from its first byte."""
    with socket.create_connection(("127.0.0.1", short_deadlines.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        took = seconds_until_closed(sock, dribble=b"a")
    assert 0.25 < took < 2, took


def test_a_client_that_half_closes_after_its_request_still_gets_its_answer(
    short_deadlines: MetricsServer,
) -> None:
    with socket.create_connection(("127.0.0.1", short_deadlines.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):  # ends only when the server closes
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.endswith(b"\r\n\r\nok\n")


def wait_until(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_every_connection_leaves_the_count_when_its_client_goes(
    guarded: ExporterUnderTest,
) -> None:
    """Silent, mid-head, idle after an answer, held after refusals, writing answers to a
    client that does not read, lingering after an error: whatever a connection was
    doing, its client's going frees its place."""
    server = MetricsServer(
        ("127.0.0.1", 0),
        exposition=guarded.app.exposition,
        store=guarded.app.store,
        web_config=guarded.app.web_config,
    )
    server.start()
    refused = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    authorised = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % (
        RIGHT["Authorization"].encode()
    )
    openings = [
        b"",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        refused * 3,  # the third is held a second
        refused + b"GET /healthz HTTP/1.1\r\n",
        authorised * 200,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100,
    ]
    clients = []
    try:
        for opening in openings:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", server.port))
            client.sendall(opening)
            clients.append(client)
        assert wait_until(lambda: server.open_connections == len(openings))
        # The POST's answer closes its connection after a lingering drain; no other may go.
        assert wait_until(lambda: server.open_connections == len(openings) - 1)
        for client in clients:
            client.close()
        assert wait_until(lambda: server.open_connections == 0), server.open_connections
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_a_tls_hello_on_the_plain_port_is_refused_at_once(short_deadlines: MetricsServer) -> None:
    """h11 sees no request line can start so: 400 and a close, no deadline waited out."""
    with socket.create_connection(("127.0.0.1", short_deadlines.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(
    short_deadlines: MetricsServer,
) -> None:
    with socket.create_connection(("127.0.0.1", short_deadlines.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        took = seconds_until_closed(sock)
    assert 0.25 < took < 2, took


def test_half_started_tls_handshakes_do_not_deny_a_scrape(
    module_api: SimulatorServer, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    exporter = ExporterUnderTest(make_settings(module_api.url), web_config=load_web_config(path))
    exporter.start_http()
    try:
        assert exporter.cycle()
        assert exporter.server is not None
        verify = ssl.create_default_context(cafile=str(certs.ca))
        with hostile(exporter.server.port, "tls-hello"):
            for _ in range(3):
                assert scrape_seconds(exporter.url, verify=verify) < 1.0
    finally:
        exporter.close()


def test_clients_that_never_read_their_answers_do_not_hold_the_workers(
    guarded: ExporterUnderTest,
) -> None:
    # No auth on this server: anyone may ask. Each client pipelines enough requests for
    # megabytes of answers, more than the socket buffers take, and reads none of them.
    server = MetricsServer(
        ("127.0.0.1", 0), exposition=guarded.app.exposition, store=guarded.app.store, workers=2
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    readers = []
    try:
        for _ in range(20):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
            readers.append(sock)
        for _ in range(5):
            assert scrape_seconds(url) < 1.0
    finally:
        for sock in readers:
            sock.close()
        server.stop()


def closed_after_answer(port: int, request: bytes) -> bool:
    """Whether the server closes the connection after answering `request` (else it
    answers a second request on it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(request)
        assert read_answer(client).startswith(b"HTTP/1.1 200 ")
        with contextlib.suppress(OSError):
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = b""
        with contextlib.suppress(OSError):
            rest = client.recv(65536)
        return not rest.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("request_line", "connection", "kept"),
    [
        (b"GET /healthz HTTP/1.1", b"", True),
        (b"GET /healthz HTTP/1.1", b"Connection: close\r\n", False),
        (b"GET /healthz HTTP/1.1", b"Connection: Keep-Alive, Close\r\n", False),
        (b"GET /healthz HTTP/1.0", b"", False),
        # h11 closes HTTP/1.0 connections even when they ask to be kept (RFC 9112 allows it).
        (b"GET /healthz HTTP/1.0", b"Connection: keep-alive\r\n", False),
    ],
)
def test_connections_are_kept_alive_by_the_http_rules(
    guarded: ExporterUnderTest, request_line: bytes, connection: bytes, kept: bool
) -> None:
    assert guarded.server is not None
    request = request_line + b"\r\nHost: x\r\n" + connection + b"\r\n"
    assert closed_after_answer(guarded.server.port, request) is not kept


def test_an_answer_from_the_front_stage_closes_the_connection_the_client_asked_to_close(
    guarded: ExporterUnderTest,
) -> None:
    assert guarded.server is not None
    with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := client.recv(65536):  # ends only when the server closes
            received += chunk
    assert received.startswith(b"HTTP/1.1 401 ")


def test_a_client_that_asks_again_after_a_refusal_waits_for_its_next_answer(
    guarded: ExporterUnderTest,
) -> None:
    """A flood on kept-alive connections gets one refusal a second per connection, not
    thousands: the first answer is at once, the next is held (a lower bound, which load
    cannot break)."""
    assert guarded.server is not None
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"  # no credentials: 401
    with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
        client.sendall(request)
        assert client.recv(65536).startswith(b"HTTP/1.1 401 ")
        client.sendall(request)
        started = time.monotonic()
        assert client.recv(65536).startswith(b"HTTP/1.1 401 ")
        assert time.monotonic() - started >= REPEAT_REFUSAL_HOLD_SECONDS * 0.9


def test_a_client_refused_again_and_again_gets_one_answer_a_second(
    guarded: ExporterUnderTest,
) -> None:
    """From the second refusal on, each answer waits a second: once held by the coroutine,
    then by the resting gate before the head is read; never both (two seconds)."""
    assert guarded.server is not None
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"  # no credentials: 401
    with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
        client.sendall(request)
        assert client.recv(65536).startswith(b"HTTP/1.1 401 ")
        waits = []
        for _ in range(3):
            client.sendall(request)
            started = time.monotonic()
            assert client.recv(65536).startswith(b"HTTP/1.1 401 ")
            waits.append(time.monotonic() - started)
    assert min(waits) >= REPEAT_REFUSAL_HOLD_SECONDS * 0.9, waits
    assert sum(waits) < 5 * REPEAT_REFUSAL_HOLD_SECONDS, waits  # 6 if held twice each


SMUGGLED = (
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: "
    + RIGHT["Authorization"].encode()
    + b"\r\n\r\n"
)
_LENGTH = str(len(SMUGGLED)).encode()


@pytest.mark.parametrize(
    ("framing", "credentials"),
    [
        (b"Content-Length: " + _LENGTH + b"\r\n", False),
        (b"Content-Length: " + _LENGTH + b"\r\n", True),
        (b"Content-Length: 0\r\nContent-Length: " + _LENGTH + b"\r\n", False),
        (b"Content-Length: 0\r\nContent-Length: " + _LENGTH + b"\r\n", True),
        (b"Transfer-Encoding: chunked\r\n", False),
        (b"Content-Length : " + _LENGTH + b"\r\n", True),
    ],
    ids=["body-401", "body-known", "two-lengths-401", "two-lengths-known", "chunked", "space"],
)
def test_a_request_that_carries_another_as_its_body_gets_one_answer_and_a_close(
    guarded: ExporterUnderTest, framing: bytes, credentials: bool
) -> None:
    """Request smuggling: a body left unread would be answered as the next request."""
    assert guarded.server is not None
    authorization = b"Authorization: " + RIGHT["Authorization"].encode() + b"\r\n"
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + (authorization if credentials else b"")
    with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
        client.sendall(head + framing + b"\r\n" + SMUGGLED)
        received = b""
        while chunk := client.recv(65536):  # ends only when the server closes
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")
    assert received.count(b"HTTP/1.1 ") == 1


def test_pipelined_requests_without_bodies_are_each_answered(guarded: ExporterUnderTest) -> None:
    assert guarded.server is not None
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
        client.sendall(request + last)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 ") == 2


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        (b"Host: x\r\n", False),
        (b"Host: x\r\nContent-Length: 0\r\n", False),
        (b"Host: x\r\nContent-Length: 000\r\n", False),
        (b"Host: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n", False),  # they agree
        (b"Host: x\r\nX-Folded: a\r\n continued\r\n", False),  # unfolded, as RFC 9112 allows
        (b"Host: x\r\ncontent-length: 1\r\n", True),
        (b"Host: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n", True),
        (b"Host: x\r\nContent-Length: -0\r\n", True),
        (b"Host: x\r\nContent-Length: 0\r\nContent-Length: 1\r\n", True),
        (b"Host: x\r\nTRANSFER-ENCODING: identity\r\n", True),
        (b"Host: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n", True),
        (b"Host: x\r\nContent-Length\t: 0\r\n", True),
        (b"Host: x\r\nno colon\r\n", True),
        (b"Host: x\r\nHost: y\r\n", True),
        (b"", True),  # HTTP/1.1 without Host
    ],
)
def test_a_framing_the_parser_cannot_trust_gets_400_and_a_close(
    guarded: ExporterUnderTest, headers: bytes, refused: bool
) -> None:
    assert guarded.server is not None
    request = b"GET /healthz HTTP/1.1\r\n" + headers + b"\r\n"
    if not refused:
        assert not closed_after_answer(guarded.server.port, request)
        return
    received = raw_until_closed(guarded.server.port, request)
    assert received.startswith(b"HTTP/1.1 400 ")
    assert received.count(b"HTTP/1.1 ") == 1


def raw_until_closed(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(payload)
        received = b""
        while chunk := client.recv(65536):  # ends only when the server closes
            received += chunk
    return received


@pytest.mark.parametrize("method", [b"POST", b"PUT"])
def test_another_method_carrying_a_request_as_its_body_gets_one_answer(
    guarded: ExporterUnderTest, method: bytes
) -> None:
    assert guarded.server is not None
    head = method + b" /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " + _LENGTH + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
        client.sendall(head + SMUGGLED)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 501 ")
    assert received.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/metrics", "/metrics"),
        ("/metrics?x=1", "/metrics"),
        ("//metrics", "/metrics"),
        ("http://example.test:9100/metrics", "/metrics"),
        ("HTTPS://example.test/healthz?probe", "/healthz"),
        ("http://example.test", "/"),
        ("ftp://example.test/metrics", "ftp://example.test/metrics"),
    ],
)
def test_request_path_reads_origin_and_absolute_form(target: str, path: str) -> None:
    assert request_path(target) == path


def test_an_absolute_form_target_is_answered_as_its_path_and_still_needs_credentials(
    guarded: ExporterUnderTest,
) -> None:
    assert guarded.server is not None
    target = b"GET http://127.0.0.1:%d/metrics HTTP/1.1\r\nHost: x\r\n" % guarded.server.port
    authorization = b"Authorization: " + RIGHT["Authorization"].encode() + b"\r\n"
    for extra, status in ((b"", b"401"), (authorization, b"200")):
        with socket.create_connection(("127.0.0.1", guarded.server.port), timeout=5) as client:
            client.sendall(target + extra + b"Connection: close\r\n\r\n")
            received = b""
            while chunk := client.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"notte_up 1" in received


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer on a kept-alive connection (its head, then Content-Length bytes)."""
    head, body = read_head_and_body(sock)
    return head + b"\r\n\r\n" + body


def test_a_connect_flood_past_the_cap_spares_prometheus_kept_alive_connection(
    guarded: ExporterUnderTest,
) -> None:
    server = MetricsServer(
        ("127.0.0.1", 0),
        exposition=guarded.app.exposition,
        store=guarded.app.store,
        web_config=guarded.app.web_config,
        max_connections=20,
    )
    server.start()
    scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % (
        RIGHT["Authorization"].encode()
    )
    flood: list[socket.socket] = []
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as prometheus:
            prometheus.sendall(scrape)
            assert read_answer(prometheus).startswith(b"HTTP/1.1 200 ")
            first = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            flood = [first] + [
                socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(60)
            ]
            first.settimeout(5)
            assert first.recv(1) == b""  # the oldest of the flood was closed for the others
            prometheus.sendall(scrape)
            assert read_answer(prometheus).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in flood:
            sock.close()
        server.stop()


def listen_queue(port: int) -> int:
    """How many connections the kernel holds for 127.0.0.1:`port` until they are
    accepted, as `ss` reads it (a listening socket's Send-Q)."""
    listed = subprocess.run(
        ["ss", "--listening", "--tcp", "--numeric", "--no-header", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    return int(listed[2])


def test_the_kernel_holds_as_many_waiting_connections_as_the_system_allows(
    guarded: ExporterUnderTest,
) -> None:
    """asyncio listens again with the number it accepts a turn; the server gives the
    kernel back the system's cap, so a connect flood does not fill the queue."""
    assert guarded.server is not None
    assert listen_queue(guarded.server.port) == listen_backlog() > ACCEPTS_PER_TURN


def test_out_of_file_descriptors_the_exporter_says_so_once_and_serves_again() -> None:
    """With its descriptors all taken by clients, accept fails; the server logs one
    error, looks again every second (not in a busy loop), and answers once they go."""
    with ExporterProcess("--demo", "--poll-interval", "60", limit_descriptors=100) as process:
        url = process.wait_listening() + "/healthz"
        wait_until(lambda: httpx.get(url, timeout=5).status_code == 200)
        hogs = [socket.create_connection(("127.0.0.1", process.port)) for _ in range(150)]
        try:
            assert wait_until(lambda: "cannot accept connections" in process.stderr)
        finally:
            for hog in hogs:
                hog.close()
        assert wait_until(lambda: "accepting connections again" in process.stderr, 10)
        assert httpx.get(url, timeout=5).status_code == 200
        assert process.stop() == 0
    assert process.stderr.count("cannot accept connections") == 1, process.stderr


def test_held_bytes_counts_a_shared_body_once_and_whole() -> None:
    body = b"x" * 1_000_000
    heads = [b"HTTP/1.1 200 OK\r\nX-Reader: %d\r\n\r\n" % i for i in range(50)]
    answers = [outgoing((head, body)) for head in heads]  # fifty readers of one cached body
    answers[0][1] = answers[0][1][999_000:]  # one nearly sent: its view still holds the body
    assert held_bytes(answers) == sum(map(len, heads)) + len(body)
    assert held_bytes([None, []]) == 0
