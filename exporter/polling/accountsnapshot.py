"""The account snapshot: an immutable picture of the functions, the runtime and usage.

Made by the account poller (`account.py`) each time it has read something,
and swapped into an `AccountStore`, as the session snapshot is into its
`SnapshotStore`; the scrape path reads it and never calls the API. Values
here are what the catalogue's account families (`catalogue.ACCOUNT_FAMILIES`)
export; None means the series is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from exporter.labels import RUN_ACTIVE, RUN_ENDED_STATUSES
from exporter.notte.accountmodel import RuntimeHealth, Usage
from exporter.polling.functions import FunctionsState, FunctionState, Histogram
from exporter.polling.snapshot import label_text

# `notte_function_run_session_info` shows active runs only, and at most this many.
MAX_RUN_SESSION_SERIES: Final = 1000
# `notte_function_info`'s labels besides function_id, in order.
FUNCTION_INFO_LABELS: Final = (
    "name",
    "status",
    "default_runtime",
    "source",
    "schedule_state",
    "schedule",
)


@dataclass(frozen=True)
class FunctionValues:
    """Every exported value of one function."""

    function_id: str
    info: tuple[str, ...]  # in FUNCTION_INFO_LABELS order
    runs_active: int
    ended_total: Mapping[str, int]  # by ended status, both always present
    durations: Histogram
    last_run: Mapping[str, float]  # by status, the newest run's start
    next_run: float | None


@dataclass(frozen=True)
class AccountSnapshot:
    """What `/metrics` shows of the account; empty until the account poller has run."""

    functions: tuple[FunctionValues, ...] = ()
    run_sessions: tuple[tuple[str, str, str], ...] = ()  # (function_id, run_id, session_id)
    runtime: RuntimeHealth | None = None
    usage: Usage | None = None


def function_values(fs: FunctionState) -> FunctionValues:
    detail = fs.detail
    function = fs.function
    info = (
        function.name,
        function.status,
        function.default_runtime,
        function.source,
        detail.schedule_state if detail else None,
        detail.schedule_cron if detail and detail.schedule_state else None,
    )
    return FunctionValues(
        function_id=function.function_id,
        info=tuple(label_text(value) for value in info),
        runs_active=sum(1 for run in fs.runs.values() if run.status == RUN_ACTIVE),
        ended_total={status: fs.ended_total.get(status, 0) for status in RUN_ENDED_STATUSES},
        durations=fs.durations,
        last_run=dict(fs.last_run),
        next_run=fs.next_run(),
    )


def build_account_snapshot(
    functions: FunctionsState | None, runtime: RuntimeHealth | None, usage: Usage | None
) -> AccountSnapshot:
    if functions is None:
        return AccountSnapshot(runtime=runtime, usage=usage)
    states = sorted(functions.functions.values(), key=lambda fs: fs.function.function_id)
    links = [
        (fs.function.function_id, run_id, run.session_id)
        for fs in states
        for run_id, run in sorted(fs.runs.items())
        if run.status == RUN_ACTIVE and run.session_id
    ]
    return AccountSnapshot(
        functions=tuple(function_values(fs) for fs in states),
        run_sessions=tuple(links[:MAX_RUN_SESSION_SERIES]),
        runtime=runtime,
        usage=usage,
    )


class AccountStore:
    """Holds the current account snapshot; a reference swap, atomic in CPython."""

    def __init__(self) -> None:
        self.current = AccountSnapshot()

    def publish(self, snapshot: AccountSnapshot) -> None:
        self.current = snapshot
