"""The Notte account's objects beyond sessions, as the exporter understands them.

Functions, their runs, the functions runtime's health and the period's usage,
read from the raw JSON (the SDK's own response models drop the schedule and
`stopped_at`). Only the fields the exporter exports are kept; a download
`url`, logs, results and variables are never read. As for sessions
(`model.py`): lax coercion, extra fields ignored, and values bounded so that
every exported number is finite and every label short and encodable; an
object that does not fit is invalid, and the caller skips and counts it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from exporter.labels import RUN_ENDED_STATUSES
from exporter.notte.model import MAX_COUNT

MAX_ID_CHARS: Final = 256
MAX_LABEL_CHARS: Final = 200
# Money and latencies: far past any real account, well inside a float's exact range.
MAX_AMOUNT: Final = 1e12
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATES: Final = re.compile("[\ud800-\udfff]")


def _clean_id(value: str) -> str:
    if _CONTROL.search(value) or _SURROGATES.search(value):
        raise ValueError("control characters in an ID")
    return value


def _label(value: str | None) -> str | None:
    """Text for a label: cut to 200 characters, lone surrogates replaced."""
    return None if value is None else _SURROGATES.sub("\ufffd", value[:MAX_LABEL_CHARS])


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_clean_id)]
Label = Annotated[str | None, AfterValidator(_label)]
Stamp = Annotated[datetime, AfterValidator(_utc)]
Amount = Annotated[float, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class _Lax(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Function(_Lax):
    """An item of `GET /functions/` (`FunctionListItemResponse`)."""

    function_id: Id
    name: Label = None
    status: Label = None
    default_runtime: Label = None
    source: Label = None
    updated_at: Annotated[datetime | None, AfterValidator(_utc)] = None


class FunctionDetail(Function):
    """`GET /functions/{id}` (`FunctionWithLinkResponse`): the schedule, and nothing of `url`."""

    schedule_cron: Label = None
    schedule_state: Label = None


class FunctionRun(_Lax):
    """An item of `GET /functions/{id}/runs/`, or `GET /functions/{id}/runs/{run_id}`."""

    function_id: Id
    function_run_id: Id
    created_at: Stamp
    updated_at: Stamp
    status: Annotated[str, Field(min_length=1, max_length=64)]
    session_id: Annotated[str | None, Field(max_length=MAX_ID_CHARS)] = None

    @field_validator("status", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("session_id")
    @classmethod
    def _clean_session(cls, value: str | None) -> str | None:
        return None if not value or _CONTROL.search(value) else _label(value)

    @property
    def ended(self) -> bool:
        return self.status in RUN_ENDED_STATUSES

    @property
    def duration(self) -> float:
        """An ended run's length: the API has no duration field, only its last update."""
        return max(0.0, (self.updated_at - self.created_at).total_seconds())


class RuntimeHealth(_Lax):
    """`GET /functions/health` (`FunctionRuntimeHealthResponse`)."""

    status: Annotated[str, Field(min_length=1, max_length=64)]
    reachable: bool
    latency_ms: Annotated[float | None, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)] = None


class Usage(_Lax):
    """`GET /usage` (`UsageResponse`): the period's costs, limits and balances, in the
    account's currency. Every field is required, as in the model."""

    plan_type: Label
    period: Label
    session_count: Count
    function_count: Count
    browser_usage_cost: Amount
    proxy_usage_cost: Amount
    llm_usage_cost: Amount
    function_usage_cost: Amount
    total_cost: Amount
    subscription_limit_amount: Amount
    topup_limit_amount: Amount
    subscription_balance_amount: Amount
    topup_balance_amount: Amount
    balance_amount: Amount
    is_usage_limit_exceeded: bool
