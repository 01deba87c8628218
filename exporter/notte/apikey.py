"""Where the API key comes from: a setting, or a file that is re-read when it changes.

A mounted Kubernetes or Docker secret can be rotated while the exporter runs;
re-reading the file when its modification time or size changes (or on
SIGHUP, `reload()`) lets a new key take effect without a restart. A file that
disappears, turns empty or unreadable keeps the last good key in use: one
warning when that starts, one info line when the file is good again, and
never an exit. The key is held as a `SecretStr` so that no repr, log line or
traceback shows it, and every key read is pushed into the log `Redactor`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import SecretStr

from exporter.logs import Redactor, Trouble
from exporter.settings import check_api_key

log = logging.getLogger(__name__)


class ApiKeyError(Exception):
    """The key file cannot be read or holds no usable key: `<path>: <cause>`, never the content."""


class ApiKeySource:
    """Gives the current API key, from a fixed value or a file."""

    def __init__(
        self,
        *,
        key: SecretStr | None = None,
        path: Path | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        """Raises `ApiKeyError` when the file cannot give a first key."""
        if (key is None) == (path is None):
            raise ValueError("give exactly one of key and path")
        self._path = path
        self._redactor = redactor or Redactor()
        self._trouble = Trouble(log)
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            self._stamp = _file_stamp_or_none(path)
            key = read_key_file(path)
        assert key is not None
        self._key = self._remember(key)

    def current(self) -> SecretStr:
        """The key to use now: re-reads the file first when it has changed since the last read."""
        if self._path is not None:
            stamp = _file_stamp_or_none(self._path)
            if stamp is None or stamp != self._stamp:
                self._read(self._path, stamp)
        return self._key

    def reload(self) -> None:
        """Re-read the file now, changed or not (SIGHUP)."""
        if self._path is not None:
            self._read(self._path, _file_stamp_or_none(self._path))

    def _read(self, path: Path, stamp: tuple[int, int] | None) -> None:
        try:
            key = read_key_file(path)
        except ApiKeyError as exc:
            self._trouble.failing(f"cannot read the API key file, keeping the last good key: {exc}")
            self._stamp = stamp
            return
        if key.get_secret_value() != self._key.get_secret_value():
            log.info("API key file changed, using the new key", extra={"path": str(path)})
        self._trouble.fine(f"API key file {path} is readable again")
        self._stamp = stamp
        self._key = self._remember(key)

    def _remember(self, key: SecretStr) -> SecretStr:
        self._redactor.add(key.get_secret_value())
        return key


def read_key_file(path: Path) -> SecretStr:
    """The key in the file, stripped; raises `ApiKeyError` naming the file, never its content."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
        raise ApiKeyError(f"{path}: {reason}") from None
    try:
        return SecretStr(check_api_key(raw))
    except ValueError as exc:
        raise ApiKeyError(f"{path}: {exc}") from None


def _file_stamp_or_none(path: Path) -> tuple[int, int] | None:
    """(mtime, size), or None while the file cannot be seen."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
