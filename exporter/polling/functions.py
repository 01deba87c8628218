"""Functions and their runs: which are known, what each run's end counts, what to read next.

Pure functions over immutable state, as `tracker.py` is for sessions: the
account poller (`account.py`) does the I/O and hands each answer here.

A run is counted in `notte_function_runs_total{status}` once, when this
process first sees it ended, if it had seen it active before or if it ended
(`updated_at`) after the process started; so a run that began and ended
between two polls is counted, and a restart counts no run that ended before it.
Its duration (`updated_at - created_at`; the API has no duration field) goes
into the histogram at the same moment.

Paging a function's runs (`only_active=false`) reads from page 1 and stops
after a page that holds only runs already known, or a short page, or at the
page cap. The API documents no order: it is learned from the runs'
`created_at` with the sweep's rules (`sweep.classify`); while it is newest first
(or not known yet) a quiet function costs one request a cycle; listed oldest
first or in no order, every page is read, up to the cap. The first read of a
function only takes its bearings (page 1). A known active run not on the pages
read is asked for on its own (`GET /functions/{id}/runs/{run_id}`), so a long
run is still seen ending.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from exporter.labels import RUN_ACTIVE, RUN_ENDED_STATUSES, RUN_STATUSES, SCHEDULE_ENABLED
from exporter.notte.accountmodel import Function, FunctionDetail, FunctionRun
from exporter.polling.schedule import BadSchedule, Schedule, parse_schedule
from exporter.polling.sweep import SLACK_SECONDS, Order, classify, settle

# Automations run for seconds to an hour.
RUN_DURATION_BUCKETS: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
MAX_KNOWN_RUNS: Final = 500  # per function: the newest runs remembered (active ones always)
MAX_FUNCTIONS: Final = 1000  # functions tracked at most; the rest are not listed
MAX_RUN_PAGES: Final = 10  # pages of one function's runs read in one cycle
# How often a function's details (its schedule) are read again, when the list shows no change.
DETAIL_REFRESH_SECONDS: Final = 300.0


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket of `RUN_DURATION_BUCKETS` (not cumulative), plus sum and count."""

    counts: tuple[int, ...] = (0,) * len(RUN_DURATION_BUCKETS)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> Histogram:
        index = bisect.bisect_left(RUN_DURATION_BUCKETS, value)
        counts = list(self.counts)
        if index < len(counts):
            counts[index] += 1
        return Histogram(tuple(counts), self.total + value, self.count + 1)

    def cumulative(self) -> list[tuple[str, float]]:
        """Buckets as the exposition wants them: (`le`, cumulative count), `+Inf` last."""
        running, buckets = 0, []
        for bound, count in zip(RUN_DURATION_BUCKETS, self.counts, strict=True):
            running += count
            buckets.append((_bound(bound), float(running)))
        return [*buckets, ("+Inf", float(self.count))]


def _bound(value: float) -> str:
    return str(int(value)) + ".0" if value.is_integer() else str(value)


@dataclass(frozen=True)
class KnownRun:
    status: str
    created: float
    session_id: str | None = None


@dataclass(frozen=True)
class FunctionState:
    """What the exporter knows of one function."""

    function: Function
    detail: FunctionDetail | None = None
    detail_read_at: float = -math.inf  # wall clock of the last detail read
    schedule: Schedule | None = None  # the enabled schedule, when readable
    runs: Mapping[str, KnownRun] = field(default_factory=lambda: MappingProxyType({}))
    ended_total: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(RUN_ENDED_STATUSES, 0))
    )
    durations: Histogram = Histogram()
    last_run: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    order: Order = "unknown"
    bearings: bool = False

    def needs_detail(self, now: float) -> bool:
        """Read the details when never read, when the list shows a newer version, or
        every `DETAIL_REFRESH_SECONDS`."""
        if self.detail is None or now - self.detail_read_at >= DETAIL_REFRESH_SECONDS:
            return True
        return self.function.updated_at != self.detail.updated_at

    def next_run(self) -> float | None:
        """An enabled schedule's first run after the newest run seen (or after the last
        change to the function, before any run): it stays in the past while runs are late."""
        if self.schedule is None:
            return None
        anchor = max(self.last_run.values(), default=None)
        if anchor is None and self.function.updated_at is not None:
            anchor = self.function.updated_at.timestamp()
        if anchor is None:
            return None
        try:
            return self.schedule.next_after(anchor)
        except BadSchedule:
            return None


@dataclass(frozen=True)
class FunctionsState:
    functions: Mapping[str, FunctionState] = field(default_factory=lambda: MappingProxyType({}))


