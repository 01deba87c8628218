"""The HTTP side: TLS, client certificates, basic auth and headers from the web config,
and a server that keeps answering through slow, malformed and numerous clients."""

from __future__ import annotations

import base64
import contextlib
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

from exporter import __version__, http_server
from exporter.basicauth import BasicAuthVerifier
from exporter.simulator import SimulatedNotte, SimulatorServer
from exporter.webconfig import WebConfigError, load_web_config
from tests.certs import Certs, make_certs
from tests.harness import (
    API_KEY,
    ExporterUnderTest,
    make_settings,
    parse_samples,
    reachable_strings,
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


@pytest.fixture(scope="module")
def api() -> Iterator[SimulatorServer]:
    world = SimulatedNotte(seed=4)
    world.add_session("a1")
    with SimulatorServer(world, api_key=API_KEY) as server:
        yield server


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
def plain(api: SimulatorServer) -> Iterator[ExporterUnderTest]:
    exporter = ExporterUnderTest(make_settings(api.url))
    exporter.start_http()
    assert exporter.cycle()
    yield exporter
    exporter.close()


# --- TLS --------------------------------------------------------------------------------------

TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"


def test_tls_covers_every_endpoint_and_plain_http_gets_nothing(
    api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    exporter = serve(api, web_dir, TLS)
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


def test_require_and_verify_client_cert_refuses_missing_and_unknown_certificates(
    api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    exporter = serve(api, web_dir, MTLS)
    try:
        refused = [
            client_context(certs),
            client_context(certs, cert=(certs.other_crt, certs.other_key)),
        ]
        for context in refused:
            with (
                httpx.Client(verify=context, timeout=5) as client,
                pytest.raises(httpx.TransportError),
            ):
                client.get(exporter.url + "/healthz")
        trusted = client_context(certs, cert=(certs.client_crt, certs.client_key))
        with httpx.Client(verify=trusted, timeout=5) as client:
            for path in ("/metrics", "/healthz", "/readyz"):
                assert client.get(exporter.url + path).status_code == 200, path
    finally:
        exporter.close()


# --- basic auth and headers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(
    api: SimulatorServer, certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExporterUnderTest]:
    web_dir = tmp_path_factory.mktemp("guarded")
    headers = "".join(f'    {name}: "{text}"\n' for name, text in HEADERS.items())
    config = (
        f"basic_auth_users:\n  prometheus: '{HASH}'\nhttp_server_config:\n  headers:\n{headers}"
    )
    exporter = serve(api, web_dir, config)
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
    api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    (web_dir / "web.yml").write_text(
        TLS + f"basic_auth_users:\n  prometheus: '{HASH}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    with ExporterProcess(
        "--web-config-file", "web.yml", "--poll-interval", "60",
        cwd=web_dir, env={"NOTTE_API_URL": api.url, "NOTTE_API_KEY": API_KEY},
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


# --- webconfig unit tests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("tls_server_config:\n  cert_file: server.crt\n", "tls_server_config.key_file"),
        (TLS + "  min_version: TLS9\n", "tls_server_config.min_version"),
        (
            TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file",
        ),
        ("basic_auth_users:\n  bob: 12345\n", "basic_auth_users.bob"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allowall\n", "X-Frame-Options"),
        ("bogus: 1\n", "bogus"),
    ],
)
def test_web_config_errors_name_the_key(web_dir: Path, text: str, key: str) -> None:
    (web_dir / "web.yml").write_text(text)
    with pytest.raises(WebConfigError, match=key.replace(".", r"\.")):
        load_web_config(web_dir / "web.yml")


def test_basic_auth_pays_bcrypt_once_per_good_password(checkpw_calls: list[bytes]) -> None:
    verifier = BasicAuthVerifier({"prometheus": HASH.encode()})
    good = basic("prometheus", PASSWORD)["Authorization"]
    bad = basic("prometheus", "nope")["Authorization"]
    for _ in range(5):
        assert verifier.check(good)
    assert len(checkpw_calls) == 1
    for _ in range(3):
        assert not verifier.check(bad)
    assert len(checkpw_calls) == 4  # failures are never cached


def test_a_scrape_every_few_seconds_does_not_pay_bcrypt_each_time(
    guarded: ExporterUnderTest, checkpw_calls: list[bytes]
) -> None:
    auth = basic("prometheus", PASSWORD)
    for _ in range(10):
        assert httpx.get(guarded.url + "/metrics", headers=auth, timeout=5).status_code == 200
    assert len(checkpw_calls) <= 1


def test_basic_auth_never_keeps_the_password() -> None:
    verifier = BasicAuthVerifier({"prometheus": HASH.encode()})
    header = basic("prometheus", PASSWORD)["Authorization"]
    assert verifier.check(header)
    held = list(reachable_strings(verifier))
    assert held
    assert not any(PASSWORD.encode() in item for item in held)
    assert not any(header.split()[1].encode() in item for item in held)


# --- hostile clients ------------------------------------------------------------------------------


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
        assert timed_scrape(plain.url) < 1.0
        huge_header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert raw_exchange(port, huge_header).startswith(b"HTTP/1.1 431")
        many_headers = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 500 + b"\r\n"
        assert raw_exchange(port, many_headers).startswith(b"HTTP/1.1 431")
        long_target = b"GET /" + b"m" * 100_000 + b" HTTP/1.1\r\n\r\n"
        assert raw_exchange(port, long_target).startswith(b"HTTP/1.1 414")
        # No protocol version in the request line: the answer is HTTP/0.9, a bare error page.
        assert b"400" in raw_exchange(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        assert b"400" in raw_exchange(port, b"BREW /coffee HTCPCP/1.0\r\n\r\n")
        assert (
            raw_exchange(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")[:12]
            == b"HTTP/1.1 501"
        )
        for _ in range(3):
            assert timed_scrape(plain.url) < 1.0
    finally:
        for sock in [*silent, half]:
            sock.close()
    assert plain.get("/healthz").status_code == 200


def test_a_silent_client_is_cut_off_after_the_connection_timeout(
    plain: ExporterUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_server._Handler, "timeout", 0.5)
    assert plain.server is not None
    with socket.create_connection(("127.0.0.1", plain.server.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # the server closed it
        assert time.monotonic() - started < 3


def test_a_silent_client_does_not_hold_up_tls_handshakes(
    api: SimulatorServer, web_dir: Path, certs: Certs
) -> None:
    exporter = serve(api, web_dir, TLS)
    assert exporter.server is not None
    silent = [socket.create_connection(("127.0.0.1", exporter.server.port), timeout=5)]
    silent[0].sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    silent.append(socket.create_connection(("127.0.0.1", exporter.server.port), timeout=5))
    try:
        assert timed_scrape(exporter.url, verify=client_context(certs)) < 1.0
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
    assert max(durations) < 5
    assert timed_scrape(plain.url) < 1.0


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
    assert statistics.median(latencies) < 0.025, latencies
