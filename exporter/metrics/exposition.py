"""The `/metrics` body: the cached session part, then the account part and the live self part.

The session part (every `notte_session*` family and the aggregates) only
changes when a poll cycle publishes a new snapshot, so it is rendered at most
once per snapshot and per format and encoding, and served from memory after
that. A variant is first rendered when a scrape asks for it; from then on the
poll cycle renders it ahead (`warm`) right after publishing, and scrapes that
arrive meanwhile get the previous snapshot's part, so no scrape waits for a
render (hundreds of milliseconds at 10,000 sessions). The exporter's own
metrics are current at every scrape: those that change only when the exporter
says so (API requests, poll timings) are rendered again only after a change
(`SelfPart.revision`), the age of the stalest data at every scrape, and the process
and GC metrics once they are `PROCESS_RENDER_SECONDS` old. The account part
(functions, the runtime, usage: `render.render_account_families`) is rendered once
per account snapshot and format, when a scrape first asks for it.

Gzip keeps that split: the session part is compressed once into a deflate
stream that is flushed but not finished; a scrape copies the compressor,
appends the self part and finishes the stream, so the answer is one ordinary
gzip member at the cost of compressing a few kilobytes.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format

from exporter.metrics.metricfilter import EVERY_FAMILY, Served
from exporter.metrics.render import (
    render_account_families,
    render_session_families,
)
from exporter.polling.accountsnapshot import AccountSnapshot
from exporter.polling.snapshot import Snapshot

# The contract's text format 0.0.4, which is what the body is; prometheus-client
# 0.22+ names text 1.0.0 "latest", a version older scrapers do not know.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_format.CONTENT_TYPE_LATEST
_EOF = b"# EOF\n"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_GZIP_LEVEL = 6
# The process collector lists /proc/self/fd: some 0.6 ms per 1,000 open connections,
# on the server's event loop. Rendered at most once a second, a connect flood cannot
# make every scrape pay it, and no rate() over a scrape interval can tell.
PROCESS_RENDER_SECONDS = 1.0

Chunks = tuple[bytes, ...]  # one answer, in the order its pieces are sent


def _render(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    if openmetrics:
        rendered: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
        return rendered.removesuffix(_EOF)
    return text_format.generate_latest(registry)


class SelfPart(Protocol):
    """The exporter's own metrics (`selfmetrics.SelfMetrics`), as a scrape renders them."""

    @property
    def registry(self) -> CollectorRegistry:
        """Instruments that change only when `revision` moves."""

    @property
    def live(self) -> CollectorRegistry:
        """Collectors that change by themselves, cheaply; rendered at every scrape."""

    @property
    def process(self) -> CollectorRegistry:
        """The process and GC collectors; rendered again once `PROCESS_RENDER_SECONDS` old."""

    @property
    def revision(self) -> int: ...


@dataclass(frozen=True)
class _GzipPrefix:
    """A deflate stream holding the session part, flushed to a byte boundary but not ended."""

    data: bytes
    compressor: zlib._Compress
    crc: int
    size: int

    def finish(self, tail: bytes) -> Chunks:
        """The whole gzip member: the cached stream as it is, then `tail` and the trailer."""
        compressor = self.compressor.copy()
        body = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
        crc = zlib.crc32(tail, self.crc)
        trailer = struct.pack("<II", crc & 0xFFFFFFFF, (self.size + len(tail)) & 0xFFFFFFFF)
        return _GZIP_HEADER, self.data, body + trailer


def _gzip_prefix(data: bytes) -> _GzipPrefix:
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    prefix = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _GzipPrefix(prefix, compressor, zlib.crc32(data), len(data))


@dataclass(frozen=True)
class _Rendered:
    """The session part of one snapshot in one format, and its gzip prefix once asked for."""

    generation: int
    plain: bytes
    gzip: _GzipPrefix | None = None


