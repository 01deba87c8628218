"""The Notte session object, as the exporter understands it.

Tolerant where the API is loose (missing optional fields, extra fields, the
older `timeout_minutes`, ISO-8601 durations, unknown statuses) and strict where
a wrong value would export a lie (negative byte counts, uncoercible types):
such an item is invalid, and the caller skips and counts it.
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
    NonNegativeInt,
    ValidationError,
    field_validator,
)

from exporter.labels import ENDED_STATUSES

DEFAULT_MAX_DURATION_MINUTES: Final = 15.0
_SURROGATES: Final = re.compile("[\ud800-\udfff]")


class Session(BaseModel):
    """One session as returned by `GET /sessions/{id}` or an item of `GET /sessions`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: str = Field(min_length=1)
    status: str = Field(min_length=1)
    created_at: datetime | None = None
    last_accessed_at: datetime | None = None
    closed_at: datetime | None = None
    idle_timeout_minutes: float | None = Field(
        None, ge=0, validation_alias=AliasChoices("idle_timeout_minutes", "timeout_minutes")
    )
    max_duration_minutes: float = Field(DEFAULT_MAX_DURATION_MINUTES, ge=0)
    duration: timedelta | None = None
    steps: list[Any] | None = None
    error: str | None = None
    proxies: bool | list[Any] | dict[str, Any] | None = None
    browser_type: str | None = None
    use_file_storage: bool | None = None
    network_request_bytes: NonNegativeInt | None = None
    network_response_bytes: NonNegativeInt | None = None
    headless: bool | None = None
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

    @field_validator("status", mode="before")
    @classmethod
    def _normalise_status(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

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
