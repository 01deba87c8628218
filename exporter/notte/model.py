"""The Notte session object, as the exporter understands it.

Tolerant where the API is loose (missing optional fields, extra fields, the
older `timeout_minutes`, ISO-8601 durations, unknown statuses and close
reasons) and strict where a wrong value would export a lie or could not be
exported at all (negative or huge counts, minutes past any real session, IDs
no label or URL should carry, uncoercible types): such an item is invalid,
and the caller skips and counts it. Coercion is pydantic's lax mode, as the
contract says.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from exporter.labels import CLOSE_REASONS, ENDED_STATUSES, UNKNOWN_CLOSE_REASON

DEFAULT_MAX_DURATION_MINUTES: Final = 15.0
# Bounds that keep every exported number finite and renderable (a float() of an
# int past 2**1024 raises): counts fit an int64, minutes stay under ten years.
MAX_COUNT: Final = 2**63 - 1
MAX_MINUTES: Final = 10 * 365 * 24 * 60
MAX_SESSION_ID_CHARS: Final = 256
MAX_STATUS_CHARS: Final = 64
_SURROGATES: Final = re.compile("[\ud800-\udfff]")
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


class Session(BaseModel):
    """One session as returned by `GET /sessions/{id}` or an item of `GET /sessions/`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: str = Field(min_length=1, max_length=MAX_SESSION_ID_CHARS)
    status: str = Field(min_length=1, max_length=MAX_STATUS_CHARS)
    close_reason: str | None = None
    created_at: datetime | None = None
    last_accessed_at: datetime | None = None
    closed_at: datetime | None = None
    idle_timeout_minutes: float | None = Field(
        None,
        ge=0,
        le=MAX_MINUTES,
        allow_inf_nan=False,
        validation_alias=AliasChoices("idle_timeout_minutes", "timeout_minutes"),
    )
    max_duration_minutes: float = Field(
        DEFAULT_MAX_DURATION_MINUTES, ge=0, le=MAX_MINUTES, allow_inf_nan=False
    )
    duration: timedelta | None = None
    steps: list[Any] | None = None
    error: str | None = None
    proxies: bool | list[Any] | dict[str, Any] | None = None
    browser_type: str | None = None
    network_request_bytes: int | None = Field(None, ge=0, le=MAX_COUNT)
    network_response_bytes: int | None = Field(None, ge=0, le=MAX_COUNT)
    solve_captchas: bool | None = None
    web_bot_auth: bool | dict[str, Any] | None = None

    @field_validator("created_at", "last_accessed_at", "closed_at")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        """A timestamp without a zone is taken as UTC, as the API means it."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("error", "browser_type")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        """Lone surrogates (valid JSON escapes, not text) become U+FFFD.

        Label values are written as UTF-8; one unencodable character would break
        every scrape. (`session_id` and `status` refuse such text already.)
        """
        if value is None:
            return None
        return _SURROGATES.sub("\ufffd", value)

    @field_validator("max_duration_minutes", mode="before")
    @classmethod
    def _default_max_duration(cls, value: Any) -> Any:
        """An explicit null means the API default, 15 minutes."""
        return DEFAULT_MAX_DURATION_MINUTES if value is None else value

    @field_validator("session_id")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        """An ID is a label value and a URL segment: control characters have no place in it."""
        if _CONTROL.search(value):
            raise ValueError("control characters in the session ID")
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _normalise_status(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("close_reason", mode="before")
    @classmethod
    def _known_close_reason(cls, value: Any) -> str | None:
        """A reason the contract does not know is kept as `unknown`: new API values never
        break the exporter, and the label set stays the contract's."""
        if value is None:
            return None
        reason = value.strip().lower() if isinstance(value, str) else None
        return reason if reason in CLOSE_REASONS else UNKNOWN_CLOSE_REASON

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES


def parse_session(raw: Any) -> Session:
    """Validate one raw JSON value; raises `pydantic.ValidationError` when it is invalid."""
    return Session.model_validate(raw)


def describe_invalid(exc: ValidationError) -> str:
    """A short, value-free description of why an item is invalid, for one log line."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "item"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def timestamp(value: datetime | None) -> float | None:
    """Unix seconds, or None."""
    return None if value is None else value.timestamp()
