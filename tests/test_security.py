"""Secrets stay secret and hostile text stays text.

The API key never shows in a log (any level, either format), an exception, a
traceback, `/metrics` or any page. Session IDs and error messages from the
configuration or the API are percent-encoded in URLs and escaped in labels, so
the exposition always parses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import struct
import time
import traceback
from pathlib import Path
from urllib.parse import unquote

import bcrypt
import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from pydantic import SecretStr

from exporter.metrics.selfmetrics import create_self_metrics
from exporter.notte.apikey import ApiKeySource
from exporter.notte.client import NotteClient, NotteError
from exporter.simulator import Fault, SimulatedNotte, SimulatorServer
from exporter.web.webconfig import load_web_config
from tests.harness import (
    ExporterUnderTest,
    Serve,
    assert_promtool_accepts,
    exporter_for,
    make_settings,
    parse_samples,
    value,
    wait_until,
)
from tests.process import ExporterProcess

# Distinctive, so that a match can only be a leak.
SECRET = "sk-notte-Q7vX2mZp9RkL4wT8"
WRONG_SECRET = "sk-notte-OLDKEY-h3Jd8sQ1"


@pytest.fixture
def secret_api(world: SimulatedNotte, serve: Serve) -> SimulatorServer:
    """The fake API, with the distinctive key."""
    return serve(world, api_key=SECRET)


def _assert_no_secret(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in (SECRET, WRONG_SECRET):
        # Not the key, nor most of it, nor its base64.
        for form in (secret, secret[3:], base64.b64encode(secret.encode()).decode()):
            assert form.encode() not in data, f"the API key leaked into {where}"


def _reset_a_scrape(url: str) -> None:
    """Ask for /metrics many times over, on a connection whose client reads one byte, and
    reset it while the answers are written: a traceback in the server's log."""
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect((host, int(port)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
        assert sock.recv(1) == b"H"  # being answered: the server read the requests
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_api_key_never_appears_in_logs_pages_or_metrics(
    world: SimulatedNotte, secret_api: SimulatorServer, tmp_path: Path, log_format: str
) -> None:
    api = secret_api
    world.add_session("live")
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    source = (
        {"NOTTE_API_KEY": SECRET} if log_format == "text" else {"NOTTE_API_KEY_FILE": str(key_file)}
    )
    pages: list[tuple[str, bytes]] = []
    with ExporterProcess(
        "--log-level", "debug", "--log-format", log_format,
        "--poll-interval", "0.15", "--request-timeout", "0.06",
        "--session-id", "live", "--session-id", "gone-404",
        env={"NOTTE_API_URL": api.url, **source},
    ) as process:  # fmt: skip
        url = process.wait_listening()

        def cycles() -> float:
            response = httpx.get(url + "/metrics", timeout=5)
            pages.append(("/metrics", response.content))
            samples = parse_samples(response.text)
            return sum(
                value(samples, "notte_exporter_polls_total", result=result) or 0
                for result in ("success", "failure")
            )

        def run_through(fault: Fault | None = None) -> None:
            world.clear_faults()
            if fault is not None:
                world.inject(fault)
            done = cycles()
            wait_until(lambda: cycles() >= done + 2, timeout=10, interval=0.1)

        run_through()
        for fault in (
            Fault(status=401),
            Fault(hang=5),
            Fault(status=500),
            Fault(body=b"<html>not json</html>"),
            Fault(status=429, retry_after="1"),
        ):
            run_through(fault)
        if log_format == "text":
            api.api_key = WRONG_SECRET  # the exporter's key is refused for real
            run_through()
            api.api_key = SECRET
        else:
            key_file.write_text(WRONG_SECRET + "\n")  # a rotation to a key that is refused
            run_through()
            key_file.write_text(SECRET + "\n")
        run_through()
        _reset_a_scrape(url)
        for path, headers in [
            ("/", {}),
            ("/healthz", {}),
            ("/readyz", {}),
            ("/nowhere", {}),
            ("/metrics", {"Accept": "application/openmetrics-text"}),
            ("/metrics", {"Accept-Encoding": "gzip"}),
        ]:
            response = httpx.get(url + path, headers=headers, timeout=5)
            # httpx has already undone any gzip.
            pages.append((path, response.content + str(response.headers).encode()))
        returncode = process.stop()
        log, stdout = process.stderr, process.stdout
    assert returncode == 0, log
    assert "Traceback (most recent call last)" in log, "no traceback was provoked"
    assert "401" in log
    assert "debug" in log.lower()
    if log_format == "json":
        assert all(json.loads(line) for line in log.splitlines())
    _assert_no_secret(log, "the log")
    _assert_no_secret(stdout, "stdout")
    for path, page in pages:
        _assert_no_secret(page, path)


def test_client_errors_and_their_tracebacks_never_hold_the_key(
    world: SimulatedNotte, secret_api: SimulatorServer
) -> None:
    api = secret_api
    world.add_session("a1")
    key = ApiKeySource(key=SecretStr(SECRET))
    faults = [
        Fault(status=401),
        Fault(status=403),
        Fault(status=404),
        Fault(status=422),
        Fault(status=429, retry_after="1"),
        Fault(status=500),
        Fault(hang=5),
        Fault(body=b"not json"),
        Fault(body=b'{"unexpected": "shape"}'),
    ]

    async def provoke() -> list[BaseException]:
        caught: list[BaseException] = []
        for fault in faults:
            client = NotteClient(
                base_url=api.url,
                api_key=key,
                request_timeout=0.1,
                max_concurrency=2,
                metrics=create_self_metrics(process_metrics=False),
            )
            world.clear_faults()
            world.inject(fault)
            try:
                await client.get_session("a1", deadline=time.monotonic() + 0.3)
            except NotteError as exc:
                caught.append(exc)
            try:
                await client.list_sessions(
                    page=1,
                    page_size=10,
                    only_active=True,
                    include_system=False,
                    deadline=time.monotonic() + 0.3,
                )
            except NotteError as exc:
                caught.append(exc)
            await client.aclose()
        unreachable = NotteClient(
            base_url="http://127.0.0.1:9",
            api_key=key,
            request_timeout=0.2,
            max_concurrency=1,
            metrics=create_self_metrics(process_metrics=False),
        )
        try:
            await unreachable.get_session("a1", deadline=time.monotonic() + 0.3)
        except NotteError as exc:
            caught.append(exc)
        await unreachable.aclose()
        return caught

    caught = asyncio.run(provoke())
    assert len(caught) == 2 * len(faults) + 1  # every call failed, with an error to read
    for exc in caught:
        text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)
        _assert_no_secret(text, f"{type(exc).__name__}: {exc}")
    _assert_no_secret(repr(key) + str(key.current()), "the key source's repr")


# --- hostile text in labels -----------------------------------------------------------------------

HOSTILE_IDS = [
    'quote"inside',
    "back\\slash\\",
    "ünïcødé-セッション-🚀",
    'injection"} 1 notte_up 0 # TYPE x counter x{a="',
    "comma,equals=brace}",
    "x" * 256,
]
# IDs no label or URL should carry: the item is refused (skipped and counted), never exported.
REFUSED_IDS = [
    "new\nline",
    "carriage\rreturn\ttab",
    'injection"} 1\nnotte_up 0\n# TYPE x counter\nx{a="',
    "nul\x00",
    "x" * 257,
]
HOSTILE_ERRORS = [
    'He said "no" \\ then\nleft',
    "Ошибка: 接続がリセットされました 💥\r\n\ttrace",
    "lone surrogate \ud800 here",
    "long " + "é" * 400,
]


@pytest.fixture
def hostile_world(world: SimulatedNotte) -> SimulatedNotte:
    for session_id in HOSTILE_IDS + REFUSED_IDS:
        world.add_session(session_id, browser_type='chrome"\n\\')
    for index, error in enumerate(HOSTILE_ERRORS):
        world.add_session(f"err-{index}", status="error", error=error)
    world.add_session("weird-status", status='pa"us\\ed\n')
    return world


def test_hostile_label_values_are_escaped_and_the_exposition_parses(
    hostile_world: SimulatedNotte, api: SimulatorServer
) -> None:
    configured = [f"err-{index}" for index in range(len(HOSTILE_ERRORS))] + ["weird-status"]
    with exporter_for(api.url, session_ids=configured, sweep=False) as exporter:
        assert exporter.cycle()
        text_body = exporter.get("/metrics").content
        om_body = exporter.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text

    text_samples = parse_samples(text_body.decode("utf-8"))
    om_samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in openmetrics_families(om_body)
        for sample in family.samples
    }
    for samples in (text_samples, om_samples):
        for session_id in HOSTILE_IDS:
            assert (
                value(samples, "notte_session_status", session_id=session_id, status="active") == 1
            )
        exported = {dict(labels).get("session_id") for _, labels in samples}
        assert not exported & set(REFUSED_IDS)
        invalid = {"endpoint": "list_sessions", "kind": "invalid_item"}
        assert value(samples, "notte_exporter_api_bad_data_total", **invalid) == len(REFUSED_IDS)
        for index, error in enumerate(HOSTILE_ERRORS):
            expected = error.replace("\ud800", "\ufffd")[:200]
            labels = {"session_id": f"err-{index}", "error": expected}
            assert value(samples, "notte_session_error_info", **labels) == 1, error
        assert (
            value(samples, "notte_session_status", session_id="weird-status", status='pa"us\\ed')
            == 1
        )
        # Nothing was injected: one notte_up, and no family named x.
        assert [key for key in samples if key[0] == "notte_up"] == [("notte_up", ())]
        assert not any(key[0].startswith("x") for key in samples)

    assert_promtool_accepts(text_body)


