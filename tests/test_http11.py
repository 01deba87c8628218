"""The one HTTP/1.1 parser, over raw sockets: no request smuggling, no cut scrapes.

Every smuggling case is tried over plain HTTP and TLS, with and without basic auth:
each gets one answer (a 400) and a close, never a second answer for the request its
body carries. Then the floods: 1,500 idle connections (past the 1,000 cap) cut neither
an authorised scrape being written nor Prometheus's kept-alive connection, and a
wrong-password flood from three other addresses, started before anything was cached,
still lets authorised scrapes through within a second. Bounded: loopback only, each
flood from a process of its own (`tests.hostile_peer`) for a few seconds.
"""

from __future__ import annotations

import base64
import collections
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.simulator import SimulatedNotte, SimulatorServer
from exporter.web.connections import MAX_CONNECTIONS
from exporter.web.webconfig import load_web_config
from tests.certs import Certs, make_certs
from tests.harness import API_KEY, ExporterUnderTest, make_settings, parse_samples, value
from tests.http11_peer import read_head_and_body

PASSWORD = "h11-scrape-password"
CHEAP_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
COSTLY_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()  # ~60 ms
AUTHORIZATION = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextmanager
def exporter_with(
    api: SimulatorServer, folder: Path, *, tls: bool, users: str | None
) -> Iterator[ExporterUnderTest]:
    """An exporter serving with this web config (its certificates in `folder`)."""
    config = TLS if tls else ""
    if users:
        config += f"basic_auth_users:\n  prometheus: '{users}'\n"
    path = folder / "web.yml"
    path.write_text(config)
    exporter = ExporterUnderTest(make_settings(api.url), web_config=load_web_config(path))
    exporter.start_http()
    try:
        assert exporter.cycle()
        yield exporter
    finally:
        exporter.close()


def connect(port: int, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(sock, server_hostname="localhost") if context else sock


def until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):  # ends only when the server closes
            received += chunk
    except (ssl.SSLError, ConnectionResetError):
        pass  # a TLS close without its goodbye, once the answer is in
    return received


# --- request smuggling ----------------------------------------------------------------------------

SMUGGLED = (
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTHORIZATION.encode() + b"\r\n\r\n"
)
_LENGTH = str(len(SMUGGLED)).encode()
FRAMINGS = {
    "body": b"Content-Length: " + _LENGTH + b"\r\n",
    "two-lengths": b"Content-Length: 0\r\nContent-Length: " + _LENGTH + b"\r\n",
    "chunked": b"Transfer-Encoding: chunked\r\n",
    "chunked-and-length": b"Content-Length: " + _LENGTH + b"\r\nTransfer-Encoding: chunked\r\n",
    "space-before-colon": b"Content-Length : " + _LENGTH + b"\r\n",
    "tab-in-name": b"Content-Length\t: " + _LENGTH + b"\r\n",
    "identity": b"Transfer-Encoding: identity\r\nContent-Length: " + _LENGTH + b"\r\n",
}


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
@pytest.mark.parametrize("auth", [False, True], ids=["open", "basic-auth"])
def test_every_smuggling_case_gets_one_answer_and_a_close(
    module_api: SimulatorServer, certs: Certs, tls: bool, auth: bool
) -> None:
    context = ssl.create_default_context(cafile=str(certs.ca)) if tls else None
    with exporter_with(module_api, certs.folder, tls=tls, users=CHEAP_HASH if auth else None) as e:
        assert e.server is not None
        for name, framing in FRAMINGS.items():
            for credentials in (False, True):
                head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                if credentials:
                    head += b"Authorization: " + AUTHORIZATION.encode() + b"\r\n"
                with connect(e.server.port, context) as sock:
                    sock.sendall(head + framing + b"\r\n" + SMUGGLED)
                    received = until_closed(sock)
                assert received.startswith(b"HTTP/1.1 400 "), (name, credentials, received[:40])
                assert received.count(b"HTTP/1.1 ") == 1, (name, credentials)
        # Requests without bodies, pipelined, are each answered on the one connection.
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with connect(e.server.port, context) as sock:
            sock.sendall(request * 3 + last)
            assert until_closed(sock).count(b"HTTP/1.1 200 ") == 4


