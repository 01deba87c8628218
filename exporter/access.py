"""Who may ask what, and the plain answers to those who may not, as both HTTP stages give them.

The probes (`OPEN_PATHS`) are open; every other path needs basic auth when the
web config names users. The front stage (`connections`) answers itself a request
a worker could only refuse; the endpoints (`endpoints`) give the same `Refusal`
after a check. Both take it from here, so they agree. `InForce` is one web
config with what the server builds from it, so one request sees one config.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType

from exporter import __version__
from exporter.basicauth import BasicAuthVerifier
from exporter.webconfig import WebConfig

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def request_path(target: str) -> str:
    """The path a request target names, in origin form (`/metrics?x`) or absolute form
    (`http://host:9100/metrics`, which RFC 9112 says a server must accept); leading
    slashes collapse to one, as `BaseHTTPRequestHandler` does."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    scheme, separator, rest = path.partition("://")
    if separator and scheme.lower() in ("http", "https"):
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    return "/" + path.lstrip("/") if path.startswith("//") else path


SERVER = f"notte-exporter/{__version__}"
PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Refusal:
    """A plain-text answer to a request that may not be served."""

    status: HTTPStatus
    body: bytes
    headers: Mapping[str, str]

    def response(self, extra: Mapping[str, str], *, head_only: bool = False) -> bytes:
        """The whole HTTP/1.1 response, for the front stage, which has no handler to write it."""
        fields = {"Server": SERVER, "Content-Type": PLAIN, "Content-Length": str(len(self.body))}
        fields.update(self.headers)
        fields.update(extra)
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        status = f"{self.status.value} {self.status.phrase}"
        response = f"HTTP/1.1 {status}\r\n{head}\r\n".encode("latin-1")
        return response if head_only else response + self.body


NO_CREDENTIALS = Refusal(
    HTTPStatus.UNAUTHORIZED,
    b"unauthorised\n",
    MappingProxyType({"WWW-Authenticate": 'Basic realm="notte-exporter", charset="UTF-8"'}),
)
TOO_MANY_CHECKS = Refusal(
    HTTPStatus.TOO_MANY_REQUESTS,
    b"too many password checks at once\n",
    MappingProxyType({"Retry-After": "1"}),
)


@dataclass(frozen=True)
class InForce:
    """One web config and what the server builds from it."""

    config: WebConfig
    ssl_context: ssl.SSLContext | None
    verifier: BasicAuthVerifier
