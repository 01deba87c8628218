"""Reading an API answer's body within a size cap, decompressing it as it comes.

The client streams every 2xx body through `read_body` instead of letting httpx
buffer and decode it: httpx decodes whole chunks, so a 2 MB gzip body that
expands to 2 GiB would be expanded before anyone could count it. Here the
bytes on the wire and the bytes after decoding are both capped, and zlib is
asked for at most the room left under the cap, so memory stays near the cap
whatever the server sends (a huge body, an endless chunked one, a gzip bomb).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

# Content-Encoding values (RFC 9110) and the zlib window bits that read them.
_GZIP_WBITS = zlib.MAX_WBITS | 16
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
_SLICE = 64 * 1024  # decoded bytes asked of zlib at a time
_ENCODINGS = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": _ZLIB_WBITS}


class BodyTooLarge(Exception):
    """The body is over the cap, on the wire or once decoded."""


class BodyUndecodable(Exception):
    """The body's Content-Encoding is unknown or its compressed data is corrupt."""


class BoundedDecoder:
    """Decodes one Content-Encoding piece by piece, never producing more than `limit` bytes.

    gzip bodies may hold several members back to back (RFC 1952), each read in
    turn; `deflate` is zlib-wrapped by the RFC, but raw deflate is accepted too,
    as browsers and httpx do.
    """

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise BodyUndecodable(f"unsupported Content-Encoding {content_encoding[:40]!r}")
        if codings and codings[0] not in _ENCODINGS:
            raise BodyUndecodable(f"unsupported Content-Encoding {codings[0][:40]!r}")
        self._wbits = _ENCODINGS[codings[0]] if codings else None
        self._inflater = zlib.decompressobj(self._wbits) if self._wbits is not None else None
        self._started = False
        self._limit = limit
        self._raw = 0
        self._body = bytearray()

    def feed(self, data: bytes) -> None:
        """Take the next raw piece; raises `BodyTooLarge` as soon as either count passes the cap."""
        self._raw += len(data)
        if self._raw > self._limit:
            raise BodyTooLarge
        if self._inflater is None:
            self._append(data)
            return
        try:
            self._inflate(data)
        except zlib.error as exc:
            raise BodyUndecodable(f"the compressed body is corrupt ({exc})") from None

    def finish(self) -> bytearray:
        """The whole decoded body, once the stream has ended (not copied: it may be 16 MiB)."""
        if self._inflater is not None:
            try:
                self._append(self._inflater.flush(self._room()))
            except zlib.error as exc:
                raise BodyUndecodable(f"the compressed body is corrupt ({exc})") from None
        return self._body

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        if not self._started and data and self._wbits == _ZLIB_WBITS:
            self._started = True
            try:
                zlib.decompressobj(_ZLIB_WBITS).decompress(data[:2])
            except zlib.error:
                self._wbits = _RAW_DEFLATE_WBITS
                self._inflater = zlib.decompressobj(self._wbits)
        while data:
            # Small slices, at most one byte past the cap: enough to know it is
            # over, and never a second copy of the body in flight.
            self._append(self._inflater.decompress(data, min(self._room(), _SLICE)))
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                data = self._inflater.unused_data + data
                if self._wbits != _GZIP_WBITS or not data:
                    return  # trailing bytes after a zlib stream are ignored, as zlib does
                self._inflater = zlib.decompressobj(_GZIP_WBITS)

    def _room(self) -> int:
        return self._limit + 1 - len(self._body)

    def _append(self, data: bytes) -> None:
        self._body += data
        if len(self._body) > self._limit:
            raise BodyTooLarge


async def read_body(
    chunks: AsyncIterator[bytes], content_encoding: str, content_length: str | None, *, limit: int
) -> bytearray:
    """The decoded body from raw wire chunks; raises `BodyTooLarge` or `BodyUndecodable`.

    A declared Content-Length over the cap fails before anything is read.
    """
    declared = (content_length or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared[:20]) > limit:
        raise BodyTooLarge
    decoder = BoundedDecoder(content_encoding, limit)
    async for chunk in chunks:
        decoder.feed(chunk)
    return decoder.finish()