def test_a_head_request_gets_the_length_and_no_body_and_the_next_request_is_answered(
    module_api: SimulatorServer, certs: Certs
) -> None:
    with exporter_with(module_api, certs.folder, tls=False, users=None) as exporter:
        assert exporter.server is not None
        with connect(exporter.server.port, None) as sock:
            sock.sendall(
                b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            received = until_closed(sock)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0]) > 1000
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body between the two answers
    assert rest.endswith(b"\r\n\r\nok\n")


# --- floods ---------------------------------------------------------------------------------------


@contextmanager
def hostile(
    port: int, mode: str, connections: int, source: str = "127.0.0.1"
) -> Iterator[collections.Counter[str]]:
    """Hostile connections from a process of their own while the block runs; then the
    tally of what the server did to them."""
    peer = subprocess.Popen(
        [sys.executable, "-m", "tests.hostile_peer", "--port", str(port), "--mode", mode,
         "--connections", str(connections), "--source", source],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    tally: collections.Counter[str] = collections.Counter()
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "ready"
        yield tally
    finally:
        out, _ = peer.communicate(input="", timeout=30)
    tally.update(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def big_api() -> Iterator[SimulatorServer]:
    """Enough sessions for an answer of megabytes: more than the sockets' buffers hold."""
    world = SimulatedNotte(seed=5)
    world.populate(active=6000)
    with SimulatorServer(world, api_key=API_KEY) as server:
        yield server


def test_a_connect_flood_cuts_neither_a_scrape_being_written_nor_the_kept_alive_connection(
    big_api: SimulatorServer, tmp_path: Path
) -> None:
    scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % (
        AUTHORIZATION.encode()
    )
    with ExitStack() as stack:
        exporter = stack.enter_context(
            exporter_with(big_api, tmp_path, tls=False, users=CHEAP_HASH)
        )
        assert exporter.server is not None
        port = exporter.server.port
        prometheus = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        prometheus.sendall(scrape)
        head, body = read_head_and_body(prometheus)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert len(body) > 8 * 1024 * 1024, len(body)  # more than the socket buffers take
        slow = socket.socket()
        stack.enter_context(slow)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect(("127.0.0.1", port))
        slow.sendall(scrape)
        first = slow.recv(1024)
        assert first.startswith(b"HTTP/1.1 200 ")  # and the rest is still being written
        head, _, rest = first.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0])
        with hostile(port, "idle", 1500) as tally:
            received = bytearray(rest)
            while len(received) < length:
                chunk = slow.recv(1 << 20)
                assert chunk, "the scrape being written was cut"
                received += chunk
            prometheus.sendall(scrape)
            head, again = read_head_and_body(prometheus)
            assert head.startswith(b"HTTP/1.1 200 ")
    assert value(parse_samples(received.decode()), "notte_up") == 1
    assert value(parse_samples(again.decode()), "notte_up") == 1
    assert tally["closed"] >= 1500 + 2 - MAX_CONNECTIONS - 100, tally  # the flood's own


def test_a_wrong_password_flood_before_any_scrape_lets_authorised_scrapes_through(
    module_api: SimulatorServer, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        exporter = stack.enter_context(
            exporter_with(module_api, tmp_path, tls=False, users=COSTLY_HASH)
        )
        assert exporter.server is not None
        tallies = [
            stack.enter_context(hostile(exporter.server.port, "wrong-password", 100, source))
            for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4")
        ]
        durations = []
        for _ in range(4):  # the first with nothing cached, then cached
            started = time.monotonic()
            response = httpx.get(
                exporter.url + "/metrics", headers={"Authorization": AUTHORIZATION}, timeout=5
            )
            durations.append(time.monotonic() - started)
            assert response.status_code == 200
            assert value(parse_samples(response.text), "notte_up") == 1
    # Real time is the behaviour: Prometheus times a scrape out; within a second, on two
    # busy cores, while bcrypt (cost 10) works through the flood's checks.
    assert max(durations) < 1.0, durations
    for tally in tallies:
        assert tally["401"] > 0, tally  # checked, and refused
        assert tally["429"] > 0, tally  # past the bound for its address: refused at once
