"""Wiring: settings -> client -> poller -> snapshot store -> exposition -> HTTP server.

`build_app` assembles the parts from settings; `App.serve` runs them until a
stop signal: APScheduler's `AsyncIOScheduler` runs the poll job (first run at
start, never two at once, missed runs coalesced) and the HTTP server runs on
its own thread. A poll job is the sessions' cycle, then, in what is left of
its budget, the account's part (`account.py`: functions, runtime, usage), so
the account never delays the sessions and shares their concurrency cap.
SIGHUP re-reads the key file and the web config (`App.reload`), the Prometheus
convention. `App.poll_once` is `--once`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter import __version__
from exporter.metrics.exposition import Exposition
from exporter.metrics.metricfilter import FamilyFilter, Served
from exporter.metrics.selfmetrics import SelfMetrics, create_self_metrics
from exporter.notte.apikey import ApiKeySource
from exporter.notte.client import NotteClient, RetryPolicy
from exporter.polling.account import AccountOptions, AccountPoller
from exporter.polling.accountsnapshot import AccountStore
from exporter.polling.configured import ConfiguredIds
from exporter.polling.poller import CYCLE_BUDGET_FRACTION, Poller, PollOptions
from exporter.polling.snapshot import SnapshotStore
from exporter.settings import Settings
from exporter.web.http_server import MetricsServer
from exporter.web.webconfig import WebConfig, WebConfigWatcher

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 3.0
DEFAULT_RETRY = RetryPolicy()


@dataclass
class App:
    """The running parts of one exporter."""

    settings: Settings
    api_key: ApiKeySource
    metrics: SelfMetrics
    store: SnapshotStore
    exposition: Exposition
    client: NotteClient
    poller: Poller
    account: AccountPoller | None = None
    web_config: WebConfig | WebConfigWatcher | None = None
    server: MetricsServer | None = None
    poller_clock: Callable[[], float] = time.monotonic  # the poller's, for the cycle's budget

    async def run_cycle(self) -> bool:
        """One poll job: the sessions' cycle, then the account's part within the same
        budget, only after a successful sessions' part; True when the sessions' part
        succeeded (the account's failures are counted and logged, never the cycle's)."""
        started = self.poller_clock()
        succeeded = await self.poller.run_cycle()
        if succeeded and self.account is not None:
            budget = self.settings.poll_interval * CYCLE_BUDGET_FRACTION
            await self.account.run(deadline=started + budget)
        return succeeded

    async def poll_once(self) -> bool:
        """`--once`: one cycle; the caller prints `exposition`."""
        try:
            return await self.run_cycle()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Cancel the requests still in flight and close the API connections."""
        await self.poller.aclose()
        await self.client.aclose()

    def reload(self) -> None:
        """SIGHUP: re-read the API key file and the web config now, and say so."""
        self.api_key.reload()
        if self.server is not None:
            self.server.reload_web_config()
        log.info("SIGHUP: re-read the API key file and the web config")

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Serve and poll until `stop` is set or SIGTERM/SIGINT arrives; SIGHUP reloads."""
        stop = stop or asyncio.Event()
        _install_signal_handlers(stop, self.reload)
        host, port = self.settings.listen_host_port
        self.server = MetricsServer(
            (host, port), exposition=self.exposition, store=self.store, web_config=self.web_config
        )
        self.server.start()
        log.info(
            "notte-exporter %s listening on %s://%s:%d",
            __version__,
            self.server.scheme,
            host,
            self.server.port,
        )
        cycles = _CycleRunner(self.run_cycle)
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        scheduler.add_job(
            cycles.run,
            "interval",
            seconds=self.settings.poll_interval,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="poll",
        )
        scheduler.start()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            scheduler.shutdown(wait=False)
            await cycles.cancel()
            await self.aclose()
            self.server.stop()


class _CycleRunner:
    """The scheduler's job; remembers the cycle in flight so shutdown can cancel it."""

    def __init__(self, run_cycle: Callable[[], Coroutine[Any, Any, bool]]) -> None:
        self._run_cycle = run_cycle
        self._task: asyncio.Task[bool] | None = None

    async def run(self) -> None:
        self._task = asyncio.ensure_future(self._run_cycle())
        try:
            await self._task
        except asyncio.CancelledError:
            log.debug("poll cycle cancelled")
        except Exception:
            log.exception("poll cycle crashed; the next one runs as scheduled")

    async def cancel(self) -> None:
        if self._task is None or self._task.done():
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._task, SHUTDOWN_GRACE_SECONDS)


def _install_signal_handlers(stop: asyncio.Event, reload: Callable[[], None]) -> None:
    """On the loop, so handlers run between the loop's callbacks, never inside one.

    Outside the main thread (in-process tests) the loop refuses: no handlers then.
    """
    loop = asyncio.get_running_loop()
    handlers = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: reload}
    for signum, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, handler)


def build_app(
    settings: Settings,
    api_key: ApiKeySource,
    *,
    web_config: WebConfig | WebConfigWatcher | None = None,
    process_metrics: bool = True,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> App:
    """Assemble every part from the settings; nothing starts yet.

    `clock`, `monotonic` and `retry` are the seams tests use to control time and backoff.
    """
    metrics = create_self_metrics(
        settings.shard,
        settings.total_shards,
        poll_interval=settings.poll_interval,
        process_metrics=process_metrics,
    )
    store = SnapshotStore()
    account_store = AccountStore()
    exposition = Exposition(
        lambda: store.current,
        metrics,
        account=lambda: account_store.current,
        served=Served.by(FamilyFilter.of(settings.metric_allowlist, settings.metric_denylist)),
    )
    client = NotteClient(
        base_url=settings.api_url,
        api_key=api_key,
        request_timeout=settings.request_timeout,
        max_concurrency=settings.max_concurrency,
        metrics=metrics,
        retry=retry,
        monotonic=monotonic,
        clock=clock,
        max_response_bytes=settings.max_response_bytes,
    )
    poller = Poller(
        options=PollOptions.from_settings(settings),
        client=client,
        configured=ConfiguredIds(settings.session_ids, settings.session_ids_file),
        metrics=metrics,
        store=store,
        warm=exposition.warm,
        clock=clock,
        monotonic=monotonic,
    )
    account_options = AccountOptions.from_settings(settings)
    account = None
    if account_options.enabled:
        account = AccountPoller(
            options=account_options,
            client=client,
            store=account_store,
            clock=clock,
            monotonic=monotonic,
        )
    return App(
        settings=settings,
        api_key=api_key,
        metrics=metrics,
        store=store,
        exposition=exposition,
        client=client,
        poller=poller,
        account=account,
        web_config=web_config,
        poller_clock=monotonic,
    )
