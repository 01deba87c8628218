"""Configured session IDs: the setting's list plus the IDs file, re-read every cycle."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from exporter.logs import Trouble

log = logging.getLogger(__name__)


def parse_ids_file(text: str) -> list[str]:
    """One ID a line; blank lines and `#` comments (whole-line or trailing) are ignored."""
    ids = []
    for line in text.splitlines():
        session_id = line.split("#", 1)[0].strip()
        if session_id:
            ids.append(session_id)
    return ids


class ConfiguredIds:
    """The IDs to watch now. A file that cannot be read keeps its last good content."""

    def __init__(self, ids: Sequence[str], path: Path | None = None) -> None:
        self._ids = list(dict.fromkeys(ids))
        self._path = path
        self._from_file: list[str] = []
        self._trouble = Trouble(log)

    def current(self) -> list[str]:
        """The setting's IDs, then the file's, without duplicates, in that order."""
        if self._path is not None:
            self._read(self._path)
        return list(dict.fromkeys(self._ids + self._from_file))

    def _read(self, path: Path) -> None:
        try:
            self._from_file = parse_ids_file(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            error = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self._trouble.failing(
                f"cannot read the session IDs file {path}: {error}; keeping its last IDs"
            )
            return
        self._trouble.fine(f"session IDs file {path} is readable again")
