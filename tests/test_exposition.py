"""The fast renderer equals prometheus-client's, and the cached exposition a fresh render,
in every format and encoding."""

from __future__ import annotations

import gzip
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.metrics import exposition as exposition_module
from exporter.metrics.catalogue import ACCOUNT_FAMILIES, AGGREGATE_FAMILIES, SESSION_FAMILIES
from exporter.metrics.exposition import Exposition
from exporter.metrics.render import render_session_families
from exporter.metrics.selfmetrics import create_self_metrics
from exporter.notte.accountmodel import RuntimeHealth
from exporter.notte.model import parse_session
from exporter.polling.accountsnapshot import AccountSnapshot
from exporter.polling.snapshot import Snapshot, build_snapshot
from exporter.polling.tracker import CycleResult, TrackerState, apply_cycle
from tests.oracle import render_with_prometheus_client

NOW = 1_800_000_000.0


def snapshot_of(count: int, generation: int = 1) -> Snapshot:
    listed = [
        parse_session(
            {
                "session_id": f"s-{index}",
                "status": "active",
                "created_at": "2027-01-15T07:00:00Z",
                "idle_timeout_minutes": 5,
                "network_request_bytes": index,
                "error": 'quote " backslash \\ newline \n é' if index % 3 == 0 else None,
            }
        )
        for index in range(count)
    ]
    state = apply_cycle(
        TrackerState(),
        CycleResult((), listed, {}),
        now=NOW,
        process_start=NOW - 10,
        retention=900,
        max_sessions=100_000,
    )
    return build_snapshot(state, NOW, generation)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_fast_render_is_byte_for_byte_what_prometheus_client_renders(openmetrics: bool) -> None:
    snapshot = snapshot_of(50)
    fast = render_session_families(snapshot, openmetrics)
    assert fast == render_with_prometheus_client(snapshot, openmetrics)
    assert b"notte_sessions_ended_total{" in fast


@pytest.mark.parametrize("openmetrics", [False, True])
def test_an_empty_snapshot_renders_like_prometheus_client(openmetrics: bool) -> None:
    snapshot = Snapshot()
    assert render_session_families(snapshot, openmetrics) == render_with_prometheus_client(
        snapshot, openmetrics
    )


def test_cached_body_is_byte_for_byte_a_fresh_render() -> None:
    snapshot = snapshot_of(30)
    metrics = create_self_metrics(process_metrics=False)
    exposition = Exposition(lambda: snapshot, metrics)
    for openmetrics in (False, True):
        exposition.body(openmetrics=openmetrics, gzip=False)  # fills the cache
        cached = exposition.body(openmetrics=openmetrics, gzip=False)
        self_part = cached.removeprefix(render_with_prometheus_client(snapshot, openmetrics))
        assert self_part.startswith(b"# HELP notte_up ")


def test_body_is_session_part_plus_live_self_part_in_every_encoding() -> None:
    current = [snapshot_of(20)]
    metrics = create_self_metrics(process_metrics=False)
    exposition = Exposition(lambda: current[0], metrics)
    for openmetrics in (False, True):
        plain = exposition.body(openmetrics=openmetrics, gzip=False)
        assert gzip.decompress(exposition.body(openmetrics=openmetrics, gzip=True)) == plain
    metrics.cycle_ended(succeeded=True, seconds=0.1, now=1.0)
    plain = exposition.body(openmetrics=False, gzip=False)
    assert b'notte_exporter_polls_total{result="success"} 1.0' in plain
    assert b'notte_exporter_polls_total{result="success"} 1.0' in gzip.decompress(
        exposition.body(openmetrics=False, gzip=True)
    )


