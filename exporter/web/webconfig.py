"""The web config file: TLS, basic auth and extra headers for the exporter's own endpoints.

The file is the Prometheus exporter-toolkit format (`--web-config-file`):
settings -> `WebConfigWatcher` (`load_web_config` at start, again whenever the
file or its TLS files change) -> `WebConfig` -> the HTTP server, which builds
its `ssl.SSLContext` with `build_ssl_context` and checks `Authorization` with a
`basicauth.BasicAuthVerifier`.

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

import logging
import re
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

log = logging.getLogger(__name__)

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
RELOAD_CHECK_SECONDS = 1.0  # how often `WebConfigWatcher.current` looks at the files


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


# What a file looked like when last read: enough to notice an in-place rewrite, a
# rename over it, or a Kubernetes secret's symlink swap.
_FileStamp = tuple[str, int, int, int, int] | tuple[str, None]


def _stamp(path: Path) -> _FileStamp:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _watched_files(path: Path, config: WebConfig) -> tuple[Path, ...]:
    tls = config.tls
    if tls is None:
        return (path,)
    return (path, tls.cert_file, tls.key_file, *filter(None, [tls.client_ca_file]))


class WebConfigWatcher:
    """The web config file, re-read when it or its TLS files change.

    As in exporter-toolkit, a change applies to new connections without a
    restart. `current()` looks at the files at most once per `check_interval`;
    a file that became invalid keeps the last good config in force, logs one
    error (not one per check) and is tried again at each check until it is good.
    The first read happens here, so a bad file at start is a bad setting.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        check_interval: float = RELOAD_CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path).absolute()
        self._check_interval = check_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._config = load_web_config(self.path)
        self._stamps = self._stamp_files(self._config)
        self._failure: str | None = None
        self._next_check = monotonic() + check_interval

    def current(self) -> WebConfig:
        """The config in force; re-read first when the files changed since the last look."""
        if self._monotonic() >= self._next_check:
            with self._lock:
                now = self._monotonic()
                if now >= self._next_check:
                    self._next_check = now + self._check_interval
                    if self._failure is not None or self._stamp_files(self._config) != self._stamps:
                        self._load()
        return self._config

    def reload(self) -> bool:
        """Re-read now (SIGHUP); False when the file is bad and the last good config stays."""
        with self._lock:
            self._next_check = self._monotonic() + self._check_interval
            return self._load()

    def _load(self) -> bool:
        try:
            config = load_web_config(self.path)
        except WebConfigError as exc:
            if str(exc) != self._failure:
                log.error("%s; the last good web config stays in force", exc)
            self._failure = str(exc)
            return False
        self._config = config
        self._stamps = self._stamp_files(config)
        self._failure = None
        log.info("web config (re)loaded from %s", self.path)
        return True

    def _stamp_files(self, config: WebConfig) -> tuple[_FileStamp, ...]:
        return tuple(_stamp(file) for file in _watched_files(self.path, config))
