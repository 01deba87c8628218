"""The web config file: TLS and basic auth, in the Prometheus exporter-toolkit format.

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file,
                        min_version, max_version}
    http_server_config: {headers: {name: value}}
    basic_auth_users: {user: bcrypt hash}

Loaded and checked once at start (a bad file is a bad setting: one line
naming the key). Paths are relative to the file's folder, as in
exporter-toolkit. Basic auth compares in constant time and caches successful
verifications, so a scrape every 15 s does not pay bcrypt every time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's client_auth_type -> Python's verify mode. Python cannot ask
# for a certificate without verifying it, so RequestClientCert and
# RequireAnyClientCert verify against client_ca_file (or accept none) too.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_KEYS = frozenset(
    {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
)
TOP_KEYS = frozenset({"tls_server_config", "http_server_config", "basic_auth_users"})
# Headers the server sets itself; a web config may not override them.
FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "www-authenticate",
        "content-type",
        "content-length",
        "content-encoding",
        "server",
        "date",
        "connection",
        "transfer-encoding",
        "vary",
    }
)
_CACHE_SIZE = 256
_DUMMY_HASH = bcrypt.hashpw(b"dummy password", bcrypt.gensalt(rounds=4))


class WebConfigError(Exception):
    """The web config is unusable; one line naming the file and key, never a secret."""


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str | None = None


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the file; raises `WebConfigError` on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebConfigError(f"web config {path}: cannot read: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise WebConfigError(f"web config {path}: not valid YAML{line}") from None
    try:
        return _parse(raw or {}, path.parent)
    except ValueError as exc:
        raise WebConfigError(f"web config {path}: {exc}") from None


def _parse(raw: Any, folder: Path) -> WebConfig:
    section = _mapping(raw, "top level", TOP_KEYS)
    tls = None
    if section.get("tls_server_config") is not None:
        tls = _tls(_mapping(section["tls_server_config"], "tls_server_config", TLS_KEYS), folder)
        build_ssl_context(tls)
    http = _mapping(section.get("http_server_config") or {}, "http_server_config", {"headers"})
    return WebConfig(
        tls=tls,
        basic_auth_users=_users(section.get("basic_auth_users") or {}),
        headers=_headers(http.get("headers") or {}),
    )


def _mapping(value: Any, where: str, allowed: frozenset[str] | set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a mapping")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    return value


def _tls(raw: dict[str, Any], folder: Path) -> TLSConfig:
    for key in ("cert_file", "key_file"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"tls_server_config.{key}: required")
    client_auth = raw.get("client_auth_type") or "NoClientCert"
    if client_auth not in CLIENT_AUTH:
        raise ValueError(f"tls_server_config.client_auth_type: unknown value {client_auth!r}")
    for key in ("min_version", "max_version"):
        if raw.get(key) is not None and raw[key] not in TLS_VERSIONS:
            raise ValueError(f"tls_server_config.{key}: unknown version {raw[key]!r}")
    ca = raw.get("client_ca_file")
    if client_auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not ca:
        raise ValueError(f"tls_server_config.client_ca_file: required by {client_auth}")
    return TLSConfig(
        cert_file=_existing(folder, raw["cert_file"], "cert_file"),
        key_file=_existing(folder, raw["key_file"], "key_file"),
        client_auth_type=client_auth,
        client_ca_file=_existing(folder, ca, "client_ca_file") if ca else None,
        min_version=raw.get("min_version") or "TLS12",
        max_version=raw.get("max_version"),
    )


def _existing(folder: Path, name: str, key: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise ValueError(f"tls_server_config.{key}: file not found: {path}")
    return path


def _users(raw: Any) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise ValueError("basic_auth_users: must be a mapping of user to bcrypt hash")
    users = {}
    for user, hashed in raw.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(f"basic_auth_users.{user}: not a bcrypt hash")
        users[str(user)] = hashed.encode()
    return users


def _headers(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError("http_server_config.headers: must be a mapping")
    headers = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"http_server_config.headers.{name}: must be text")
        if name.lower() in FORBIDDEN_HEADERS or "\n" in value or "\r" in value:
            raise ValueError(f"http_server_config.headers.{name}: may not be set")
        headers[name] = value
    return headers


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server-side context; raises `ValueError` naming the key whose file does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version:
        context.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError):
        raise ValueError("tls_server_config.cert_file/key_file: cannot load the pair") from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError):
            raise ValueError("tls_server_config.client_ca_file: cannot load") from None
    elif context.verify_mode != ssl.CERT_NONE:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


class BasicAuthVerifier:
    """Checks `Authorization: Basic ...` against bcrypt hashes, caching successes."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, authorization: str | None) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        # The cache key is a digest of both: the plaintext password is never stored.
        digest = hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()
        with self._lock:
            if digest in self._verified:
                self._verified.move_to_end(digest)
                return True
        hashed = self._users.get(user)
        # An unknown user pays one bcrypt check too, so timing does not tell users apart.
        ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        if ok:
            with self._lock:
                self._verified[digest] = None
                if len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        return ok


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if not hmac.compare_digest(scheme.lower().encode(), b"basic"):
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