@pytest.mark.parametrize("encoding", ["plain", "gzip"])
def test_a_scrape_sends_the_cached_part_as_it_is_never_a_copy(encoding: str) -> None:
    snapshot = snapshot_of(20)
    metrics = create_self_metrics(process_metrics=False)
    exposition = Exposition(lambda: snapshot, metrics)
    compressed = encoding == "gzip"
    first = exposition.chunks(openmetrics=False, gzip=compressed)
    metrics.cycle_ended(succeeded=True, seconds=0.1, now=1.0)  # the self part changes
    second = exposition.chunks(openmetrics=False, gzip=compressed)
    cached = [chunk for chunk in first if any(chunk is again for again in second)]
    assert cached, "every chunk was built anew: the session part is copied at each scrape"
    assert max(len(chunk) for chunk in cached) == max(len(chunk) for chunk in first)
    assert b"".join(second) == exposition.body(openmetrics=False, gzip=compressed)


def test_the_self_part_is_rendered_again_after_each_change_and_only_then() -> None:
    metrics = create_self_metrics(process_metrics=False)
    exposition = Exposition(lambda: snapshot_of(1), metrics)
    line = b'notte_exporter_api_retries_total{endpoint="get_session"} '
    assert line + b"0.0" in exposition.body(openmetrics=False, gzip=False)
    metrics.api_retries.labels(endpoint="get_session").inc()  # behind SelfMetrics' back
    assert line + b"0.0" in exposition.body(openmetrics=False, gzip=False)  # the last render
    metrics.request_retried("get_session")  # a change it is told of
    assert line + b"2.0" in exposition.body(openmetrics=False, gzip=False)
    assert line + b"2.0" in gzip.decompress(exposition.body(openmetrics=True, gzip=True))


def test_the_self_parts_that_change_by_themselves_are_rendered_at_every_scrape() -> None:
    metrics = create_self_metrics(process_metrics=False)
    age = [5.0]
    metrics.watch_oldest_refresh(lambda: age[0])
    exposition = Exposition(lambda: snapshot_of(1), metrics)
    assert b"notte_exporter_oldest_refresh_age_seconds 5.0" in exposition.body(
        openmetrics=False, gzip=False
    )
    age[0] = 7.0
    assert b"notte_exporter_oldest_refresh_age_seconds 7.0" in exposition.body(
        openmetrics=False, gzip=False
    )


def test_process_and_gc_metrics_change_by_themselves_and_the_python_version_is_kept() -> None:
    metrics = create_self_metrics(process_metrics=True)
    process, kept = generate_latest(metrics.process), generate_latest(metrics.registry)
    assert b"process_open_fds " in process
    assert b"python_gc_collections_total" in process
    assert b"python_info{" in kept
    assert b"python_info{" not in process + generate_latest(metrics.live)


class CollectCount:
    """A collector whose one gauge is how many times it has been collected."""

    def __init__(self) -> None:
        self.collected = 0

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # so that registering it collects nothing

    def collect(self) -> list[GaugeMetricFamily]:
        self.collected += 1
        return [GaugeMetricFamily("collected", "Times collected.", value=self.collected)]


def test_process_metrics_are_rendered_again_once_a_second_old() -> None:
    metrics = create_self_metrics(process_metrics=False)
    counting = CollectCount()
    metrics.process.register(counting)
    now = [100.0]
    exposition = Exposition(lambda: snapshot_of(1), metrics, clock=lambda: now[0])

    def collected(openmetrics: bool = False) -> bytes:
        body = exposition.body(openmetrics=openmetrics, gzip=False)
        return next(line for line in body.splitlines() if line.startswith(b"collected "))

    assert collected() == b"collected 1.0"
    now[0] += exposition_module.PROCESS_RENDER_SECONDS - 0.01
    assert collected() == b"collected 1.0"  # a scrape within the second: the same render
    assert collected(openmetrics=True) == b"collected 2.0"  # each format its own render
    now[0] += 0.01
    assert collected() == b"collected 3.0"  # a second old: rendered again
    now[0] -= 5  # a clock that went back is not trusted to mean "fresh"
    assert collected() == b"collected 4.0"


