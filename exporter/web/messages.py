"""What h11 is told and asked of a request: whether it is read on, and the answer's head.

Only GET and HEAD without a body are read on; any other request gets an error answer
that closes the connection, so that no body is ever read as the next request. A head is
bounded (`MAX_HEADER_BYTES`, `MAX_HEADERS`): h11 refuses one still incomplete past
the bound; one that came whole in the bytes that crossed it is measured here.
"""

from __future__ import annotations

import logging
from email.utils import formatdate
from http import HTTPStatus

import h11

from exporter.web.authorisation import SERVER, InForce
from exporter.web.routes import Answer

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100


def framing_error(exc: h11.RemoteProtocolError, parser: h11.Connection) -> Answer:
    """The answer to a request h11 will not frame: 400, or 431 / 414 for a head too large."""
    log.debug("bad request framing: %s", exc)
    if exc.error_status_hint != HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        return Answer.error(HTTPStatus.BAD_REQUEST)
    line_ends = b"\n" in parser.trailing_data[0]
    return Answer.error(
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE if line_ends else HTTPStatus.REQUEST_URI_TOO_LONG
    )


def not_read_on(request: h11.Request) -> Answer | None:
    """The error answer for a request not to be read on from, or None to answer it."""
    if request.method not in (b"GET", b"HEAD"):
        return Answer.error(HTTPStatus.NOT_IMPLEMENTED)
    # h11 bounds a head still incomplete after a read; one that came whole in the bytes
    # that crossed the bound (at most MAX_HEADER_BYTES more) is measured here.
    size = len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)
    if len(request.target) > MAX_HEADER_BYTES:
        return Answer.error(HTTPStatus.REQUEST_URI_TOO_LONG)
    if len(request.headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
        return Answer.error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.lstrip(b"0")):
            return Answer.error(HTTPStatus.BAD_REQUEST)  # a body: it would be the next request
    return None


def response(answer: Answer, in_force: InForce) -> h11.Response:
    fields = {
        "Server": SERVER,
        "Date": formatdate(usegmt=True),
        "Content-Type": answer.content_type,
        "Content-Length": str(sum(map(len, answer.body))),
        **answer.headers,
        **in_force.config.headers,
    }
    if answer.close:
        fields["Connection"] = "close"
    return h11.Response(
        status_code=answer.status.value,
        headers=list(fields.items()),
        reason=answer.status.phrase.encode(),
    )
