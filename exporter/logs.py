"""Logging set-up: text or JSON lines, one event a line, and never the API key.

httpx and httpcore log every request (and, at debug, connection details); they
are held at WARNING whatever the exporter's level. A filter on the handler
masks every key the exporter has read in any message, as a last line of
defence. The key source pushes keys into that filter's `Redactor`; the filter
never asks the key source, so masking a line can never log (or read a file).

Text lines escape control characters (CR, LF, ESC, NUL, the C0 and C1 sets),
so a session ID or an API message cannot forge a log line or drive a
terminal; JSON lines are safe as they are (`json.dumps` escapes them).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

REDACTED = "[REDACTED]"
MAX_SECRETS = 16  # keys rotate rarely; the oldest are forgotten past this many
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_QUIET_LOGGERS = ("httpx", "httpcore", "apscheduler", "hpack")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL_ESCAPES = {
    code: _NAMED_ESCAPES.get(chr(code), f"\\x{code:02x}")
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))
} | {0x2028: "\\u2028", 0x2029: "\\u2029"}
_CONTROL_ESCAPES_BUT_LF = {code: text for code, text in _CONTROL_ESCAPES.items() if code != 0x0A}


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`, ...)."""
    return text.translate(_CONTROL_ESCAPES)


class Redactor:
    """The secrets to mask in log lines; key sources `add` every key they read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, secret: str) -> None:
        if not secret:
            return
        with self._lock:
            if secret not in self._secrets:
                self._secrets = (secret, *self._secrets)[:MAX_SECRETS]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def holds_secret(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message`, control characters escaped, a traceback folded onto
    the same line (its line breaks shown as ` | `)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return super().formatException(ei).translate(_CONTROL_ESCAPES_BUT_LF)

    def formatStack(self, stack_info: str) -> str:
        return super().formatStack(stack_info).translate(_CONTROL_ESCAPES_BUT_LF)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class SecretFilter(logging.Filter):
    """Masks the redactor's secrets in a record's message and traceback."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the format: logging would print them raw to stderr.
            message = f"unformattable log message at {record.module}:{record.lineno}"
            record.msg, record.args = message, None
        exc_text = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        if self._redactor.holds_secret(message + exc_text):
            record.msg, record.args = self._redactor.redact(message), None
            record.exc_info, record.exc_text = None, self._redactor.redact(exc_text) or None
        return True


def configure_logging(
    level: str,
    fmt: str,
    *,
    redactor: Redactor | None = None,
    stream: TextIO | None = None,
) -> None:
    """Install one handler on the root logger; replaces any earlier one."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter(redactor or Redactor()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class Trouble:
    """A lasting problem logged once: a warning when it starts or changes, an info line
    when it is over; not one line per attempt."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._problem: str | None = None

    def failing(self, problem: str) -> None:
        if problem != self._problem:
            self._logger.warning("%s", problem)
        self._problem = problem

    def fine(self, recovered: str) -> None:
        if self._problem is not None:
            self._logger.info("%s", recovered)
        self._problem = None
