"""What each path answers: `/metrics`, `/healthz`, `/readyz` and the landing page.

The workers of `http_server` hand each complete request head here and write the
answer out. The endpoints only read: the exposition (cached session part, live
self part, negotiated to text or OpenMetrics, gzip or not) and the store's
readiness. Paths other than `access.OPEN_PATHS` need basic auth when the web
config names users.
"""

from __future__ import annotations

import html
import io
import logging
import socket
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

from exporter import __version__
from exporter.access import (
    NO_CREDENTIALS,
    OPEN_PATHS,
    PLAIN,
    SERVER,
    TOO_MANY_CHECKS,
    InForce,
    Refusal,
    request_path,
)
from exporter.basicauth import VerifierBusy
from exporter.exposition import Chunks, Exposition
from exporter.negotiation import wants_gzip, wants_openmetrics
from exporter.snapshot import SnapshotStore

log = logging.getLogger(__name__)


class Endpoints:
    """Answers requests from the exposition and the store; safe to share between workers."""

    def __init__(self, exposition: Exposition, store: SnapshotStore) -> None:
        self.exposition = exposition
        self.store = store

    def answer(
        self, sock: socket.socket, peer: str, head: bytes, in_force: InForce
    ) -> tuple[Chunks, bool]:
        """The whole response to one request, in pieces to send one after the other (the
        head, then the body as the exposition holds it), and whether the connection may
        carry another."""
        handler = _Handler(sock, peer, head, self, in_force)
        return (handler.response.getvalue(), *handler.body), not handler.close_connection


class _Handler(BaseHTTPRequestHandler):
    """One request, parsed from its complete head; the answer is written to `wfile`."""

    server: Endpoints  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    server_version = SERVER

    def __init__(
        self, sock: socket.socket, peer: str, head: bytes, endpoints: Endpoints, settings: InForce
    ) -> None:
        self._head = head
        self._settings = settings  # one config for the whole request
        super().__init__(sock, (peer, 0), endpoints)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.response = io.BytesIO()  # the head (or a whole error answer)
        self.wfile = self.response
        self.body: Chunks = ()  # sent after it, never copied into it

    def handle(self) -> None:
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (headers.get("Content-Length") or "0") != "0":
            self.close_connection = True  # its body would be read as the next request
        if headers is not None and headers.get("Transfer-Encoding"):
            self.close_connection = True

    def finish(self) -> None:
        pass  # a worker writes the answer out, the front stage the rest with a deadline

    def version_string(self) -> str:
        """`Server: notte-exporter/<version>`, without Python's version after it."""
        return self.server_version

    def end_headers(self) -> None:
        for name, value in self._settings.config.headers.items():
            self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:
        path = request_path(self.path)
        if path not in OPEN_PATHS and not self._authorised():
            return
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._send(200, b"ok\n", PLAIN)
        elif path == "/readyz":
            self._readyz()
        elif path == "/":
            self._send(200, _landing_page(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", PLAIN)

    do_HEAD = do_GET

    def _authorised(self) -> bool:
        verifier = self._settings.verifier
        if not verifier.enabled:
            return True
        try:
            if verifier.check(self.headers.get("Authorization")):
                return True
        except VerifierBusy:
            self._refuse(TOO_MANY_CHECKS)
            return False
        self._refuse(NO_CREDENTIALS)
        return False

    def _metrics(self) -> None:
        openmetrics = wants_openmetrics(", ".join(self.headers.get_all("Accept", [])))
        gzip = wants_gzip(", ".join(self.headers.get_all("Accept-Encoding", [])))
        exposition = self.server.exposition
        body = exposition.chunks(openmetrics=openmetrics, gzip=gzip)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, exposition.content_type(openmetrics), headers)

    def _readyz(self) -> None:
        if self.server.store.ready:
            self._send(200, b"ready\n", PLAIN)
        else:
            self._send(503, b"not ready: no poll cycle has succeeded yet\n", PLAIN)

    def _send(
        self,
        status: int,
        body: bytes | Chunks,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        chunks = (body,) if isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(chunk) for chunk in chunks)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.body = chunks

    def _refuse(self, refusal: Refusal) -> None:
        self._send(refusal.status, refusal.body, PLAIN, refusal.headers)

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
