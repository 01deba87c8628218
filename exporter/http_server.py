"""The HTTP server: `/metrics`, `/healthz`, `/readyz` and the landing page.

It only reads: the exposition and the store's readiness, through `endpoints`.
Two stages, so that no client can deny scrapes by being slow:

- the *front* stage (`connections`), one thread with a selector, holds every
  connection that waits on its client: TLS handshakes, request headers under a
  deadline, answers that the client reads slowly, idle keep-alive connections;
- a fixed pool of *worker* threads, here, gets only complete requests, through a
  bounded queue in which known credentials go first, then probes, then the rest,
  builds each answer and writes what the socket takes at once; the front stage
  writes the rest, and waits for the next request.

Who may ask what (`access`) both stages apply. The web config (TLS, users,
headers) is looked up for each new connection and each request, so a changed
file applies without a restart.
"""

from __future__ import annotations

import logging
import threading
import time

from exporter.access import InForce
from exporter.basicauth import BasicAuthVerifier
from exporter.connections import (
    HEADER_TIMEOUT_SECONDS,
    IDLE_TIMEOUT_SECONDS,
    MAX_WAITING_CONNECTIONS,
    WRITE_TIMEOUT_SECONDS,
    FrontStage,
    Limits,
    RequestQueue,
    outgoing,
    send_some,
)
from exporter.endpoints import Endpoints
from exporter.exposition import Exposition
from exporter.snapshot import SnapshotStore
from exporter.webconfig import WebConfig, WebConfigError, WebConfigWatcher, build_ssl_context

log = logging.getLogger(__name__)

WORKERS = 8  # more would only contend for the GIL: the work is Python, not I/O


class MetricsServer:
    """Serves the exporter's endpoints; `start()` runs the front stage and the workers."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        exposition: Exposition,
        store: SnapshotStore,
        web_config: WebConfigWatcher | WebConfig | None = None,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        max_waiting_connections: int = MAX_WAITING_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self._endpoints = Endpoints(exposition, store)
        self._web_config = web_config if web_config is not None else WebConfig()
        self._in_force_lock = threading.Lock()
        self._serving = self._build(self._config_now(), previous=None)
        self._requests = RequestQueue()
        self._stopping = threading.Event()
        self._front = FrontStage(
            address,
            in_force=self._in_force,
            requests=self._requests,
            stopping=self._stopping,
            limits=Limits(header_timeout, idle_timeout, write_timeout, max_waiting_connections),
        )
        self._workers = workers
        self._threads: list[threading.Thread] = []

    # -- configuration ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._front.port

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
        self._front.open()
        self._threads = [threading.Thread(target=self._front.run, name="metrics-http", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"metrics-http-{index}", daemon=True)
            for index in range(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop accepting, let each worker finish its request, close every connection."""
        self._stopping.set()
        self._front.wake()
        front, workers = self._threads[:1], self._threads[1:]
        self._threads = []
        for thread in front:
            thread.join(timeout=2)
        self._requests.close_queued()
        for _ in workers:
            self._requests.stop_one()
        deadline = time.monotonic() + 2
        for thread in workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._front.close()

    # -- the workers --------------------------------------------------------------------------

    def _work(self) -> None:
        """Answer a request, write what the socket takes at once, leave the rest to the front.

        A client that reads slowly (or not at all) then holds no worker.
        """
        while (item := self._requests.get()) is not None:
            connection, head, rest = item
            connection.rest = rest
            try:
                response, connection.keep_alive = self._endpoints.answer(
                    connection.sock, connection.peer, head, self._in_force()
                )
                connection.sock.setblocking(False)
                connection.outgoing = send_some(connection.sock, outgoing(response))
            except Exception as exc:  # a broken client (reset, timeout) is the client's problem
                log.debug(
                    "%s: connection ended with an error: %r", connection.peer, exc, exc_info=True
                )
                connection.sock.close()
                continue
            if self._stopping.is_set() or not (connection.outgoing or connection.keep_alive):
                connection.sock.close()
            else:
                self._front.give_back(connection)
