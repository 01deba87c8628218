"""Test harness: the simulator and a real exporter on 127.0.0.1, driven cycle by cycle.

`ExporterUnderTest` runs the exporter's HTTP server on its thread and an event
loop on another; tests either call `cycle()` to run exactly one poll cycle
(deterministic), or `serve()` the whole app with its scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from exporter.app import App, build_app
from exporter.notte.apikey import ApiKeySource
from exporter.settings import Settings
from exporter.simulator import SimulatorServer
from exporter.web.http_server import MetricsServer
from exporter.web.webconfig import WebConfig

API_KEY = "sk-test-9f8e7d6c5b4a"

# The `serve` fixture's type: `serve(world, **options)` starts a fake API for the test.
Serve = Callable[..., SimulatorServer]


def iso(seconds: float) -> str:
    """Unix seconds as the API writes date-times (ISO-8601, `Z`)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reachable_strings(value: object, seen: set[int] | None = None) -> Iterator[bytes]:
    """Every str and bytes reachable from `value` (containers and object attributes):
    what an object keeps in memory, for tests that a secret is not kept."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, bytes | bytearray):
        yield bytes(value)
    elif isinstance(value, str):
        yield value.encode()
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from reachable_strings(key, seen)
            yield from reachable_strings(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from reachable_strings(item, seen)
    elif hasattr(value, "__dict__"):
        yield from reachable_strings(vars(value), seen)


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def make_settings(api_url: str, **overrides: Any) -> Settings:
    """Settings for a test: loopback, fresh, independent of the environment's .env."""
    values: dict[str, Any] = {
        "api_url": api_url,
        "api_key": API_KEY,
        "listen_address": "127.0.0.1:0",
        "poll_interval": 30,
        "request_timeout": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class ExporterUnderTest:
    """A real exporter (HTTP server + poller) in this process, on 127.0.0.1."""

    def __init__(
        self,
        settings: Settings,
        *,
        api_key: ApiKeySource | None = None,
        web_config: WebConfig | None = None,
        **seams: Any,
    ) -> None:
        """`seams` go to `build_app`: `clock`, `monotonic`, `retry`."""
        self.settings = settings
        key = api_key or ApiKeySource(key=SecretStr(API_KEY))
        self.app: App = build_app(
            settings, key, web_config=web_config, process_metrics=False, **seams
        )
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._loop_thread.start()
        self.server: MetricsServer | None = None
        self._serve_future: Future[None] | None = None
        self._stop: asyncio.Event | None = None

    # -- one cycle at a time -------------------------------------------------
    def start_http(self) -> None:
        self.server = MetricsServer(
            ("127.0.0.1", 0),
            exposition=self.app.exposition,
            store=self.app.store,
            web_config=self.app.web_config,
        )
        self.server.start()

    def cycle(self, timeout: float = 30) -> bool:
        """Run exactly one poll cycle on the exporter's loop; True when it succeeded."""
        future = asyncio.run_coroutine_threadsafe(self.app.poller.run_cycle(), self.loop)
        return future.result(timeout)

    def full_cycle(self, timeout: float = 30) -> bool:
        """One poll job as the scheduler runs it: the sessions' cycle, then the account's part."""
        future = asyncio.run_coroutine_threadsafe(self.app.run_cycle(), self.loop)
        return future.result(timeout)

    # -- the whole app, scheduler included -------------------------------------
    def serve(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await self.app.serve(self._stop)

        self._serve_future = asyncio.run_coroutine_threadsafe(main(), self.loop)
        wait_until(lambda: self.app.server is not None and self.app.server.port)
        self.server = self.app.server

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.scheme}://127.0.0.1:{self.server.port}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The parsed `/metrics` samples: (name, sorted labels) -> value."""
        return parse_samples(self.get("/metrics").text)

    def close(self) -> None:
        if self._serve_future is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._serve_future.result(10)
        else:
            if self.server is not None:
                self.server.stop()
            asyncio.run_coroutine_threadsafe(self.app.aclose(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        self.loop.close()


def parse_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def family_types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    """The sum of the `name` series carrying these labels (and any others), None when none does:
    e.g. `notte_sessions_ended_total` for one status over every close_reason."""
    wanted = set(labels.items())
    found = [v for (n, series), v in samples.items() if n == name and wanted <= set(series)]
    return sum(found) if found else None


@contextmanager
def exporter_for(world_url: str, **overrides: Any) -> Iterator[ExporterUnderTest]:
    """An exporter with its HTTP server started, driven by `cycle()`."""
    exporter = ExporterUnderTest(make_settings(world_url, **overrides))
    exporter.start_http()
    try:
        yield exporter
    finally:
        exporter.close()


def assert_promtool_accepts(exposition: bytes) -> None:
    """`promtool check metrics` finds no problem at all (no error, no warning) in `exposition`."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert result.stdout.decode() + result.stderr.decode() == ""


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m exporter` as a user would, with a clean NOTTE_* environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def log_lines(
    records: Sequence[logging.LogRecord], *, level: int = logging.WARNING
) -> list[logging.LogRecord]:
    """The exporter's own records at `level` or above.

    Not the simulator's, nor httpx's: the exporter holds httpx at WARNING, but
    in-process tests do not configure logging and scrape with httpx themselves.
    """
    return [
        record
        for record in records
        if record.levelno >= level
        and not record.name.startswith("exporter.simulator")
        and record.name.startswith(("exporter", "apscheduler"))
    ]
