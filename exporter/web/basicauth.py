"""Basic auth for the HTTP endpoints: `Authorization: Basic ...` against bcrypt hashes.

The web config (`webconfig`) supplies the users; the HTTP server asks
`BasicAuthVerifier.check` on each request that needs it. bcrypt is slow on
purpose, so three things keep it from becoming a way in or a way to deny scrapes:

- credentials that passed once are cached (an HMAC of them, never the password),
  so a Prometheus scraping every 15 s pays bcrypt once;
- uncached checks are admitted only while fewer than `max_pending` are already
  running or waiting; past that `check` raises `VerifierBusy` at once (the server
  answers 429), so a flood of wrong passwords holds a bounded number of threads
  and bcrypt runs one at a time, on one core, as in exporter-toolkit;
- every uncached check takes as long as a check against the costliest hash,
  whatever the user's cost and whether the user exists, so timing tells nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import bcrypt

BCRYPT_MAX_PASSWORD_BYTES = 72
CACHE_SIZE = 256
# Uncached checks running or waiting at once in this verifier (the server admits them per
# peer address first: `passwordchecks`).
MAX_PENDING_CHECKS = 4
_CALIBRATION_PASSWORD = b"notte-exporter timing calibration"


class VerifierBusy(Exception):
    """Too many password checks are already under way: refuse this one now, not later."""


class BasicAuthVerifier:
    """Checks `Authorization: Basic ...` against bcrypt hashes; safe to share between threads."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        cache_size: int = CACHE_SIZE,
        max_pending: int = MAX_PENDING_CHECKS,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._users = {name.encode(): hashed for name, hashed in users.items()}
        # An unknown user is checked against the costliest real hash (result thrown away).
        self._decoy = max(self._users.values(), key=_cost, default=b"")
        self._costliest_seconds: float | None = None  # last measured check against the decoy
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._admission_lock = threading.Lock()
        self._max_pending = max_pending
        self._pending = 0  # uncached checks admitted and not finished
        self._monotonic = monotonic
        self._sleep = sleep

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    @property
    def busy(self) -> bool:
        """True while no uncached check would be admitted: the server can say 429 up front."""
        return self._pending >= self._max_pending

    def known(self, authorization_header: str | None) -> bool:
        """True for credentials that passed before and are still cached: no bcrypt, no wait."""
        credentials = _basic_credentials(authorization_header)
        if credentials is None:
            return False
        digest = self._digest(*credentials)
        with self._cache_lock:
            return digest in self._cache

    def check(self, authorization_header: str | None) -> bool:
        """True for valid credentials; raises `VerifierBusy` when no check can be admitted."""
        credentials = _basic_credentials(authorization_header)
        if credentials is None or not self._users:
            return False
        user, password = credentials
        hashed = None
        for name, candidate in self._users.items():  # every name compared, in constant time
            if hmac.compare_digest(name, user):
                hashed = candidate
        digest = self._digest(user, password)
        with self._cache_lock:
            if hashed is not None and digest in self._cache:
                self._cache.move_to_end(digest)
                return True
        if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
            return False  # bcrypt >= 5 refuses them; they can never have been hashed
        with self._admission_lock:
            if self._pending >= self._max_pending:
                raise VerifierBusy
            self._pending += 1
        try:
            matches = self._padded_check(password, hashed if hashed is not None else self._decoy)
        finally:
            with self._admission_lock:
                self._pending -= 1
        if not (matches and hashed is not None):
            return False
        with self._cache_lock:
            self._cache[digest] = None
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True

    def _digest(self, user: bytes, password: bytes) -> bytes:
        return hmac.new(self._cache_key, user + b"\0" + password, hashlib.sha256).digest()

    def _padded_check(self, password: bytes, hashed: bytes) -> bool:
        """bcrypt under the lock, then a wait outside it up to the costliest hash's time."""
        with self._bcrypt_lock:
            if _cost(hashed) < _cost(self._decoy) and self._costliest_seconds is None:
                self._costliest_seconds = self._timed(_CALIBRATION_PASSWORD, self._decoy)[1]
            started = self._monotonic()
            matches, took = self._timed(password, hashed)
            if _cost(hashed) == _cost(self._decoy):
                self._costliest_seconds = took
            target = self._costliest_seconds or took
        remaining = started + target - self._monotonic()
        if remaining > 0:
            self._sleep(remaining)
        return matches

    def _timed(self, password: bytes, hashed: bytes) -> tuple[bool, float]:
        started = self._monotonic()
        try:
            matches = bcrypt.checkpw(password, hashed)
        except ValueError:  # a hash that did not come through load_web_config
            matches = False
        return matches, self._monotonic() - started


def has_basic_credentials(header: str | None) -> bool:
    """True for a well-formed `Basic` header: one that is worth a password check."""
    return _basic_credentials(header) is not None


def _cost(hashed: bytes) -> int:
    """The cost of a `$2b$NN$...` hash; 0 for anything else."""
    return int(hashed[4:6]) if hashed[4:6].isdigit() else 0


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