class Exposition:
    """Builds `/metrics` bodies; the session part is cached per snapshot generation.

    While `warm` renders a new snapshot, scrapes are served the previous
    snapshot's part (at most one render old) instead of waiting for it; any other
    time a scrape gets the current snapshot, rendering it itself when nothing has.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        self_part: SelfPart,
        *,
        account: Callable[[], AccountSnapshot] | None = None,
        served: Served = EVERY_FAMILY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._self = self_part
        self._clock = clock
        # by openmetrics: (the revision it was rendered at, the render); replaced, not mutated
        self._self_rendered: dict[bool, tuple[int, bytes]] = {}
        # by openmetrics: (the clock when it was rendered, the render); replaced, not mutated
        self._process_rendered: dict[bool, tuple[float, bytes]] = {}
        self._served = served
        self._account = account
        # by openmetrics: (the account snapshot it was rendered from, the render)
        self._account_rendered: dict[bool, tuple[AccountSnapshot, bytes]] = {}
        self._render_lock = threading.Lock()  # one render at a time, never the same one twice
        self._rendered: dict[bool, _Rendered] = {}  # by openmetrics; entries replaced, not mutated
        self._warming = False
        # (openmetrics, gzip) pairs asked for, at most 4; replaced, never mutated,
        # so `warm` can iterate it while a scrape thread adds one.
        self._requested: frozenset[tuple[bool, bool]] = frozenset()

    def body(self, *, openmetrics: bool, gzip: bool) -> bytes:
        """The whole answer for one scrape, compressed when `gzip`, in one piece."""
        return b"".join(self.chunks(openmetrics=openmetrics, gzip=gzip))

    def chunks(self, *, openmetrics: bool, gzip: bool) -> Chunks:
        """The same answer in the pieces the server sends one after the other.

        The cached session part (some 14 MiB of text at 10,000 sessions) goes out
        as it is: joining it to the live part would copy it at every scrape, in
        every worker thread at once.
        """
        if (openmetrics, gzip) not in self._requested:
            self._requested = self._requested | {(openmetrics, gzip)}
        tail = self._self_metrics(openmetrics) + (_EOF if openmetrics else b"")
        if self._account is not None:
            tail = self._account_metrics(self._account(), openmetrics) + tail
        part = self._part(openmetrics, gzip)
        if gzip:
            assert part.gzip is not None
            return part.gzip.finish(tail)
        return part.plain, tail

    def _self_metrics(self, openmetrics: bool) -> bytes:
        """The exporter's own metrics, their changed-on-notice part rendered once per change.

        The revision is read before rendering: a change during the render moves it,
        so that render is not served past the change.
        """
        revision = self._self.revision
        kept = self._self_rendered.get(openmetrics)
        if kept is None or kept[0] != revision:
            kept = (revision, _render(self._self.registry, openmetrics))
            self._self_rendered[openmetrics] = kept
        return kept[1] + self._process_metrics(openmetrics) + _render(self._self.live, openmetrics)

    def _process_metrics(self, openmetrics: bool) -> bytes:
        """The process and GC metrics, rendered again once `PROCESS_RENDER_SECONDS` old."""
        now = self._clock()
        kept = self._process_rendered.get(openmetrics)
        if kept is None or not 0 <= now - kept[0] < PROCESS_RENDER_SECONDS:
            kept = (now, _render(self._self.process, openmetrics))
            self._process_rendered[openmetrics] = kept
        return kept[1]

    def _account_metrics(self, snapshot: AccountSnapshot, openmetrics: bool) -> bytes:
        """The account part of `snapshot`, rendered once: a published snapshot never changes."""
        kept = self._account_rendered.get(openmetrics)
        if kept is None or kept[0] is not snapshot:
            kept = (snapshot, render_account_families(snapshot, self._served.account, openmetrics))
            self._account_rendered[openmetrics] = kept
        return kept[1]

    def warm(self) -> None:
        """Render, for the current snapshot, every variant a scrape has asked for.

        Called after each poll cycle, off the event loop.
        """
        self._warming = True
        try:
            for openmetrics, gzip in sorted(self._requested):
                self._render_current(openmetrics, gzip)
        finally:
            self._warming = False

    def content_type(self, openmetrics: bool) -> str:
        return OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE

    def cached(self, *, openmetrics: bool, gzip: bool) -> bool:
        """Whether `chunks` would serve the cached part now, rendering nothing: the server
        then builds the answer on its event loop instead of handing it to a thread."""
        return self._usable(self._rendered.get(openmetrics), gzip)

    def _usable(self, rendered: _Rendered | None, gzip: bool) -> bool:
        if rendered is None or (gzip and rendered.gzip is None):
            return False
        return rendered.generation == self._snapshot().generation or self._warming

    def _part(self, openmetrics: bool, gzip: bool) -> _Rendered:
        """The cached part when it will do, else a render of the current snapshot."""
        rendered = self._rendered.get(openmetrics)
        if rendered is not None and self._usable(rendered, gzip):
            return rendered
        return self._render_current(openmetrics, gzip)

    def _render_current(self, openmetrics: bool, gzip: bool) -> _Rendered:
        """The part for the current snapshot, rendering only what is not there yet."""
        with self._render_lock:
            snapshot = self._snapshot()
            rendered = self._rendered.get(openmetrics)
            if rendered is None or rendered.generation != snapshot.generation:
                plain = render_session_families(snapshot, openmetrics, self._served)
                rendered = _Rendered(snapshot.generation, plain)
            if gzip and rendered.gzip is None:
                rendered = _Rendered(
                    rendered.generation, rendered.plain, _gzip_prefix(rendered.plain)
                )
            self._rendered[openmetrics] = rendered
            return rendered
