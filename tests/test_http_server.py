"""The HTTP side: TLS, client certificates, basic auth and headers from the web config,
and a server that keeps answering through slow, malformed and numerous clients."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter import __version__
from exporter.simulator import SimulatorServer
from exporter.web.http_server import MetricsServer
from exporter.web.negotiation import wants_gzip, wants_openmetrics
from exporter.web.webconfig import WebConfigWatcher, load_web_config
from tests.certs import Certs, make_certs
from tests.harness import (
    API_KEY,
    ExporterUnderTest,
    make_settings,
    parse_samples,
    run_cli,
    value,
    wait_until,
)
from tests.process import ExporterProcess

PASSWORD = "s3cret-scrape-pw"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "deny",
    "Content-Security-Policy": "default-src 'none'",
}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def web_dir(tmp_path: Path, certs: Certs) -> Path:
    """A folder with the certificates, for web configs with relative paths."""
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(certs.folder / name, tmp_path / name)
    return tmp_path


def client_context(certs: Certs, *, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    return context


def serve(api: SimulatorServer, web_dir: Path, config: str) -> ExporterUnderTest:
    """An exporter serving with this web config, after one successful cycle."""
    path = web_dir / "web.yml"
    path.write_text(config)
    exporter = ExporterUnderTest(make_settings(api.url), web_config=load_web_config(path))
    exporter.start_http()
    assert exporter.cycle()
    return exporter


@pytest.fixture(scope="module")
def plain(module_api: SimulatorServer) -> Iterator[ExporterUnderTest]:
    exporter = ExporterUnderTest(make_settings(module_api.url))
    exporter.start_http()
    assert exporter.cycle()
    yield exporter
    exporter.close()


# --- TLS --------------------------------------------------------------------------------------

TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"


def test_tls_covers_every_endpoint_and_plain_http_gets_nothing(
    module_api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    exporter = serve(module_api, web_dir, TLS)
    try:
        assert exporter.url.startswith("https://")
        with httpx.Client(verify=client_context(certs), timeout=5) as client:
            for path in ("/", "/metrics", "/healthz", "/readyz"):
                assert client.get(exporter.url + path).status_code == 200, path
            samples = parse_samples(client.get(exporter.url + "/metrics").text)
            assert value(samples, "notte_session_status", session_id="a1", status="active") == 1
        with pytest.raises(httpx.TransportError):
            httpx.get(exporter.url.replace("https://", "http://") + "/metrics", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a server certificate nobody vouches for
            httpx.get(exporter.url + "/metrics", timeout=5)
        with httpx.Client(verify=client_context(certs), timeout=5) as client:
            assert client.get(exporter.url + "/metrics").status_code == 200
    finally:
        exporter.close()


# client_auth_type -> whether a client gets through with no certificate, with one the
# CA signed, and with one it did not sign. (RequireAnyClientCert is stricter than Go:
# see webconfig.build_ssl_context.)
CLIENT_AUTH_OUTCOMES = {
    "NoClientCert": (True, True, True),
    "RequestClientCert": (True, True, True),
    "RequireAnyClientCert": (False, True, False),
    "VerifyClientCertIfGiven": (True, True, False),
    "RequireAndVerifyClientCert": (False, True, False),
}


@pytest.mark.parametrize("client_auth_type", list(CLIENT_AUTH_OUTCOMES))
def test_every_client_auth_type_is_enforced_by_the_server(
    module_api: SimulatorServer, web_dir: Path, certs: Certs, client_auth_type: str
) -> None:
    needs_ca = client_auth_type not in ("NoClientCert", "RequestClientCert")
    config = TLS + f"  client_auth_type: {client_auth_type}\n"
    exporter = serve(
        module_api, web_dir, config + ("  client_ca_file: ca.crt\n" if needs_ca else "")
    )
    clients = [
        client_context(certs),
        client_context(certs, cert=(certs.client_crt, certs.client_key)),
        client_context(certs, cert=(certs.other_crt, certs.other_key)),
    ]
    try:
        for context, allowed in zip(clients, CLIENT_AUTH_OUTCOMES[client_auth_type], strict=True):
            with httpx.Client(verify=context, timeout=5) as client:
                if allowed:
                    for path in ("/metrics", "/healthz", "/readyz"):
                        assert client.get(exporter.url + path).status_code == 200, path
                else:
                    # TLS 1.3 reports a refused client certificate after the client's side of
                    # the handshake, so the failure may surface on the request or the answer.
                    with pytest.raises(httpx.TransportError):
                        client.get(exporter.url + "/healthz")
    finally:
        exporter.close()


def test_min_version_refuses_older_clients(
    module_api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    exporter = serve(module_api, web_dir, TLS + "  min_version: TLS13\n")
    old = client_context(certs)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with httpx.Client(verify=client_context(certs), timeout=5) as client:
            assert client.get(exporter.url + "/healthz").status_code == 200
        with httpx.Client(verify=old, timeout=5) as client, pytest.raises(httpx.ConnectError):
            client.get(exporter.url + "/healthz")
    finally:
        exporter.close()


# --- basic auth and headers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(
    module_api: SimulatorServer, certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExporterUnderTest]:
    web_dir = tmp_path_factory.mktemp("guarded")
    headers = "".join(f'    {name}: "{text}"\n' for name, text in HEADERS.items())
    config = (
        f"basic_auth_users:\n  prometheus: '{HASH}'\nhttp_server_config:\n  headers:\n{headers}"
    )
    exporter = serve(module_api, web_dir, config)
    yield exporter
    exporter.close()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "path", ["/", "/metrics", "/metrics?name[]=notte_up", "/nowhere", "//metrics"]
)
def test_basic_auth_guards_every_endpoint_but_the_probes(
    guarded: ExporterUnderTest, method: str, path: str
) -> None:
    url = guarded.url + path
    for credentials in ({}, basic("prometheus", "wrong"), basic("intruder", PASSWORD)):
        refused = httpx.request(method, url, headers=credentials, timeout=5)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic ")
        assert b"notte_" not in refused.content
    allowed = httpx.request(method, url, headers=basic("prometheus", PASSWORD), timeout=5)
    # (http.server reads a leading "//" as "/".)
    assert allowed.status_code == (404 if path == "/nowhere" else 200)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_need_no_credentials(guarded: ExporterUnderTest, path: str) -> None:
    assert httpx.get(guarded.url + path, timeout=5).status_code == 200
    assert httpx.head(guarded.url + path, timeout=5).status_code == 200


def test_configured_headers_are_on_every_response(guarded: ExporterUnderTest) -> None:
    auth = basic("prometheus", PASSWORD)
    responses = [
        httpx.get(guarded.url + "/metrics", headers=auth, timeout=5),
        httpx.get(guarded.url + "/metrics", headers={**auth, "Accept-Encoding": "gzip"}, timeout=5),
        httpx.get(guarded.url + "/", headers=auth, timeout=5),
        httpx.get(guarded.url + "/nowhere", headers=auth, timeout=5),
        httpx.get(guarded.url + "/metrics", timeout=5),  # 401
        httpx.get(guarded.url + "/healthz", timeout=5),
        httpx.get(guarded.url + "/readyz", timeout=5),
    ]
    assert sorted({r.status_code for r in responses}) == [200, 401, 404]
    for response in responses:
        for name, text in HEADERS.items():
            assert response.headers.get(name) == text, (response.url, name)
        # The product and version only: no Python version, no trailing space.
        assert response.headers["Server"] == f"notte-exporter/{__version__}"


def test_tls_and_basic_auth_from_the_command_line(
    module_api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    (web_dir / "web.yml").write_text(
        TLS + f"basic_auth_users:\n  prometheus: '{HASH}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    with ExporterProcess(
        "--web-config-file", "web.yml", "--poll-interval", "60",
        cwd=web_dir, env={"NOTTE_API_URL": module_api.url, "NOTTE_API_KEY": API_KEY},
    ) as process:  # fmt: skip
        url = process.wait_listening()
        assert url.startswith("https://")
        with httpx.Client(verify=client_context(certs), timeout=5) as client:
            wait_until(lambda: client.get(url + "/readyz").status_code == 200)
            assert client.get(url + "/metrics").status_code == 401
            scrape = client.get(url + "/metrics", headers=basic("prometheus", PASSWORD))
            assert scrape.status_code == 200
            assert scrape.headers["X-Frame-Options"] == "deny"
            samples = parse_samples(scrape.text)
        assert process.stop() == 0
    assert value(samples, "notte_session_status", session_id="a1", status="active") == 1
    assert value(samples, "notte_up") == 1


def test_the_running_program_applies_a_changed_web_config_without_a_restart(
    module_api: SimulatorServer, web_dir: Path
) -> None:
    path = web_dir / "web.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    old, new = basic("prometheus", PASSWORD), basic("prometheus", "rotated-password")
    with ExporterProcess(
        "--web.config.file", str(path), "--poll-interval", "60",
        env={"NOTTE_API_URL": module_api.url, "NOTTE_API_KEY": API_KEY},
    ) as process:  # fmt: skip
        url = process.wait_listening() + "/metrics"
        assert httpx.get(url, headers=old, timeout=5).status_code == 200
        path.write_text(users("rotated-password"))
        wait_until(lambda: httpx.get(url, headers=new, timeout=5).status_code == 200)
        assert httpx.get(url, headers=old, timeout=5).status_code == 401
        assert process.stop() == 0


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tls_server_config:\n  cert_file: server.crt\n key_file: [\n", "not valid YAML at line"),
        ("basic_auth_users:\n  prometheus: hunter2-plaintext\n", "basic_auth_users.prometheus"),
        ("tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n", "cert_file"),
    ],
    ids=["yaml", "plaintext-password", "missing-cert"],
)
def test_a_malformed_web_config_exits_2_at_start_with_one_line(
    web_dir: Path, text: str, named: str
) -> None:
    (web_dir / "web.yml").write_text(text)
    result = run_cli(
        "--web-config-file", str(web_dir / "web.yml"), "--listen-address", "127.0.0.1:0",
        env={"NOTTE_API_KEY": API_KEY}, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "web.yml" in lines[0]
    assert "hunter2" not in result.stderr
    assert result.stdout == ""


def test_a_scrape_every_few_seconds_does_not_pay_bcrypt_each_time(
    guarded: ExporterUnderTest, checkpw_calls: list[bytes]
) -> None:
    auth = basic("prometheus", PASSWORD)
    for _ in range(10):
        assert httpx.get(guarded.url + "/metrics", headers=auth, timeout=5).status_code == 200
    assert len(checkpw_calls) <= 1


# --- hostile clients ------------------------------------------------------------------------------


# A scrape stuck behind silent or malformed clients waits out the 10 s header deadline;
# a prompt one is answered in milliseconds. Real time is the behaviour (sockets and
# worker threads, no clock to inject), and 3 s leaves a busy machine plenty of slack.
PROMPTLY = 3.0


def timed_scrape(url: str, **kwargs: object) -> float:
    started = time.monotonic()
    response = httpx.get(url + "/metrics", timeout=5, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert parse_samples(response.text)
    return time.monotonic() - started


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send bytes, read what comes back until the server closes (or 5 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with contextlib.suppress(OSError):  # the server may refuse before reading it all
            sock.sendall(payload)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_silent_and_malformed_clients_do_not_stop_other_scrapes(
    plain: ExporterUnderTest,
) -> None:
    assert plain.server is not None
    port = plain.server.port
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", port), timeout=5)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never finishes
    try:
        assert timed_scrape(plain.url) < PROMPTLY
        huge_header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert raw_exchange(port, huge_header).startswith(b"HTTP/1.1 431")
        # Each with its Host: an HTTP/1.1 request without one is a 400 (RFC 9112 3.2) first.
        many_headers = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 500 + b"\r\n"
        assert raw_exchange(port, many_headers).startswith(b"HTTP/1.1 431")
        long_target = b"GET /" + b"m" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert raw_exchange(port, long_target).startswith(b"HTTP/1.1 414")
        # No protocol version in the request line: the answer is HTTP/0.9, a bare error page.
        assert b"400" in raw_exchange(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        assert b"400" in raw_exchange(port, b"BREW /coffee HTCPCP/1.0\r\n\r\n")
        post = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        assert raw_exchange(port, post)[:12] == b"HTTP/1.1 501"
        for _ in range(3):
            assert timed_scrape(plain.url) < PROMPTLY
    finally:
        for sock in [*silent, half]:
            sock.close()
    assert plain.get("/healthz").status_code == 200


def test_a_silent_client_does_not_hold_up_tls_handshakes(
    module_api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    exporter = serve(module_api, web_dir, TLS)
    assert exporter.server is not None
    silent = [socket.create_connection(("127.0.0.1", exporter.server.port), timeout=5)]
    silent[0].sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    silent.append(socket.create_connection(("127.0.0.1", exporter.server.port), timeout=5))
    try:
        assert timed_scrape(exporter.url, verify=client_context(certs)) < PROMPTLY
    finally:
        for sock in silent:
            sock.close()
        exporter.close()


def test_fifty_parallel_scrapes_all_get_a_whole_exposition(plain: ExporterUnderTest) -> None:
    barrier = threading.Barrier(50)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)

    def scrape(client: httpx.Client, index: int) -> float:
        barrier.wait(timeout=10)
        headers = {"Accept-Encoding": "gzip"} if index % 2 else {}
        if index % 5 == 0:
            headers["Accept"] = "application/openmetrics-text"
        started = time.monotonic()
        response = client.get(plain.url + "/metrics", headers=headers)
        assert response.status_code == 200
        if index % 5 == 0:
            assert response.text.endswith("# EOF\n")
        else:
            samples = parse_samples(response.text)
            assert value(samples, "notte_session_status", session_id="a1", status="active") == 1
        return time.monotonic() - started

    with (
        httpx.Client(limits=limits, timeout=10) as client,
        ThreadPoolExecutor(max_workers=50) as pool,
    ):
        durations = list(pool.map(lambda index: scrape(client, index), range(50)))
    assert len(durations) == 50
    assert max(durations) < 5  # fifty at once on two cores: seconds at worst, never a stall
    assert timed_scrape(plain.url) < PROMPTLY


def test_keep_alive_scrapes_do_not_wait_for_a_delayed_ack(plain: ExporterUnderTest) -> None:
    # Headers and body in two writes, with Nagle's algorithm on, stall every
    # scrape on a kept-alive connection by the client's delayed ACK (~40 ms).
    latencies = []
    with httpx.Client(timeout=5) as client:
        assert client.get(plain.url + "/metrics").status_code == 200
        for index in range(12):
            headers = {"Accept-Encoding": "gzip"} if index % 2 else {}
            started = time.perf_counter()
            assert client.get(plain.url + "/metrics", headers=headers).status_code == 200
            latencies.append(time.perf_counter() - started)
    # The stall is the behaviour, in real time: 40 ms a scrape; the median of twelve rides
    # out a busy machine's odd slow one.
    assert statistics.median(latencies) < 0.025, latencies


# --- content negotiation --------------------------------------------------------------------------

# What Prometheus 3 sends by default.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip ; q=0.000", False),
        ("gzip;q=0.001", True),
        ("gzip;q=2", False),  # not a q-value: the element is dropped
        ("gzip;q=high", False),
        ("deflate, br", False),
        ("identity", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("br, *;q=0.1", True),
        ("gzip;q=0.5", True),  # identity not named: no preference stated for it
        ("gzip;q=0.5, identity", False),
        ("gzip;q=0.5, identity;q=0.4", True),
        ("gzip;q=0.5, *", False),  # `*` stands for identity too
        ("identity;q=0, gzip", True),
    ],
)
def test_accept_encoding_is_read_with_its_q_values(header: str | None, gzip: bool) -> None:
    assert wants_gzip(header) is gzip


@pytest.mark.parametrize(
    ("header", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("application/openmetrics-text", True),
        ("Application/OpenMetrics-Text; version=1.0.0", True),
        ("application/openmetrics-text;version=2.0.0", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=0, text/plain", False),
        ("application/openmetrics-text;q=0.5, text/plain", False),
        ("application/openmetrics-text;q=0.5, */*", False),
        ("application/openmetrics-text;q=0.5, text/plain;q=0.4, */*", True),
        ("text/*;q=0.9, application/openmetrics-text", True),
        ("text/plain;q=0.3, application/openmetrics-text;q=0.3", True),
        (PROMETHEUS_ACCEPT, True),
        ("text/plain;version=0.0.4;q=0.3,*/*;q=0.2", False),
    ],
)
def test_accept_picks_openmetrics_only_when_preferred(
    header: str | None, openmetrics: bool
) -> None:
    assert wants_openmetrics(header) is openmetrics


def test_metrics_are_negotiated_by_q_values(plain: ExporterUnderTest) -> None:
    refused = plain.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused.headers
    assert parse_samples(refused.text)
    zipped = plain.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert parse_samples(zipped.text)
    prometheus = plain.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert prometheus.headers["Content-Type"].startswith("application/openmetrics-text")
    assert prometheus.text.endswith("# EOF\n")
    declined = plain.get("/metrics", headers={"Accept": "application/openmetrics-text;q=0, */*"})
    assert declined.headers["Content-Type"].startswith("text/plain; version=0.0.4")


# --- web config changes without a restart ---------------------------------------------------------


def replace(path: Path, content: str | bytes) -> None:
    """Rewrite a file the way Kubernetes and cert-manager do: a new file renamed over it."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(content.encode() if isinstance(content, str) else content)
    os.replace(staged, path)


