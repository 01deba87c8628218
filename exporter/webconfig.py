"""The web config file: TLS, basic auth and extra headers for the exporter's own endpoints.

The file is the Prometheus exporter-toolkit format (`--web-config-file`), read and
checked once at start: settings -> `load_web_config` -> `WebConfig` -> the HTTP
server, which builds its `ssl.SSLContext` with `build_ssl_context` and checks
`Authorization` with a `BasicAuthVerifier`.

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file,
                        min_version, max_version, prefer_server_cipher_suites}
    http_server_config: {headers: {name: value}, http2}
    basic_auth_users: {user: bcrypt hash}

A bad file is a bad setting: `WebConfigError`, one line naming the file and the
key, never a password or a hash. Relative paths resolve against the file's folder,
as in exporter-toolkit. Keys that exporter-toolkit knows but this exporter cannot
honour (`cipher_suites`, `client_allowed_sans`, `rate_limit`, inline `cert`...)
are refused by name rather than silently ignored: ignoring a security setting
would be worse than refusing to start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType(
    {
        "TLS10": ssl.TLSVersion.TLSv1,
        "TLS11": ssl.TLSVersion.TLSv1_1,
        "TLS12": ssl.TLSVersion.TLSv1_2,
        "TLS13": ssl.TLSVersion.TLSv1_3,
    }
)
# exporter-toolkit's client_auth_type -> Python's verify mode; see build_ssl_context.
CLIENT_AUTH: Mapping[str, ssl.VerifyMode] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "RequestClientCert": ssl.CERT_NONE,
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireClientCert": ssl.CERT_REQUIRED,  # exporter-toolkit's old name for the above
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)
# Auth types that verify the client certificate, so need client_ca_file.
NEEDS_CLIENT_CA = frozenset(
    {"RequireAnyClientCert", "RequireClientCert", "VerifyClientCertIfGiven"}
    | {"RequireAndVerifyClientCert"}
)
# exporter-toolkit allows exactly these response headers, some with a fixed set of
# values ("for consistency in the Prometheus ecosystem"); every other header is
# the server's own (Content-Type, WWW-Authenticate, Content-Encoding...).
ALLOWED_HEADERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Strict-Transport-Security": (),
        "X-Content-Type-Options": ("nosniff",),
        "X-Frame-Options": ("deny", "sameorigin"),
        "X-XSS-Protection": (),
        "Content-Security-Policy": (),
    }
)
TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
HTTP_KEYS = ("headers", "http2")
# exporter-toolkit keys this exporter refuses, with the reason shown to the operator.
UNSUPPORTED: Mapping[str, str] = MappingProxyType(
    {
        "rate_limit": "put a reverse proxy in front for rate limiting",
        "tls_server_config.cert": "use cert_file",
        "tls_server_config.key": "use key_file",
        "tls_server_config.client_ca": "use client_ca_file",
        "tls_server_config.cipher_suites": "Go cipher suite names have no OpenSSL mapping here",
        "tls_server_config.curve_preferences": "OpenSSL picks the curves",
        "tls_server_config.client_allowed_sans": "Python's ssl cannot check client SANs",
    }
)
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
BCRYPT_MAX_PASSWORD_BYTES = 72
CACHE_SIZE = 256


class WebConfigError(Exception):
    """The web config is unusable: one line naming the file and the key, never a secret."""


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str | None = None
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    # repr=False: a logged WebConfig must not carry the hashes.
    basic_auth_users: Mapping[str, bytes] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the file, TLS files included; raises `WebConfigError`."""
    path = Path(path).absolute()
    try:
        raw = yaml.load(path.read_bytes(), Loader=_StrictSafeLoader)  # noqa: S506 (safe)
    except OSError as exc:
        raise _error(path, f"cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        # Only the position and the parser's phrase: the snippet could hold a hash.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
        raise _error(path, f"not valid YAML{where}" + (f": {problem}" if problem else "")) from None
    try:
        return _parse({} if raw is None else raw, path.parent)
    except WebConfigError as exc:
        raise _error(path, str(exc)) from None


class _StrictSafeLoader(yaml.SafeLoader):
    """`yaml.safe_load`, but a key given twice is an error, as in exporter-toolkit's
    strict Go decoder, rather than the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may legitimately repeat keys
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


def _error(path: Path, message: str) -> WebConfigError:
    return WebConfigError(_one_line(f"web config {path}: {message}"))


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _parse(raw: object, folder: Path) -> WebConfig:
    top = _mapping(raw, "", TOP_KEYS)
    tls_raw = top.get("tls_server_config")
    tls = None
    if tls_raw is not None and tls_raw != {}:
        tls = _tls(_mapping(tls_raw, "tls_server_config", TLS_KEYS), folder)
        build_ssl_context(tls)  # prove the files load now, not at the first connection
    http = _mapping(_or_empty(top.get("http_server_config")), "http_server_config", HTTP_KEYS)
    if not isinstance(http.get("http2", True), bool):
        raise WebConfigError("http_server_config.http2: must be true or false")
    return WebConfig(
        tls=tls,
        basic_auth_users=MappingProxyType(_users(_or_empty(top.get("basic_auth_users")))),
        headers=MappingProxyType(_headers(_or_empty(http.get("headers")))),
    )


def _or_empty(value: object) -> object:
    """A key left empty (`basic_auth_users:`) is YAML null: the same as leaving it out."""
    return {} if value is None else value


def _mapping(value: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebConfigError(f"{where or 'top level'}: must be a mapping")
    for key in value:
        name = f"{where}.{key}" if where else str(key)
        if name in UNSUPPORTED:
            raise WebConfigError(f"{name}: not supported by notte-exporter ({UNSUPPORTED[name]})")
        if key not in allowed:
            raise WebConfigError(f"{name}: unknown key (expected one of {', '.join(allowed)})")
    return value


def _tls(raw: dict[str, Any], folder: Path) -> TLSConfig:
    for key in ("cert_file", "key_file", "client_ca_file"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise WebConfigError(f"tls_server_config.{key}: must be a file name")
    for key in ("cert_file", "key_file"):
        if not raw.get(key):
            raise WebConfigError(f"tls_server_config.{key}: required")
    client_auth = _choice(raw, "client_auth_type", CLIENT_AUTH, "NoClientCert")
    min_version = _choice(raw, "min_version", TLS_VERSIONS, "TLS12")
    max_version = _choice(raw, "max_version", TLS_VERSIONS, None)
    if max_version is not None and TLS_VERSIONS[max_version] < TLS_VERSIONS[min_version]:
        raise WebConfigError(
            f"tls_server_config.max_version: {max_version} is below min_version {min_version}"
        )
    prefer_server = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer_server, bool):
        raise WebConfigError("tls_server_config.prefer_server_cipher_suites: must be true or false")
    ca = raw.get("client_ca_file") or None
    if client_auth in NEEDS_CLIENT_CA and ca is None:
        raise WebConfigError(
            f"tls_server_config.client_ca_file: required by client_auth_type {client_auth}"
        )
    if client_auth == "NoClientCert" and ca is not None:
        # exporter-toolkit refuses this too: a CA that is never used looks like protection.
        raise WebConfigError(
            "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert"
        )
    return TLSConfig(
        cert_file=_existing(folder, raw["cert_file"], "cert_file"),
        key_file=_existing(folder, raw["key_file"], "key_file"),
        client_auth_type=client_auth,
        client_ca_file=_existing(folder, ca, "client_ca_file") if ca is not None else None,
        min_version=min_version,
        max_version=max_version,
        prefer_server_cipher_suites=prefer_server,
    )


def _choice(raw: dict[str, Any], key: str, known: Mapping[str, Any], default: str | None) -> Any:
    value = raw.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in known:
        raise WebConfigError(
            f"tls_server_config.{key}: unknown value {value!r} (expected one of {', '.join(known)})"
        )
    return value


def _existing(folder: Path, name: str, key: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise WebConfigError(f"tls_server_config.{key}: file not found: {path}")
    return path


def _users(raw: object) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise WebConfigError("basic_auth_users: must be a mapping of user name to bcrypt hash")
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user:
            raise WebConfigError(f"basic_auth_users.{user}: a user name must be quoted text")
        if ":" in user or "\0" in user:
            raise WebConfigError(f"basic_auth_users.{user}: no ':' or NUL allowed in a user name")
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(
                f"basic_auth_users.{user}: not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31)"
            )
        users[user] = hashed.encode("ascii")
    return users


def _headers(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise WebConfigError("http_server_config.headers: must be a mapping of name to value")
    canonical = {name.lower(): name for name in ALLOWED_HEADERS}
    headers = {}
    for name, value in raw.items():
        key = f"http_server_config.headers.{name}"
        allowed = canonical.get(name.lower()) if isinstance(name, str) else None
        if allowed is None:
            raise WebConfigError(
                f"{key}: cannot be configured (allowed: {', '.join(canonical.values())})"
            )
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `X-XSS-Protection: 0` is an int to YAML, text to exporter-toolkit
        if value is None or value == "":
            continue  # exporter-toolkit: "unset if blank"
        if not isinstance(value, str) or not HEADER_VALUE.fullmatch(value):
            raise WebConfigError(f"{key}: must be printable ASCII text")
        choices = ALLOWED_HEADERS[allowed]
        if choices and value.lower() not in choices:
            raise WebConfigError(f"{key}: must be one of {', '.join(choices)}")
        headers[allowed] = value
    return headers


class _EncryptedKey(Exception):
    """The key file asked for a passphrase; OpenSSL would otherwise prompt on the terminal."""


def _no_passphrase() -> bytes:
    raise _EncryptedKey


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """A server-side context for `tls`; raises `WebConfigError` naming the key at fault.

    client_auth_type maps onto OpenSSL's verify modes. NoClientCert,
    VerifyClientCertIfGiven (CERT_OPTIONAL) and RequireAndVerifyClientCert
    (CERT_REQUIRED) match Go exactly. Python's ssl cannot accept a client
    certificate without verifying it, so the two unverified Go modes become their
    nearest safe equivalent: RequestClientCert asks for nothing (CERT_NONE; Go
    would ask but not check, and nothing here reads the certificate, so access is
    the same), and RequireAnyClientCert requires a certificate that verifies
    against client_ca_file (CERT_REQUIRED: stricter than Go, which takes any).

    TLS10/TLS11 are honoured as a minimum, but OpenSSL's default security level
    may still refuse those protocols at handshake time.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1; the operator asked for them by name.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        if tls.max_version is not None:
            context.maximum_version = TLS_VERSIONS[tls.max_version]
    if not tls.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_certificates(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls.cert_file, "cert_file")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise WebConfigError(
            f"tls_server_config.key_file: {tls.key_file} is encrypted; give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        problem = (
            "does not match cert_file"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "no usable PEM private key"
        )
        raise WebConfigError(f"tls_server_config.key_file: {problem}: {tls.key_file}") from None
    except OSError as exc:
        raise WebConfigError(
            f"tls_server_config.key_file: cannot read {tls.key_file}: {exc.strerror or exc}"
        ) from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        _load_certificates(context, tls.client_ca_file, "client_ca_file")
    elif context.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(
            f"tls_server_config.client_ca_file: required by client_auth_type {tls.client_auth_type}"
        )
    return context


def _load_certificates(context: ssl.SSLContext, path: Path, key: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise WebConfigError(f"tls_server_config.{key}: no PEM certificate in {path}") from None
    except OSError as exc:
        raise WebConfigError(
            f"tls_server_config.{key}: cannot read {path}: {exc.strerror or exc}"
        ) from None


class BasicAuthVerifier:
    """Checks `Authorization: Basic ...` against bcrypt hashes, caching successes.

    A scrape every 15 s would otherwise pay ~100-300 ms of bcrypt each time. The
    cache holds HMAC-SHA256(per-process random key, user NUL password), never the
    password, and the random key means a leaked entry cannot be looked up in a
    precomputed table. Failures are not cached; bcrypt runs one at a time (as in
    exporter-toolkit) so a flood of wrong passwords costs one core, not all.
    """

    def __init__(self, users: Mapping[str, bytes], *, cache_size: int = CACHE_SIZE) -> None:
        self._users = {name.encode(): hashed for name, hashed in users.items()}
        # An unknown user is checked against the costliest real hash (result thrown
        # away), so the time taken does not tell a real user name from a wrong one.
        self._decoy = max(self._users.values(), key=lambda h: h[4:6], default=b"")
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, authorization_header: str | None) -> bool:
        credentials = _basic_credentials(authorization_header)
        if credentials is None or not self._users:
            return False
        user, password = credentials
        hashed = None
        for name, candidate in self._users.items():  # every name compared, in constant time
            if hmac.compare_digest(name, user):
                hashed = candidate
        digest = hmac.new(self._cache_key, user + b"\0" + password, hashlib.sha256).digest()
        with self._cache_lock:
            if hashed is not None and digest in self._cache:
                self._cache.move_to_end(digest)
                return True
        if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
            return False  # bcrypt >= 5 refuses them; they can never have been hashed
        with self._bcrypt_lock:
            try:
                matches = bcrypt.checkpw(password, hashed if hashed is not None else self._decoy)
            except ValueError:  # a hash that did not come through load_web_config
                matches = False
        if not (matches and hashed is not None):
            return False
        with self._cache_lock:
            self._cache[digest] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True


def _basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """`Basic base64(user:password)` -> (user, password) as bytes, or None if malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    # A user name holding NUL would make the cache key ambiguous; none is configured.
    if not sep or b"\0" in user:
        return None
    return user, password
