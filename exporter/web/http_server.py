"""The HTTP server: `/metrics`, `/healthz`, `/readyz` and the landing page.

It only reads: the exposition and the store's readiness, through `endpoints`. An
asyncio event loop on a thread of its own holds every connection (`lobby` until it
speaks, then `http11`, where h11 parses every request), so a slow client costs a
socket and a buffer, never a thread.
Two small executors do the work that would stall the loop: `/metrics` answers (a
render can take hundreds of milliseconds) and bcrypt checks (`passwordchecks`). The
connection cap and the memory of answers in flight are `connections`' business.

The web config (TLS, users, headers) is looked up for each new connection and each
request, so a changed file applies without a restart; `reload_web_config` (SIGHUP)
reads it at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from exporter.metrics.exposition import Exposition
from exporter.web.authorisation import InForce
from exporter.web.basicauth import BasicAuthVerifier
from exporter.web.connections import MAX_CONNECTIONS, ConnectionTable
from exporter.web.http11 import (
    HEADER_TIMEOUT_SECONDS,
    IDLE_TIMEOUT_SECONDS,
    WRITE_TIMEOUT_SECONDS,
    Limits,
    Service,
    converse,
)
from exporter.web.lobby import Lobby
from exporter.web.passwordchecks import PasswordChecks, check_executor
from exporter.web.routes import Endpoints, Readiness
from exporter.web.webconfig import WebConfig, WebConfigError, WebConfigWatcher, build_ssl_context

__all__ = ["HEADER_TIMEOUT_SECONDS", "MetricsServer"]

log = logging.getLogger(__name__)

WORKERS = 4  # threads building /metrics answers; more would only contend for the GIL
STOP_SECONDS = 2.0  # for the connections to be closed and the loop to end
SOMAXCONN_FILE = "/proc/sys/net/core/somaxconn"


class MetricsServer:
    """Serves the exporter's endpoints; `start()` runs the event loop on its own thread."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        exposition: Exposition,
        store: Readiness,
        web_config: WebConfigWatcher | WebConfig | None = None,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self._web_config = web_config if web_config is not None else WebConfig()
        self._in_force_lock = threading.Lock()
        self._serving = self._build(self._config_now(), previous=None)
        self._listener = _listen(address, listen_backlog())
        self._renders = ThreadPoolExecutor(workers, thread_name_prefix="metrics-render")
        self._bcrypt = check_executor()
        self._service = Service(
            in_force=self._in_force,
            endpoints=Endpoints(exposition, store, self._renders),
            checks=PasswordChecks(self._bcrypt),
            table=ConnectionTable(max_connections),
            limits=Limits(header_timeout, idle_timeout, write_timeout),
        )
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    # -- configuration ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections counted against the cap now (read from another thread: a glance)."""
        return len(self._service.table)

    @property
    def scheme(self) -> str:
        return "https" if self._in_force().config.tls is not None else "http"

    def _in_force(self) -> InForce:
        """The web config in force now, with its SSL context and password checker."""
        config = self._config_now()
        if config is not self._serving.config:
            with self._in_force_lock:
                if config is not self._serving.config:
                    self._serving = self._build(config, previous=self._serving)
        return self._serving

    def reload_web_config(self) -> bool:
        """Re-read the web config file now (SIGHUP); False when it is bad and the old stays."""
        if not isinstance(self._web_config, WebConfigWatcher):
            return True
        reloaded = self._web_config.reload()
        self._in_force()
        return reloaded

    def _config_now(self) -> WebConfig:
        source = self._web_config
        return source.current() if isinstance(source, WebConfigWatcher) else source

    def _build(self, config: WebConfig, previous: InForce | None) -> InForce:
        """Derive from `config`; the same users keep the verifier, and its cache, alive."""
        context = None
        if config.tls is not None:
            try:
                context = build_ssl_context(config.tls)
            except WebConfigError as exc:
                if previous is None:
                    raise
                log.error("%s; the TLS files in force stay", exc)
                context = previous.ssl_context
        if previous is not None and previous.config.basic_auth_users == config.basic_auth_users:
            verifier = previous.verifier
        else:
            verifier = BasicAuthVerifier(config.basic_auth_users)
        return InForce(config, context, verifier)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(self._run(started),),
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        started.wait(STOP_SECONDS)

    def stop(self) -> None:
        """Stop accepting, close every connection, end the loop and its executors."""
        if self._thread is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(STOP_SECONDS + 1)
        self._thread = None
        self._renders.shutdown(wait=False, cancel_futures=True)
        self._bcrypt.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()
        self._listener.close()

    async def _run(self, started: threading.Event) -> None:
        self._stopping = asyncio.Event()
        service = self._service
        lobby = Lobby(
            self._listener,
            service.table,
            hand_over=functools.partial(converse, service),
            header_timeout=service.limits.header_timeout,
        )
        lobby.start()
        started.set()
        try:
            await self._stopping.wait()
        finally:
            lobby.stop()
            self._service.table.abort_all()
            # Every other task on this loop answers a connection (or shakes its hand).
            answering = asyncio.all_tasks() - {asyncio.current_task()}
            for task in answering:
                task.cancel()
            if answering:
                await asyncio.wait(answering, timeout=STOP_SECONDS)


def listen_backlog(somaxconn_file: str = SOMAXCONN_FILE) -> int:
    """As many connections as the system lets the kernel hold until accepted, as Go asks.

    A connect flood fills the accept queue faster than the loop accepts; once it is
    full the kernel drops new SYNs, and a scraper's connection waits for the SYN's
    retransmission, a whole second later. The system's cap is the most it will hold.
    """
    try:
        with open(somaxconn_file, encoding="ascii") as file:
            return max(1, min(int(file.read().strip()), 65535))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def _listen(address: tuple[str, int], backlog: int) -> socket.socket:
    """A listening socket; `[::]` takes IPv4 too where the system allows, as Go does."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