@contextlib.contextmanager
def reloading(exporter: ExporterUnderTest, web_config: WebConfigWatcher) -> Iterator[str]:
    """A server for `exporter` that follows `web_config`; yields its URL."""
    server = MetricsServer(
        ("127.0.0.1", 0),
        exposition=exporter.app.exposition,
        store=exporter.app.store,
        web_config=web_config,
    )
    server.start()
    try:
        yield f"{server.scheme}://127.0.0.1:{server.port}"
    finally:
        server.stop()


def users(password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"basic_auth_users:\n  prometheus: '{hashed}'\n"


def test_a_changed_password_applies_to_the_next_request_and_a_bad_file_changes_nothing(
    plain: ExporterUnderTest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(users("old-password"))
    old, new = basic("prometheus", "old-password"), basic("prometheus", "new-password")
    with reloading(plain, WebConfigWatcher(path, check_interval=0)) as url:
        assert httpx.get(url + "/metrics", headers=old, timeout=5).status_code == 200
        replace(path, users("new-password"))
        assert httpx.get(url + "/metrics", headers=old, timeout=5).status_code == 401
        assert httpx.get(url + "/metrics", headers=new, timeout=5).status_code == 200
        with caplog.at_level(logging.ERROR, logger="exporter"):
            replace(path, "basic_auth_users:\n  prometheus: hunter2-plaintext\n")
            for _ in range(3):
                assert httpx.get(url + "/metrics", headers=new, timeout=5).status_code == 200
                assert httpx.get(url + "/metrics", headers=old, timeout=5).status_code == 401
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # once, not once per look
    assert "basic_auth_users.prometheus" in errors[0]
    assert "last good web config" in errors[0]
    assert "hunter2" not in errors[0]


def test_a_rotated_certificate_is_served_to_the_next_connection(
    plain: ExporterUnderTest, web_dir: Path, certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rotated = make_certs(tmp_path_factory.mktemp("rotated"))  # another CA, another server cert
    path = web_dir / "web.yml"
    path.write_text(TLS)
    with reloading(plain, WebConfigWatcher(path, check_interval=0)) as url:
        with httpx.Client(verify=client_context(certs), timeout=5) as client:
            assert client.get(url + "/healthz").status_code == 200
        replace(web_dir / "server.key", rotated.server_key.read_bytes())
        replace(web_dir / "server.crt", rotated.server_crt.read_bytes())
        with httpx.Client(verify=client_context(rotated), timeout=5) as client:
            assert client.get(url + "/healthz").status_code == 200
        with (
            httpx.Client(verify=client_context(certs), timeout=5) as client,
            pytest.raises(httpx.ConnectError),
        ):
            client.get(url + "/healthz")


def test_reload_web_config_applies_a_change_at_once(
    plain: ExporterUnderTest, tmp_path: Path
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(users("old-password"))
    server = MetricsServer(
        ("127.0.0.1", 0),
        exposition=plain.app.exposition,
        store=plain.app.store,
        web_config=WebConfigWatcher(path, check_interval=3600),  # only reload() looks
    )
    server.start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        replace(path, users("new-password"))
        assert httpx.get(url, headers=basic("prometheus", "old-password")).status_code == 200
        assert server.reload_web_config()
        assert httpx.get(url, headers=basic("prometheus", "new-password")).status_code == 200
        replace(path, "basic_auth_users: [\n")
        assert not server.reload_web_config()
        assert httpx.get(url, headers=basic("prometheus", "new-password")).status_code == 200
    finally:
        server.stop()


def test_a_reload_that_keeps_the_users_keeps_their_cached_credentials(
    plain: ExporterUnderTest, tmp_path: Path, checkpw_calls: list[bytes]
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(users("password"))
    auth = basic("prometheus", "password")
    with reloading(plain, WebConfigWatcher(path, check_interval=0)) as url:
        assert httpx.get(url + "/metrics", headers=auth, timeout=5).status_code == 200
        replace(
            path, path.read_text() + "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        )
        response = httpx.get(url + "/metrics", headers=auth, timeout=5)
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "deny"  # the new config is in force
    assert len(checkpw_calls) == 1  # and the password was not checked again
