"""Where the API key comes from: a setting, or a file that is re-read when it changes.

A mounted Kubernetes or Docker secret can be rotated while the exporter runs;
re-reading the file when its modification time or size changes lets a fixed
key take effect without a restart. The key is held as a `SecretStr` so that
no repr, log line or traceback shows it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import SecretStr

from exporter.settings import check_api_key

log = logging.getLogger(__name__)


class ApiKeyError(Exception):
    """The key file cannot be read or holds no usable key; the message names the file only."""


class ApiKeySource:
    """Gives the current API key, from a fixed value or a file."""

    def __init__(self, *, key: SecretStr | None = None, path: Path | None = None) -> None:
        if (key is None) == (path is None):
            raise ValueError("give exactly one of key and path")
        self._key = key
        self._path = path
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            self._key = read_key_file(path)
            self._stamp = _file_stamp(path)

    def current(self) -> SecretStr:
        """The key to use now: re-reads the file when it has changed since the last read.

        A file that turns unreadable keeps the last good key (and logs), so a
        half-written secret does not knock the exporter over.
        """
        if self._path is not None:
            self._refresh(self._path)
        assert self._key is not None
        return self._key

    def _refresh(self, path: Path) -> None:
        try:
            stamp = _file_stamp(path)
            if stamp == self._stamp:
                return
            self._key = read_key_file(path)
            self._stamp = stamp
            log.info("API key file changed, using the new key", extra={"path": str(path)})
        except (OSError, ApiKeyError) as exc:
            log.warning("cannot re-read the API key file, keeping the last key: %s", exc)


def read_key_file(path: Path) -> SecretStr:
    """The key in the file, stripped; raises `ApiKeyError` naming the file, never its content."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ApiKeyError(f"cannot read API key file {path}: {reason}") from None
    try:
        return SecretStr(check_api_key(raw))
    except ValueError as exc:
        raise ApiKeyError(f"API key file {path}: {exc}") from None


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size