def apply_function_list(
    state: FunctionsState, listed: Sequence[Function], *, complete: bool
) -> FunctionsState:
    """The functions the list shows; when it was read to its end, those it no longer
    shows are forgotten (their series vanish)."""
    known = dict(state.functions)
    for function in listed[:MAX_FUNCTIONS]:
        previous = known.get(function.function_id)
        known[function.function_id] = (
            FunctionState(function) if previous is None else replace(previous, function=function)
        )
    if complete:
        shown = {f.function_id for f in listed}
        known = {fid: value for fid, value in known.items() if fid in shown}
    return FunctionsState(MappingProxyType(known))


def apply_detail(
    fs: FunctionState, detail: FunctionDetail, now: float
) -> tuple[FunctionState, bool]:
    """The function's details; True when its enabled schedule cannot be read (bad data)."""
    schedule, bad = None, False
    if detail.schedule_state == SCHEDULE_ENABLED and detail.schedule_cron:
        try:
            schedule = parse_schedule(detail.schedule_cron)
        except BadSchedule:
            bad = True
    function = fs.function
    if detail.updated_at is not None:
        function = function.model_copy(update={"updated_at": detail.updated_at})
    changed = replace(fs, function=function, detail=detail, detail_read_at=now, schedule=schedule)
    return changed, bad


@dataclass(frozen=True)
class RunsRead:
    """One cycle's reading of a function's runs, page by page."""

    pages: tuple[tuple[FunctionRun, ...], ...] = ()
    complete: bool = False  # read to a short or last page

    def add(
        self,
        items: Sequence[FunctionRun],
        *,
        item_count: int,
        page_size: int,
        has_next: bool | None,
    ) -> RunsRead:
        end = item_count < page_size or has_next is False
        return RunsRead((*self.pages, tuple(items)), self.complete or end)

    @property
    def runs(self) -> list[FunctionRun]:
        return [run for page in self.pages for run in page]


def next_runs_page(fs: FunctionState, read: RunsRead) -> int | None:
    """The page of runs to read next, or None when this cycle has read enough."""
    if not read.pages:
        return 1
    if read.complete or len(read.pages) >= MAX_RUN_PAGES or not fs.bearings:
        return None
    order = _order(fs.order, read)
    if order in ("newest", "unknown") and all(r.function_run_id in fs.runs for r in read.pages[-1]):
        return None
    return len(read.pages) + 1


def _order(known: Order, read: RunsRead) -> Order:
    created = [run.created_at.timestamp() for run in read.runs]
    return settle(known, classify(created, SLACK_SECONDS))


def missing_active_runs(fs: FunctionState, read: RunsRead) -> list[str]:
    """Known active runs the pages read did not show: each is asked for on its own."""
    shown = {run.function_run_id for run in read.runs}
    return [rid for rid, run in fs.runs.items() if run.status == RUN_ACTIVE and rid not in shown]


def apply_runs(
    fs: FunctionState,
    read: RunsRead,
    fetched: Iterable[FunctionRun],
    gone: Iterable[str],
    *,
    process_start: float,
) -> FunctionState:
    """Fold the runs read (listed, then fetched one by one; `gone` answered 404) into the
    function's state, counting each run's end once."""
    runs = dict(fs.runs)
    ended_total = dict(fs.ended_total)
    durations = fs.durations
    last_run = dict(fs.last_run)
    for run in [*read.runs, *fetched]:
        if run.function_id != fs.function.function_id:
            continue
        known = runs.get(run.function_run_id)
        if run.ended and _counts(known, run, process_start):
            ended_total[run.status] = ended_total.get(run.status, 0) + 1
            durations = durations.observe(run.duration)
        created = run.created_at.timestamp()
        runs[run.function_run_id] = KnownRun(run.status, created, run.session_id)
        if run.status in RUN_STATUSES:
            last_run[run.status] = max(last_run.get(run.status, -math.inf), created)
    for run_id in gone:
        runs.pop(run_id, None)
    return replace(
        fs,
        runs=MappingProxyType(_newest(runs)),
        ended_total=MappingProxyType(ended_total),
        durations=durations,
        last_run=MappingProxyType(last_run),
        order=_order(fs.order, read) if read.pages else fs.order,
        bearings=fs.bearings or bool(read.pages),
    )


def _counts(known: KnownRun | None, run: FunctionRun, process_start: float) -> bool:
    if known is None:
        return run.updated_at.timestamp() > process_start
    return known.status not in RUN_ENDED_STATUSES


def _newest(runs: dict[str, KnownRun]) -> dict[str, KnownRun]:
    """Active runs, and the newest ended ones up to `MAX_KNOWN_RUNS`."""
    if len(runs) <= MAX_KNOWN_RUNS:
        return runs
    ended = sorted(
        (item for item in runs.items() if item[1].status != RUN_ACTIVE),
        key=lambda item: item[1].created,
        reverse=True,
    )
    keep = {rid for rid, _ in ended[:MAX_KNOWN_RUNS]}
    return {rid: run for rid, run in runs.items() if run.status == RUN_ACTIVE or rid in keep}
