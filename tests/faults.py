"""Helpers for the resilience, security and HTTP-server tests.

`ExporterProcess` runs `python -m exporter` as a user would, reads its log as it
comes (so a debug-level log never fills the pipe), and finds the port it listens
on. `make_certs` makes a throwaway CA, server and client certificate with the
`openssl` command. `log_lines` picks the exporter's own records out of pytest's
`caplog`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from tests.harness import wait_until

LISTENING = re.compile(r"listening on (https?)://127\.0\.0\.1:(\d+)")


class ExporterProcess:
    """`python -m exporter ...` in a subprocess, listening on a free loopback port."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None
    ) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
        clean.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1:0", *args],
            env=clean,
            cwd=cwd,
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


@dataclass(frozen=True)
class Certs:
    folder: Path
    ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    other_crt: Path
    other_key: Path


def make_certs(folder: Path) -> Certs:
    """A throwaway CA, a server certificate for 127.0.0.1, a client certificate it signed,
    and a self-signed client certificate it did not sign. Skips the test without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name, subject in (("ca", "/CN=notte-test-ca"), ("other", "/CN=intruder")):
        openssl(
            "req", "-x509", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "1", "-subj", subject,
        )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for serial, name in enumerate(("server", "client"), start=2):
        openssl(
            "req", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"
        )
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(serial), "-days", "1", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt",
        )  # fmt: skip
    return Certs(
        folder,
        folder / "ca.crt",
        folder / "server.crt",
        folder / "server.key",
        folder / "client.crt",
        folder / "client.key",
        folder / "other.crt",
        folder / "other.key",
    )


def log_lines(
    records: Sequence[logging.LogRecord], *, level: int = logging.WARNING
) -> list[logging.LogRecord]:
    """The exporter's own records at `level` or above.

    Not the simulator's, nor httpx's: the exporter holds httpx at WARNING, but
    in-process tests do not configure logging and scrape with httpx themselves.
    """
    return [
        record
        for record in records
        if record.levelno >= level
        and not record.name.startswith("exporter.simulator")
        and record.name.startswith(("exporter", "apscheduler"))
    ]
