"""Settings: every row of the contract's settings table, declared once, on the model.

Each field is one `_setting(variable, flag, default, description=...)` call:
the environment variable becomes the validation alias, the flag and any flag
aliases go in `json_schema_extra`, the help in `description`; range checks
follow as keywords or in the field's type (`Seconds`). The command line
(`exporter.cli`), the bad-setting messages and the README check are all built
from `setting_specs()`.

Flag > environment > `.env` > default: the CLI parses flags into a dict and
passes it as init arguments, which pydantic-settings ranks above every other
source. A setting that does not validate becomes one line naming it
(`SettingsError`), which the CLI turns into exit status 2.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_API_URL = "https://api.notte.cc"
DEFAULT_PORT = 10027
MAX_PAGE_SIZE = 100  # the API answers 422 above it
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024


# Durations in seconds: finite; an interval or a timeout must also be above 0.
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _setting(
    env: str,
    flag: str,
    default: Any,
    *,
    description: str,
    aliases: tuple[str, ...] = (),
    shown_default: str | None = None,
    **constraints: Any,
) -> Any:
    """A settings field, positional in the order of the README's table; `shown_default`
    overrides how the docs show the default."""
    extra: dict[str, Any] = {"flag": flag, "aliases": list(aliases)}
    if shown_default is not None:
        extra["shown_default"] = shown_default
    return Field(
        default,
        validation_alias=env,
        description=description,
        json_schema_extra=extra,
        **constraints,
    )


class SettingsError(Exception):
    """A bad setting: the message is one line that names it, never its secret value."""


class Settings(BaseSettings):
    """The exporter's configuration, built once in `main()` and passed down.

    Init arguments are given by field name (`Settings(poll_interval=5)`); they
    are mapped to the variables' names before validation, so the environment
    is read under `NOTTE_*` names only (never a bare `SHARD` or `API_KEY`).
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    api_key: SecretStr | None = _setting(
        "NOTTE_API_KEY",
        "--api-key",
        None,
        description="the Notte API key",
        shown_default="(required unless `--demo`)",
    )
    api_key_file: Path | None = _setting(
        "NOTTE_API_KEY_FILE",
        "--api-key-file",
        None,
        description="read the key from this file (Docker/Kubernetes secrets); "
        "re-read when it changes and on SIGHUP",
    )
    api_url: str = _setting(
        "NOTTE_API_URL", "--api-url", DEFAULT_API_URL, description="API base URL"
    )
    listen_address: str = _setting(
        "NOTTE_EXPORTER_LISTEN_ADDRESS",
        "--listen-address",
        f"0.0.0.0:{DEFAULT_PORT}",
        description="where `/metrics` is served (`host:port`, `[::]:port`)",
        aliases=("--web.listen-address",),
    )
    session_ids: Annotated[list[str], NoDecode] = _setting(
        "NOTTE_EXPORTER_SESSION_IDS",
        "--session-id",
        [],
        description="session IDs to watch; the variable is comma-separated, "
        "repeated flags replace its list",
    )
    session_ids_file: Path | None = _setting(
        "NOTTE_EXPORTER_SESSION_IDS_FILE",
        "--session-ids-file",
        None,
        description="a file of session IDs, one a line (`#` comments), "
        "added to the list in effect; re-read every poll",
    )
    discovery: bool = _setting(
        "NOTTE_EXPORTER_DISCOVERY",
        "--discovery",
        True,
        description="discover active sessions through the list endpoint",
    )
    include_system: bool = _setting(
        "NOTTE_EXPORTER_INCLUDE_SYSTEM",
        "--include-system",
        False,
        description="list system sessions too: sends `include_system=true`, "
        "else always `include_system=false`",
    )
    sweep: bool = _setting(
        "NOTTE_EXPORTER_SWEEP",
        "--sweep",
        True,
        description="with discovery, also list the newest sessions of any status each cycle, "
        "so sessions that start and end between two polls are seen",
    )
    functions: bool = _setting(
        "NOTTE_EXPORTER_FUNCTIONS",
        "--functions",
        True,
        description="export the account's functions, their runs and the functions runtime's "
        "health, after the sessions' part of each cycle",
    )
    functions_interval: PositiveSeconds | None = _setting(
        "NOTTE_EXPORTER_FUNCTIONS_INTERVAL",
        "--functions-interval",
        None,
        description="seconds between reads of the functions (a multiple of the poll interval "
        "in effect: they run within a poll cycle)",
        shown_default="the poll interval",
    )
    usage: bool = _setting(
        "NOTTE_EXPORTER_USAGE",
        "--usage",
        True,
        description="export the account's usage, limits and balance for the current period",
    )
    usage_interval: PositiveSeconds = _setting(
        "NOTTE_EXPORTER_USAGE_INTERVAL",
        "--usage-interval",
        300.0,
        description="seconds between reads of the usage (it changes slowly)",
    )
    poll_interval: PositiveSeconds = _setting(
        "NOTTE_EXPORTER_POLL_INTERVAL",
        "--poll-interval",
        15.0,
        description="seconds between poll cycles",
    )
    request_timeout: PositiveSeconds = _setting(
        "NOTTE_EXPORTER_REQUEST_TIMEOUT",
        "--request-timeout",
        10.0,
        description="seconds per API request",
    )
    max_concurrency: int = _setting(
        "NOTTE_EXPORTER_MAX_CONCURRENCY",
        "--max-concurrency",
        8,
        description="API requests in flight at once",
        ge=1,
        le=1000,
    )
    page_size: int = _setting(
        "NOTTE_EXPORTER_PAGE_SIZE",
        "--page-size",
        100,
        description=f"`page_size` for the list endpoint, 1 to {MAX_PAGE_SIZE} (the API's limit)",
        ge=1,
        le=MAX_PAGE_SIZE,
    )
    retention: Seconds = _setting(
        "NOTTE_EXPORTER_RETENTION",
        "--retention",
        900.0,
        description="seconds an ended, discovered session stays exported after it was seen ending",
    )
    max_sessions: int = _setting(
        "NOTTE_EXPORTER_MAX_SESSIONS",
        "--max-sessions",
        10000,
        description="cap on tracked sessions; past it, ended sessions are dropped oldest first, "
        "and discovery stops adding",
        ge=1,
    )
    max_response_bytes: int = _setting(
        "NOTTE_EXPORTER_MAX_RESPONSE_BYTES",
        "--max-response-bytes",
        DEFAULT_MAX_RESPONSE_BYTES,
        description="cap on one API answer's body after decompression, 64 KiB to 1 GiB; "
        "a larger answer fails its request",
        shown_default=f"`{DEFAULT_MAX_RESPONSE_BYTES}` (16 MiB)",
        ge=64 * 1024,
        le=1024**3,
    )
    shard: int = _setting(
        "NOTTE_EXPORTER_SHARD", "--shard", 0, description="this replica's shard, 0-based", ge=0
    )
    total_shards: int = _setting(
        "NOTTE_EXPORTER_TOTAL_SHARDS",
        "--total-shards",
        1,
        description="number of replicas sharing the sessions; a session belongs to the shard "
        "given by a stable hash of its `session_id`",
        ge=1,
    )
    metric_allowlist: Annotated[list[str], NoDecode] = _setting(
        "NOTTE_EXPORTER_METRIC_ALLOWLIST",
        "--metric-allowlist",
        [],
        description="serve only the metric families whose whole name matches one of these "
        "regular expressions, separated by commas; the exporter's own metrics are always served",
    )
    metric_denylist: Annotated[list[str], NoDecode] = _setting(
        "NOTTE_EXPORTER_METRIC_DENYLIST",
        "--metric-denylist",
        [],
        description="serve every metric family but those whose whole name matches one of these "
        "regular expressions, separated by commas; not with the allowlist; the exporter's own "
        "metrics cannot be denied",
    )
    web_config_file: Path | None = _setting(
        "NOTTE_EXPORTER_WEB_CONFIG_FILE",
        "--web-config-file",
        None,
        description="TLS and basic auth for the HTTP endpoints, in the Prometheus "
        "exporter-toolkit web-config format",
        aliases=("--web.config.file",),
    )
    log_level: Literal["debug", "info", "warning", "error"] = _setting(
        "NOTTE_EXPORTER_LOG_LEVEL",
        "--log-level",
        "info",
        description="`debug`, `info`, `warning`, `error`",
        aliases=("--log.level",),
    )
    log_format: Literal["text", "json"] = _setting(
        "NOTTE_EXPORTER_LOG_FORMAT",
        "--log-format",
        "text",
        description="`text` or `json` (one JSON object a line)",
        aliases=("--log.format",),
    )

    def __init__(self, **values: Any) -> None:
        """Accept field names (flags, tests) as well as the variables' names."""
        aliases = {spec.name: spec.env for spec in setting_specs()}
        super().__init__(**{aliases.get(key, key): value for key, value in values.items()})

    @field_validator("session_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        """The variable is comma-separated; flags arrive as a list already."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("metric_allowlist", "metric_denylist", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        """Comma-separated, in the variable and in each flag (which may repeat)."""
        parts = [value] if isinstance(value, str) else value
        if not isinstance(parts, list):
            return value
        return [p.strip() for part in parts for p in str(part).split(",") if p.strip()]

    @field_validator("metric_allowlist", "metric_denylist")
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return patterns

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
        if self.metric_allowlist and self.metric_denylist:
            allow, deny = setting_spec("metric_allowlist"), setting_spec("metric_denylist")
            raise ValueError(f"set only one of {allow.names()} and {deny.names()}")
        if self.shard >= self.total_shards:
            raise ValueError(
                f"NOTTE_EXPORTER_SHARD ({self.shard}) must be below "
                f"NOTTE_EXPORTER_TOTAL_SHARDS ({self.total_shards})"
            )
        return self

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)


@dataclass(frozen=True)
class SettingSpec:
    """How one setting is spelled outside: what the CLI, errors and docs are built from."""

    name: str
    env: str
    flag: str
    aliases: tuple[str, ...]
    description: str
    kind: Literal["bool", "list", "value"]
    shown_default: str

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag, *self.aliases)

    def names(self) -> str:
        """`ENV (--flag)`, as bad-setting messages name it."""
        return f"{self.env} ({self.flag})"


@cache
def setting_specs() -> tuple[SettingSpec, ...]:
    """Every setting, in the model's (and the README's) order."""
    specs = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        assert isinstance(info.validation_alias, str)
        if info.annotation is bool:
            kind: Literal["bool", "list", "value"] = "bool"
        elif get_origin(info.annotation) is list:
            kind = "list"
        else:
            kind = "value"
        default = info.get_default(call_default_factory=True)
        specs.append(
            SettingSpec(
                name=name,
                env=info.validation_alias,
                flag=str(extra["flag"]),
                aliases=tuple(str(alias) for alias in extra["aliases"]),  # type: ignore[union-attr]
                description=info.description or "",
                kind=kind,
                shown_default=str(extra.get("shown_default") or _show_default(default)),
            )
        )
    return tuple(specs)


def setting_spec(name: str) -> SettingSpec:
    return next(spec for spec in setting_specs() if spec.name == name)


def _show_default(default: Any) -> str:
    """A default as the docs show it: blank for none, `empty` for an empty list."""
    if default is None:
        return ""
    if default == []:
        return "empty"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def bad_setting(name: str, message: str) -> SettingsError:
    """The one-line error for the setting `name` (a field name)."""
    return SettingsError(f"bad setting {setting_spec(name).names()}: {message}")


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


def sends_key_in_clear(api_url: str) -> bool:
    """True for an `http://` URL to a host other than loopback: the key would cross a network
    (and any proxy) unencrypted."""
    parts = urlsplit(api_url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


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
    key = str(loc[0]).lower() if loc else ""
    for spec in setting_specs():
        if key in (spec.name, spec.env.lower()):
            return str(bad_setting(spec.name, message))
    return f"bad setting: {message}"
