"""Pieces the benchmark scripts share."""

from __future__ import annotations

import threading
from typing import IO


class LineCollector:
    """Reads a child's output into `lines` on a daemon thread, as it comes, so the
    pipe never fills and blocks the child."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None, "the child's stream must be a pipe"
        self.lines: list[str] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def join(self, timeout: float) -> None:
        """Wait for the last lines once the child has exited."""
        self._thread.join(timeout)
