"""`ExporterProcess`: `python -m exporter ...` run as a user would, in a subprocess.

It reads the log as it comes (so a debug-level log never fills the pipe) and
finds the port the exporter listens on.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from tests.harness import wait_until

LISTENING = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+)")


class ExporterProcess:
    """`python -m exporter ...` in a subprocess, listening on a free loopback port."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        limit_descriptors: int | None = None,
    ) -> None:
        """`limit_descriptors`: the most files and sockets the process may hold open."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
        clean.update(env or {})

        def limit() -> None:
            if limit_descriptors is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_descriptors,) * 2)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1:0", *args],
            env=clean,
            cwd=cwd,
            preexec_fn=limit,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="backslashreplace",
        )
        self._lines: list[str] = []
        self._stdout: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self._lines)),
            threading.Thread(target=self._read, args=(self.process.stdout, self._stdout)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        self.scheme = "http"
        self.port = 0

    def _read(self, stream: Iterable[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            with self._lock:
                into.append(line)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._lines)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._stdout)

    def wait_listening(self, timeout: float = 20) -> str:
        """The base URL, once the exporter logged where it listens."""

        def listening() -> re.Match[str] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"the exporter exited early:\n{self.stderr}")
            return LISTENING.search(self.stderr)

        match = wait_until(listening, timeout=timeout)
        self.scheme, self.port = match.group(1), int(match.group(2))
        return self.url

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the process and wait for it; kill it if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
