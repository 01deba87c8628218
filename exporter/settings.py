"""Settings: every row of the contract's settings table, in one place.

Flag > environment > `.env` > default. The CLI parses flags into a dict and
passes it as init arguments, which pydantic-settings ranks above every other
source. A setting that does not validate becomes one line naming it
(`SettingsError`), which the CLI turns into exit status 2.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_API_URL = "https://api.notte.cc"
DEFAULT_PORT = 10027
MAX_PAGE_SIZE = 100  # the API answers 422 above it
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

# Field name -> (environment variable, flag). The single source for help text,
# error messages and the CLI parser.
SETTING_NAMES: dict[str, tuple[str, str]] = {
    "api_key": ("NOTTE_API_KEY", "--api-key"),
    "api_key_file": ("NOTTE_API_KEY_FILE", "--api-key-file"),
    "api_url": ("NOTTE_API_URL", "--api-url"),
    "listen_address": ("NOTTE_EXPORTER_LISTEN_ADDRESS", "--listen-address"),
    "session_ids": ("NOTTE_EXPORTER_SESSION_IDS", "--session-id"),
    "session_ids_file": ("NOTTE_EXPORTER_SESSION_IDS_FILE", "--session-ids-file"),
    "discovery": ("NOTTE_EXPORTER_DISCOVERY", "--discovery"),
    "include_system": ("NOTTE_EXPORTER_INCLUDE_SYSTEM", "--include-system"),
    "sweep": ("NOTTE_EXPORTER_SWEEP", "--sweep"),
    "poll_interval": ("NOTTE_EXPORTER_POLL_INTERVAL", "--poll-interval"),
    "request_timeout": ("NOTTE_EXPORTER_REQUEST_TIMEOUT", "--request-timeout"),
    "max_concurrency": ("NOTTE_EXPORTER_MAX_CONCURRENCY", "--max-concurrency"),
    "page_size": ("NOTTE_EXPORTER_PAGE_SIZE", "--page-size"),
    "retention": ("NOTTE_EXPORTER_RETENTION", "--retention"),
    "max_sessions": ("NOTTE_EXPORTER_MAX_SESSIONS", "--max-sessions"),
    "max_response_bytes": ("NOTTE_EXPORTER_MAX_RESPONSE_BYTES", "--max-response-bytes"),
    "shard": ("NOTTE_EXPORTER_SHARD", "--shard"),
    "total_shards": ("NOTTE_EXPORTER_TOTAL_SHARDS", "--total-shards"),
    "web_config_file": ("NOTTE_EXPORTER_WEB_CONFIG_FILE", "--web-config-file"),
    "log_level": ("NOTTE_EXPORTER_LOG_LEVEL", "--log-level"),
    "log_format": ("NOTTE_EXPORTER_LOG_FORMAT", "--log-format"),
}


class SettingsError(Exception):
    """A bad setting: the message is one line that names it, never its secret value."""


def _setting(field: str, default: Any = ..., **constraints: Any) -> Any:
    """A field read from its environment variable (and, for init arguments, its name)."""
    alias = AliasChoices(SETTING_NAMES[field][0], field)
    if default is ...:
        return Field(validation_alias=alias, **constraints)
    return Field(default, validation_alias=alias, **constraints)


class Settings(BaseSettings):
    """The exporter's configuration, built once in `main()` and passed down."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    api_key: SecretStr | None = _setting("api_key", None)
    api_key_file: Path | None = _setting("api_key_file", None)
    api_url: str = _setting("api_url", DEFAULT_API_URL)
    listen_address: str = _setting("listen_address", f"0.0.0.0:{DEFAULT_PORT}")
    session_ids: Annotated[list[str], NoDecode] = _setting("session_ids", default_factory=list)
    session_ids_file: Path | None = _setting("session_ids_file", None)
    discovery: bool = _setting("discovery", True)
    include_system: bool = _setting("include_system", False)
    sweep: bool = _setting("sweep", True)
    poll_interval: float = _setting("poll_interval", 15.0, gt=0, allow_inf_nan=False)
    request_timeout: float = _setting("request_timeout", 10.0, gt=0, allow_inf_nan=False)
    max_concurrency: int = _setting("max_concurrency", 8, ge=1, le=1000)
    page_size: int = _setting("page_size", 100, ge=1, le=MAX_PAGE_SIZE)
    retention: float = _setting("retention", 900.0, ge=0, allow_inf_nan=False)
    max_sessions: int = _setting("max_sessions", 10000, ge=1)
    max_response_bytes: int = _setting(
        "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, ge=64 * 1024, le=1024**3
    )
    shard: int = _setting("shard", 0, ge=0)
    total_shards: int = _setting("total_shards", 1, ge=1)
    web_config_file: Path | None = _setting("web_config_file", None)
    log_level: Literal["debug", "info", "warning", "error"] = _setting("log_level", "info")
    log_format: Literal["text", "json"] = _setting("log_format", "text")

    @field_validator("session_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        """The variable is comma-separated; flags arrive as a list already."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 9:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("listen_address")
    @classmethod
    def _check_listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        return SecretStr(check_api_key(value.get_secret_value()))

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set only one of NOTTE_API_KEY and NOTTE_API_KEY_FILE")
        if self.shard >= self.total_shards:
            raise ValueError(
                f"NOTTE_EXPORTER_SHARD ({self.shard}) must be below "
                f"NOTTE_EXPORTER_TOTAL_SHARDS ({self.total_shards})"
            )
        return self

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)


def check_api_key(raw: str) -> str:
    """Strip the key and refuse characters no HTTP header may carry.

    Checked here so that httpx never raises an error whose text holds the key.
    """
    key = raw.strip()
    if not key:
        raise ValueError("the API key is empty")
    if any(not (0x21 <= ord(char) <= 0x7E) for char in key):
        raise ValueError("the API key holds characters that cannot go in an HTTP header")
    return key


def parse_listen_address(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); an empty host means all IPv4 interfaces."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("must be host:port, e.g. 0.0.0.0:10027 or [::]:10027")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("port must be between 0 and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"bad IPv6 address {host!r}") from exc
    return host or "0.0.0.0", port


def load_settings(flag_values: dict[str, Any]) -> Settings:
    """Build settings from parsed flags (highest priority) and the environment."""
    try:
        return Settings(**flag_values)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad setting by its variable and flag, without its value."""
    error = exc.errors(include_input=False, include_url=False)[0]
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    names = SETTING_NAMES.get(field) or _names_for_alias(field)
    if names is None:
        return f"bad setting: {message}"
    return f"bad setting {names[0]} ({names[1]}): {message}"


def _names_for_alias(alias: str) -> tuple[str, str] | None:
    for env_name, flag in SETTING_NAMES.values():
        if env_name.lower() == alias.lower():
            return env_name, flag
    return None
