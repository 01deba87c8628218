"""The HTTP side: `/metrics`, `/healthz`, `/readyz` and the landing page.

A threaded standard-library server on its own thread, so scrapes are served
while a poll cycle runs or hangs on the event loop. It only reads: the
exposition (cached session part, live self part) and the store's readiness.
Each connection has a socket timeout and the number of connections served at
once is bounded, so slow or silent clients cannot pile up threads. TLS
handshakes happen in the connection's own thread, never in the accept loop.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.exposition import Exposition
from exporter.snapshot import SnapshotStore
from exporter.webconfig import BasicAuthVerifier, WebConfig, build_ssl_context

log = logging.getLogger(__name__)

CONNECTION_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 256
SLOT_WAIT_SECONDS = 1.0
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SHUTDOWN_POLL_SECONDS = 0.1  # how soon serve_forever notices shutdown(); the default is 0.5 s


class MetricsServer(ThreadingHTTPServer):
    """Serves the exporter's endpoints; `start()` runs it on a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        exposition: Exposition,
        store: SnapshotStore,
        web_config: WebConfig | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.exposition = exposition
        self.store = store
        self.web_config = web_config or WebConfig(tls=None, basic_auth_users={}, headers={})
        self.auth = BasicAuthVerifier(self.web_config.basic_auth_users)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None
        if self.web_config.tls is not None:
            context = build_ssl_context(self.web_config.tls)
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.web_config.tls is not None else "http"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    def reload_web_config(self) -> None:
        """Re-read the web config file (SIGHUP); the web config watcher fills this in."""

    def stop(self) -> None:
        """Stop accepting, close the socket; in-flight handlers are daemon threads."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=2)
            self._thread = None
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Bound the connections served at once; past the bound, wait a moment, then refuse.

        Waiting without a limit would block the accept loop, and with it `shutdown()`.
        """
        if not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            log.warning("too many connections at once, refusing one from %s", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken client (reset, bad TLS, timeout) is the client's problem: log at debug."""
        log.debug("connection from %s ended with an error", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"
    server_version = f"notte-exporter/{__version__}"
    timeout = CONNECTION_TIMEOUT_SECONDS
    # Headers and body go out in two writes; with Nagle's algorithm the body waits
    # for the client's delayed ACK of the headers, some 40 ms on every scrape.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        """`Server: notte-exporter/<version>`, without Python's version after it."""
        return self.server_version

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in OPEN_PATHS and not self._authorised():
            return
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            self._readyz()
        elif path == "/":
            self._send(200, _landing_page(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _authorised(self) -> bool:
        if not self.server.auth.enabled or self.server.auth.check(
            self.headers.get("Authorization")
        ):
            return True
        self._send(
            401,
            b"unauthorised\n",
            "text/plain; charset=utf-8",
            {"WWW-Authenticate": 'Basic realm="notte-exporter", charset="UTF-8"'},
        )
        return False

    def _metrics(self) -> None:
        accept = self.headers.get("Accept", "")
        openmetrics = "application/openmetrics-text" in accept
        gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        exposition = self.server.exposition
        body = exposition.body(openmetrics=openmetrics, gzip=gzip)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, exposition.content_type(openmetrics), headers)

    def _readyz(self) -> None:
        if self.server.store.ready:
            self._send(200, b"ready\n", "text/plain; charset=utf-8")
        else:
            self._send(
                503, b"not ready: no poll cycle has succeeded yet\n", "text/plain; charset=utf-8"
            )

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.server.web_config.headers, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _landing_page() -> bytes:
    version = html.escape(__version__)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>notte-exporter</title></head>"
        f"<body><h1>notte-exporter {version}</h1>"
        "<p>Prometheus exporter for Notte cloud-browser sessions.</p><ul>"
        "<li><a href='/metrics'>/metrics</a></li>"
        "<li><a href='/healthz'>/healthz</a></li>"
        "<li><a href='/readyz'>/readyz</a></li>"
        "</ul></body></html>\n"
    ).encode()