def test_the_account_part_is_rendered_once_per_account_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[AccountSnapshot] = []
    real_render = exposition_module.render_account_families

    def counted(snapshot: AccountSnapshot, *args: Any) -> bytes:
        renders.append(snapshot)
        return real_render(snapshot, *args)

    monkeypatch.setattr(exposition_module, "render_account_families", counted)
    down = AccountSnapshot(runtime=RuntimeHealth(status="down", reachable=False))
    current = [down]
    exposition = Exposition(
        lambda: snapshot_of(1),
        create_self_metrics(process_metrics=False),
        account=lambda: current[0],
    )
    for _ in range(3):
        assert b"notte_functions_runtime_reachable 0.0" in exposition.body(
            openmetrics=False, gzip=False
        )
    assert renders == [down]
    current[0] = AccountSnapshot(runtime=RuntimeHealth(status="healthy", reachable=True))
    assert b"notte_functions_runtime_reachable 1.0" in exposition.body(
        openmetrics=False, gzip=False
    )
    assert b"notte_functions_runtime_reachable 1.0" in exposition.body(openmetrics=True, gzip=False)
    assert len(renders) == 3  # the new snapshot, once in each format


def test_openmetrics_body_parses_with_one_eof() -> None:
    metrics = create_self_metrics(process_metrics=False)
    exposition = Exposition(lambda: snapshot_of(5), metrics)
    text = exposition.body(openmetrics=True, gzip=False).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"notte_session_status", "notte_up", "notte_sessions_ended"} <= names
    assert text.count("# EOF") == 1


def test_a_new_snapshot_replaces_the_cached_part() -> None:
    current = [snapshot_of(2, generation=1)]
    exposition = Exposition(lambda: current[0], create_self_metrics(process_metrics=False))
    first = exposition.body(openmetrics=False, gzip=True)
    current[0] = snapshot_of(3, generation=2)
    second = gzip.decompress(exposition.body(openmetrics=False, gzip=True))
    assert first != second
    assert b'session_id="s-2"' in second


def random_session(rng: random.Random, index: int) -> dict[str, object]:
    alphabet = 'ab"\\\n é🙂{}=,#'
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
    status = rng.choice(
        ["active", "authenticating", "closed", "error", "timed_out", "paused", 'we"ird\\']
    )
    maybe = lambda v: v if rng.random() < 0.7 else None  # noqa: E731
    return {
        "session_id": f"{text.replace(chr(10), '')}-{index}",  # IDs hold no control characters
        "status": status,
        "created_at": maybe("2027-01-15T07:00:00.5Z"),
        "last_accessed_at": maybe("2027-01-15T07:59:00Z"),
        "closed_at": maybe("2027-01-15T07:30:00Z"),
        "close_reason": maybe(rng.choice(["manual", "idle_timeout", "max_duration", text])),
        "idle_timeout_minutes": maybe(rng.choice([0, 1, 5, 2.5])),
        "max_duration_minutes": maybe(rng.choice([15, 60, 1440])),
        "duration": maybe(rng.choice(["PT41.286072S", "PT0S", "P1DT2H"])),
        "steps": maybe([{}] * rng.randint(0, 3)),
        "error": maybe(text * rng.randint(1, 40)),
        "proxies": maybe(rng.choice([True, False, [], [{"type": "x"}]])),
        "browser_type": maybe(rng.choice(["chromium", "firefox", text])),
        "solve_captchas": maybe(rng.choice([True, False])),
        "web_bot_auth": maybe(rng.choice([True, False])),
        "network_request_bytes": maybe(rng.choice([0, 1, 10**6, 2**63 - 1, 123456789])),
        "network_response_bytes": maybe(rng.randint(0, 10**12)),
    }


