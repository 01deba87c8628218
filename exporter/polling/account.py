"""The account poller: functions, their runs, the functions runtime and usage.

It runs after the sessions' part of each poll cycle, in what is left of that
cycle's budget (`App` calls `run` with the cycle's deadline), through the
shared client, so through the one concurrency cap: it never delays the
sessions, and a cycle still ends before the next is due. Each part runs when
it is due: the functions every `functions_interval` (default: every cycle),
usage every `usage_interval`. A cycle whose sessions' part failed (API down,
key refused, a Retry-After pause) asks nothing more: no storm against a
refusing API.

Per functions pass: the function list (`ceil(functions / page_size)` pages),
the runtime's health (1), each function's runs (1 page while quiet, newest
first), a function's details when new or changed and at most every 5 minutes,
and one request per known active run the pages did not show. Per usage pass: 1.

Failures are the client's errors: counted by the client in the request and
bad-data self-metrics, logged here once per change, never raised: they leave
the last known values exported and the sessions untouched.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from exporter.labels import BAD_SCHEDULE, GET_FUNCTION
from exporter.notte.accountmodel import Function, FunctionRun, RuntimeHealth, Usage
from exporter.notte.client import (
    BadResponse,
    NotFound,
    NotteClient,
    NotteError,
    UnusableSessionId,
)
from exporter.polling.accountsnapshot import AccountStore, build_account_snapshot
from exporter.polling.functions import (
    MAX_FUNCTIONS,
    FunctionsState,
    FunctionState,
    RunsRead,
    apply_detail,
    apply_function_list,
    apply_runs,
    missing_active_runs,
    next_runs_page,
)
from exporter.settings import Settings

log = logging.getLogger(__name__)

# A part is due when its interval has passed, less half a poll interval: cycles start on
# the poll interval's beat, and a part due a moment after a cycle began runs in that one.
DUE_TOLERANCE_FRACTION = 0.5


@dataclass(frozen=True)
class AccountOptions:
    functions: bool
    usage: bool
    functions_interval: float
    usage_interval: float
    poll_interval: float
    page_size: int
    include_system: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountOptions:
        return cls(
            functions=settings.functions,
            usage=settings.usage,
            functions_interval=settings.functions_interval or settings.poll_interval,
            usage_interval=settings.usage_interval,
            poll_interval=settings.poll_interval,
            page_size=settings.page_size,
            include_system=settings.include_system,
        )

    @property
    def enabled(self) -> bool:
        return self.functions or self.usage


class AccountPoller:
    """Owns the account's state and publishes account snapshots to its store."""

    def __init__(
        self,
        *,
        options: AccountOptions,
        client: NotteClient,
        store: AccountStore,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options, self._client, self._store = options, client, store
        self._clock, self._monotonic = clock, monotonic
        self._process_start = clock()
        self._functions = FunctionsState()
        self._runtime: RuntimeHealth | None = None
        self._usage: Usage | None = None
        self._due = {"functions": -math.inf, "usage": -math.inf}
        self._problems: dict[str, str | None] = {"functions": None, "usage": None}

    async def run(self, deadline: float) -> None:
        """The parts that are due, within `deadline` (the event loop's monotonic time)."""
        tolerance = self._options.poll_interval * DUE_TOLERANCE_FRACTION
        parts: list[tuple[str, float, Callable[[float], Coroutine[Any, Any, None]]]] = []
        if self._options.functions:
            parts.append(("functions", self._options.functions_interval, self._poll_functions))
        if self._options.usage:
            parts.append(("usage", self._options.usage_interval, self._poll_usage))
        for name, interval, poll in parts:
            started = self._monotonic()
            if started < self._due[name]:
                continue
            self._due[name] = started + interval - tolerance
            await self._guarded(name, poll(deadline))
        self._publish()

    async def _guarded(self, part: str, step: Coroutine[Any, Any, None]) -> None:
        """Run one part; its failure is logged once per change of cause, never raised."""
        failure: Exception | None = None
        try:
            await step
        except NotteError as exc:
            failure = exc
        except Exception as exc:  # a bug: logged with its traceback, the cycle goes on
            log.exception("the account's %s part failed", part)
            failure = exc
        kind = None if failure is None else type(failure).__name__
        if kind is None and self._problems[part] is not None:
            log.info("the account's %s are read again", part)
        elif failure is not None and kind != self._problems[part]:
            log.warning("could not read the account's %s: %s", part, failure)
        self._problems[part] = kind

    def _publish(self) -> None:
        functions = self._functions if self._options.functions else None
        self._store.publish(build_account_snapshot(functions, self._runtime, self._usage))

    # -- usage ------------------------------------------------------------------
    async def _poll_usage(self, deadline: float) -> None:
        try:
            self._usage = await self._client.get_usage(deadline=deadline)
        except NotFound:
            self._usage = None  # counted as `unavailable` by the client
            raise
        except NotteError as exc:
            if _bad_answer(exc):
                self._usage = None  # a shape that does not fit: no usage families
            raise

    # -- functions --------------------------------------------------------------
    async def _poll_functions(self, deadline: float) -> None:
        listed, complete = await self._list_functions(deadline)
        self._functions = apply_function_list(self._functions, listed, complete=complete)
        work = [self._health(deadline)]
        work += [self._poll_function(fid, deadline) for fid in self._functions.functions]
        failures = await _together(work)
        if failures:
            raise failures[0]

    async def _list_functions(self, deadline: float) -> tuple[list[Function], bool]:
        """Every page of functions, up to the cap; complete when read to a short page."""
        size = self._options.page_size
        listed: list[Function] = []
        for page in range(1, math.ceil(MAX_FUNCTIONS / size) + 2):
            result = await self._client.list_functions(
                page=page,
                page_size=size,
                include_system=self._options.include_system,
                deadline=deadline,
            )
            listed += result.items
            if result.has_next is False or result.item_count < size:
                return listed, True
        log.warning("stopped listing functions at the cap (%d functions)", MAX_FUNCTIONS)
        return listed, False

    async def _health(self, deadline: float) -> None:
        self._runtime = await self._client.functions_health(deadline=deadline)

    async def _poll_function(self, function_id: str, deadline: float) -> None:
        """The function's details when due, then its new runs; state applied as it comes."""
        fs = self._functions.functions[function_id]
        if fs.needs_detail(self._clock()):
            detail = await self._client.get_function(function_id, deadline=deadline)
            fs, bad = apply_detail(fs, detail, self._clock())
            if bad:
                self._client.count_bad(GET_FUNCTION, BAD_SCHEDULE)
                log.warning(
                    "function %s: cannot read its schedule %r; no next run is exported",
                    function_id,
                    detail.schedule_cron,
                )
            self._store_function(fs)
        read = RunsRead()
        while (page := next_runs_page(fs, read)) is not None:
            result = await self._client.list_function_runs(
                function_id,
                page=page,
                page_size=self._options.page_size,
                include_system=self._options.include_system,
                deadline=deadline,
            )
            read = read.add(
                result.items,
                item_count=result.item_count,
                page_size=self._options.page_size,
                has_next=result.has_next,
            )
        fetched, gone = await self._missing_runs(fs, read, deadline)
        fs = apply_runs(fs, read, fetched, gone, process_start=self._process_start)
        self._store_function(fs)

    async def _missing_runs(
        self, fs: FunctionState, read: RunsRead, deadline: float
    ) -> tuple[list[FunctionRun], list[str]]:
        fetched: list[FunctionRun] = []
        gone: list[str] = []
        if not fs.bearings:
            return fetched, gone
        for run_id in missing_active_runs(fs, read):
            try:
                fetched.append(
                    await self._client.get_function_run(
                        fs.function.function_id, run_id, deadline=deadline
                    )
                )
            except (NotFound, UnusableSessionId):
                gone.append(run_id)
        return fetched, gone

    def _store_function(self, fs: FunctionState) -> None:
        """Replace one function's state, if it is still tracked (the list may have dropped it)."""
        fid = fs.function.function_id
        if fid in self._functions.functions:
            known = {**self._functions.functions, fid: fs}
            self._functions = FunctionsState(known)


def _bad_answer(exc: NotteError) -> bool:
    """A 2xx answer that could not be used (not JSON, a shape that does not fit, too large)."""
    return isinstance(exc, BadResponse)


async def _together(steps: list[Coroutine[Any, Any, None]]) -> list[NotteError]:
    """Run the steps at once (the client's one semaphore bounds their requests); the
    failures, in order."""

    async def one(step: Coroutine[Any, Any, None]) -> NotteError | None:
        try:
            await step
        except NotteError as exc:
            return exc
        return None

    return [failure for failure in await asyncio.gather(*map(one, steps)) if failure]