# --- hostile session IDs in URLs ------------------------------------------------------------------

PATH_IDS = [
    "../sessions",
    "..",
    ".",
    "../../admin?x=1",
    "a?b=1#c",
    "#fragment",
    "?page=2",
    "x/y",
    "/",
    "%2e%2e",
    "%2F",
    "a b+c",
    "ünï/../cødé",
    "semi;colon&amp",
]


def _requested_ids(world: SimulatedNotte) -> list[str]:
    records = world.request_log()
    assert {r.endpoint for r in records} <= {"get_session", "list_sessions"}
    return [
        unquote(r.path.removeprefix("/sessions/")) for r in records if r.endpoint == "get_session"
    ]


def test_configured_ids_reach_only_their_own_session(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    for session_id in PATH_IDS:
        world.add_session(session_id, status="closed")
    with exporter_for(api.url, session_ids=PATH_IDS, discovery=False) as exporter:
        assert exporter.cycle()
        samples = exporter.metrics()
    assert sorted(_requested_ids(world)) == sorted(PATH_IDS)
    assert all(record.status == 200 for record in world.request_log())
    for session_id in PATH_IDS:
        assert value(samples, "notte_session_status", session_id=session_id, status="closed") == 1


def test_discovered_ids_reach_only_their_own_session(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    for session_id in PATH_IDS:
        world.add_session(session_id)
    with exporter_for(api.url) as exporter:
        assert exporter.cycle()
        for session_id in PATH_IDS:
            world.end_session(session_id, "timed_out")
        world.reset_requests()
        assert exporter.cycle()  # each left the active list: one final GET each
        samples = exporter.metrics()
    assert sorted(_requested_ids(world)) == sorted(PATH_IDS)
    assert all(record.status == 200 for record in world.request_log())
    for session_id in PATH_IDS:
        assert (
            value(samples, "notte_session_status", session_id=session_id, status="timed_out") == 1
        )


# --- passwords for the HTTP endpoints -------------------------------------------------------------


def test_scrape_passwords_never_appear_in_logs_or_pages(
    api: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "scrape-pw-Z8kQ2vN5"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    exporter = ExporterUnderTest(
        make_settings(api.url), web_config=load_web_config(tmp_path / "web.yml")
    )
    exporter.start_http()
    pages = []
    try:
        with caplog.at_level(logging.DEBUG, logger="exporter"):
            assert exporter.cycle()
            guesses = [
                ("prometheus", password),
                ("prometheus", password[:-1] + "x"),
                ("intruder", password),
                ("prometheus", password + ":" + password),
            ]
            for user, guess in guesses:
                token = base64.b64encode(f"{user}:{guess}".encode()).decode()
                for path in ("/metrics", "/", "/nowhere", "/healthz"):
                    response = exporter.get(path, headers={"Authorization": f"Basic {token}"})
                    pages.append(response.content + str(response.headers).encode())
    finally:
        exporter.close()
    token = base64.b64encode(f"prometheus:{password}".encode()).decode()
    for text in [caplog.text.encode(), *pages]:
        assert password.encode() not in text
        assert password[:-1].encode() not in text
        assert token.encode() not in text