def test_fast_render_matches_prometheus_client_on_random_hostile_sessions() -> None:
    rng = random.Random(42)
    listed = [parse_session(random_session(rng, index)) for index in range(300)]
    state = apply_cycle(
        TrackerState(),
        CycleResult((), listed, {}),
        now=NOW,
        process_start=NOW - 10,
        retention=900,
        max_sessions=100_000,
    )
    snapshot = build_snapshot(state, NOW, 1)
    for openmetrics in (False, True):
        fast = render_session_families(snapshot, openmetrics)
        assert fast == render_with_prometheus_client(snapshot, openmetrics)


def test_warm_renders_requested_variants_once_so_scrapes_render_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[bool] = []

    def counting_render(snapshot: Snapshot, openmetrics: bool, *served: Any) -> bytes:
        renders.append(openmetrics)
        return render_session_families(snapshot, openmetrics)

    monkeypatch.setattr(exposition_module, "render_session_families", counting_render)
    current = [snapshot_of(3, generation=1)]
    exposition = Exposition(lambda: current[0], create_self_metrics(process_metrics=False))
    exposition.warm()
    assert renders == []  # nothing asked for yet: nothing rendered
    exposition.body(openmetrics=True, gzip=True)
    exposition.body(openmetrics=True, gzip=False)
    assert renders == [True]  # one render serves both encodings

    current[0] = snapshot_of(4, generation=2)
    exposition.warm()
    assert renders == [True, True]  # the new snapshot, in the one format asked for
    for _ in range(3):
        body = exposition.body(openmetrics=True, gzip=False)
    assert renders == [True, True]
    assert body.startswith(render_session_families(current[0], openmetrics=True))


def test_content_types_name_text_0_0_4_and_openmetrics_1_0_0() -> None:
    exposition = Exposition(lambda: snapshot_of(1), create_self_metrics(process_metrics=False))
    assert exposition.content_type(False) == "text/plain; version=0.0.4; charset=utf-8"
    assert exposition.content_type(True) == (
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )


def test_scrapes_during_warm_get_the_previous_part_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    rendering = threading.Event()

    def slow_render(snapshot: Snapshot, openmetrics: bool, *served: Any) -> bytes:
        if snapshot.generation == 2:
            rendering.set()
            assert release.wait(timeout=10)
        return render_session_families(snapshot, openmetrics)

    monkeypatch.setattr(exposition_module, "render_session_families", slow_render)
    current = [snapshot_of(2, generation=1)]
    exposition = Exposition(lambda: current[0], create_self_metrics(process_metrics=False))
    old = exposition.body(openmetrics=False, gzip=False)
    current[0] = snapshot_of(3, generation=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        warm = pool.submit(exposition.warm)
        try:
            assert rendering.wait(timeout=10)
            scrape = pool.submit(exposition.body, openmetrics=False, gzip=False)
            assert scrape.result(timeout=5) == old  # served at once, not after the render
        finally:
            release.set()
        warm.result(timeout=10)
    new = exposition.body(openmetrics=False, gzip=False)
    assert b'session_id="s-2"' in new
    assert b'session_id="s-2"' not in old


def test_without_warm_a_scrape_renders_the_current_snapshot_itself() -> None:
    current = [snapshot_of(2, generation=1)]
    exposition = Exposition(lambda: current[0], create_self_metrics(process_metrics=False))
    exposition.body(openmetrics=True, gzip=True)
    current[0] = snapshot_of(3, generation=2)
    body = gzip.decompress(exposition.body(openmetrics=True, gzip=True))
    assert body.startswith(render_session_families(current[0], openmetrics=True))


def test_the_readme_documents_every_catalogue_family_with_its_labels() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for family in (*SESSION_FAMILIES, *AGGREGATE_FAMILIES):
        labels = "{" + ",".join(family.labels) + "}" if family.labels else ""
        assert f"`{family.name}{labels}`" in readme, family.name
    for account in ACCOUNT_FAMILIES:  # their table names every label, function_id included
        labels = "{" + ",".join(account.labels) + "}" if account.labels else ""
        assert f"| `{account.name}{labels}` | {account.kind} |" in readme, account.name
