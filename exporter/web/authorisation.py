"""Who may ask what, and the plain answers to those who may not.

The probes (`OPEN_PATHS`) are open; every other path needs basic auth when the
web config names users. Credentials seen before pass at once (`BasicAuthVerifier.known`);
others wait for a bcrypt check admitted per peer address (`passwordchecks`). `InForce`
is one web config with what the server builds from it, so one request sees one config.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType

from exporter import __version__
from exporter.web.basicauth import BasicAuthVerifier, VerifierBusy, has_basic_credentials
from exporter.web.passwordchecks import PasswordChecks
from exporter.web.webconfig import WebConfig

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


async def refusal(
    path: str, authorization: str | None, peer: str, in_force: InForce, checks: PasswordChecks
) -> Refusal | None:
    """None when the request may be answered, else how it is refused."""
    verifier = in_force.verifier
    if path in OPEN_PATHS or not verifier.enabled or verifier.known(authorization):
        return None
    if not has_basic_credentials(authorization):
        return NO_CREDENTIALS
    try:
        matches = await checks.check(verifier, peer, authorization)
    except VerifierBusy:
        return TOO_MANY_CHECKS
    return None if matches else NO_CREDENTIALS
