"""What each path answers: `/metrics`, `/healthz`, `/readyz` and the landing page.

`http11` hands each request here once it may be answered (`access`) and writes the
`Answer` out. The endpoints only read: the exposition (cached session part, live
self part, negotiated to text or OpenMetrics, gzip or not) and the store's
readiness. A `/metrics` answer that needs a render is built in an executor: a render can
take hundreds of milliseconds at 10,000 sessions, and the event loop must keep serving
meanwhile. One from the cache is built on the loop: a thread hop would cost more.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Protocol

from exporter import __version__
from exporter.metrics.exposition import Chunks, Exposition
from exporter.web.authorisation import PLAIN, Refusal
from exporter.web.negotiation import wants_gzip, wants_openmetrics

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Request:
    """What the endpoints read of a request the parser accepted."""

    method: str  # GET or HEAD
    path: str
    accept: str | None = None
    accept_encoding: str | None = None


@dataclass(frozen=True)
class Answer:
    """A whole response: the body in the pieces to send one after the other."""

    status: HTTPStatus
    content_type: str
    body: Chunks
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    close: bool = False  # the connection is closed after it

    @classmethod
    def refused(cls, refusal: Refusal) -> Answer:
        return cls(refusal.status, PLAIN, (refusal.body,), refusal.headers)

    @classmethod
    def error(cls, status: HTTPStatus) -> Answer:
        """A request the server will not read on from: answered, then the connection closed."""
        return cls(status, PLAIN, (f"{status.value} {status.phrase}\n".encode(),), close=True)


class Readiness(Protocol):
    """What `/readyz` reads: whether a poll cycle has succeeded yet (the snapshot store)."""

    @property
    def ready(self) -> bool: ...


class Endpoints:
    """Answers requests from the exposition and the store."""

    def __init__(self, exposition: Exposition, store: Readiness, executor: Executor) -> None:
        self.exposition = exposition
        self.store = store
        self._executor = executor

    async def answer(self, request: Request) -> Answer:
        if request.path == "/metrics":
            if self.exposition.cached(
                openmetrics=wants_openmetrics(request.accept),
                gzip=wants_gzip(request.accept_encoding),
            ):
                return self.metrics(request)  # a few milliseconds: the live self part
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self.metrics, request)
        if request.path == "/healthz":
            return Answer(HTTPStatus.OK, PLAIN, (b"ok\n",))
        if request.path == "/readyz":
            if self.store.ready:
                return Answer(HTTPStatus.OK, PLAIN, (b"ready\n",))
            body = b"not ready: no poll cycle has succeeded yet\n"
            return Answer(HTTPStatus.SERVICE_UNAVAILABLE, PLAIN, (body,))
        if request.path == "/":
            return Answer(HTTPStatus.OK, "text/html; charset=utf-8", (_LANDING_PAGE,))
        return Answer(HTTPStatus.NOT_FOUND, PLAIN, (b"not found\n",))

    def metrics(self, request: Request) -> Answer:
        openmetrics = wants_openmetrics(request.accept)
        gzip = wants_gzip(request.accept_encoding)
        body = self.exposition.chunks(openmetrics=openmetrics, gzip=gzip)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return Answer(HTTPStatus.OK, self.exposition.content_type(openmetrics), body, headers)


_LANDING_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>notte-exporter</title></head>"
    f"<body><h1>notte-exporter {html.escape(__version__)}</h1>"
    "<p>Prometheus exporter for Notte cloud-browser sessions.</p><ul>"
    "<li><a href='/metrics'>/metrics</a></li>"
    "<li><a href='/healthz'>/healthz</a></li>"
    "<li><a href='/readyz'>/readyz</a></li>"
    "</ul></body></html>\n"
).encode()
