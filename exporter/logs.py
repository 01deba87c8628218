"""Logging set-up: text or JSON lines, one event a line, and never the API key.

httpx and httpcore log every request (and, at debug, connection details); they
are held at WARNING whatever the exporter's level. A filter on the handler
also masks the key in any message as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

REDACTED = "[REDACTED]"
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_QUIET_LOGGERS = ("httpx", "httpcore", "apscheduler", "hpack")


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
    """`time level logger: message`, with any traceback folded onto the same line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class SecretFilter(logging.Filter):
    """Masks the current secret(s) in a record's message and traceback."""

    def __init__(self, secrets: Callable[[], list[str]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = [s for s in self._secrets() if s]
        if not secrets:
            return True
        message = record.getMessage()
        exc_text = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        if any(secret in message or secret in exc_text for secret in secrets):
            for secret in secrets:
                message = message.replace(secret, REDACTED)
                exc_text = exc_text.replace(secret, REDACTED)
            record.msg, record.args = message, None
            record.exc_info, record.exc_text = None, exc_text or None
        return True


def configure_logging(
    level: str,
    fmt: str,
    *,
    secrets: Callable[[], list[str]] = list,
    stream: TextIO | None = None,
) -> None:
    """Install one handler on the root logger; replaces any earlier one."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
