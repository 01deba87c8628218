"""One poll cycle: ask the API, fold the answers into the tracker, publish a snapshot.

The only writer of shared state. A cycle lists the active sessions (paging),
sweeps the newest sessions of any status (`sweep.py`), fetches the sessions
the tracker asks for, oldest data first, applies the tracker's rules, and
swaps in a new immutable snapshot, whether the cycle succeeded or not
(clock-dependent values keep moving through an outage, and the last known
values stay exported).

No request is wasted. A request starts only while the cycle has time (its
start-by time), and only when one of the client's `max_concurrency` slots is
free: the one bound. A request that started is never cancelled for lack of
time: its answer, if it comes after the cycle ended, is applied by the next
cycle (`inflight.py`); each request ends within the next cycle. The
listing works the same way: a listing the cycle had no time to finish goes
on, and the next cycle applies it. Sessions a cycle had no
answer for are *deferred*: their data is now the oldest, so they are asked
first next time; running out of time is not a failure, as long as the API
answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from exporter.notte.client import (
    ApiUnreachable,
    InvalidSession,
    ListPage,
    NotFound,
    NotStarted,
    NotteClient,
    NotteError,
    RateLimited,
    RequestCut,
    Unauthorized,
    UnusableSessionId,
)
from exporter.notte.model import Session
from exporter.polling.configured import ConfiguredIds
from exporter.polling.inflight import InFlight
from exporter.polling.sharding import owns
from exporter.polling.snapshot import SnapshotStore, build_snapshot
from exporter.polling.sweep import SweepRun, SweepState, start_sweep
from exporter.polling.tracker import (
    CycleResult,
    TrackerState,
    apply_cycle,
    oldest_refresh,
    plan_fetches,
)
from exporter.settings import Settings

log = logging.getLogger(__name__)

# No request starts after this share of the poll interval (less the time the
# last cycle took to render its snapshot), and the cycle itself is cut at the
# second share (a safety net for anything else that waits): it ends before the
# next one is due, so a hanging API never makes the scheduler skip (and warn
# about) a run.
CYCLE_BUDGET_FRACTION = 0.9
CYCLE_CUTOFF_FRACTION = 0.95
# A request may run this share of the interval past its cycle's start-by time:
# it ends before the next cycle's start-by time, and that cycle applies its answer.
REQUEST_OVERTIME = CYCLE_BUDGET_FRACTION
# Rendering never takes more than this share of the interval from the requests.
MAX_WARM_FRACTION = 0.5
SHUTDOWN_GRACE_SECONDS = 1.0
_LISTING = "listing"


class PollObserver(Protocol):
    """Where the poller reports its cycles (the exporter's self-metrics implement it)."""

    def cycle_ended(self, *, succeeded: bool, seconds: float, now: float) -> None: ...
    def sessions_deferred(self, count: int) -> None: ...
    def list_cut_at_cap(self, truncated: bool) -> None: ...
    def sweep_state(self, *, configured: bool, running: bool) -> None: ...
    def watch_oldest_refresh(self, age: Callable[[], float]) -> None: ...


@dataclass(frozen=True)
class PollOptions:
    """The settings a poll cycle needs, and nothing else (their defaults live on `Settings`)."""

    poll_interval: float
    discovery: bool
    sweep: bool
    include_system: bool
    page_size: int
    retention: float
    max_sessions: int
    max_concurrency: int
    shard: int
    total_shards: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PollOptions:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    @property
    def max_pages(self) -> int:
        """The cap on pages listed in one cycle: enough for `max_sessions` sessions on
        every shard, since each replica reads the whole fleet's list to find its own."""
        return math.ceil(self.max_sessions * self.total_shards / self.page_size) + 1


@dataclass
class _Findings:
    """What the listing and the sweep learned: applied by the cycle that sees them end."""

    listed: list[Session] | None = None  # the whole active list, read to its end
    listed_ids: frozenset[str] | None = None  # listed, or the pages read before the cap
    truncated: bool | None = None  # stopped at the page cap; None: not read to an end
    seen: list[Session] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    answered: bool = False
    cut: bool = False


@dataclass
class _Cycle:
    """What one cycle has learned so far; applied whatever happens."""

    start_by: float  # no request starts later
    deadline: float  # the requests it starts end by then, within the next cycle
    configured: list[str] | None = None
    findings: _Findings = field(default_factory=_Findings)
    planned: list[str] = field(default_factory=list)
    fetched: dict[str, Session] = field(default_factory=dict)
    not_found: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)  # sessions with an outcome this cycle
    failures: list[Exception] = field(default_factory=list)
    answered: bool = False  # some request got an answer
    cut: bool = False  # something was not asked, or not answered, for lack of time

    @property
    def blocked(self) -> bool:
        """An answer that would fail every other request too (401/403, a Retry-After pause)."""
        return any(isinstance(f, Unauthorized | RateLimited) for f in self.failures)

    def take(self, findings: _Findings) -> None:
        self.findings = findings
        self.failures += findings.failures
        self.answered = self.answered or findings.answered
        self.cut = self.cut or findings.cut


class Poller:
    """Runs poll cycles; owns the tracker state and publishes snapshots to the store.

    `warm`, when given, renders the published snapshot (in a thread) as part of
    the cycle; the time it took is kept out of the next cycle's request budget.
    """

    def __init__(
        self,
        *,
        options: PollOptions,
        client: NotteClient,
        configured: ConfiguredIds,
        metrics: PollObserver,
        store: SnapshotStore,
        warm: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._client = client
        self._configured = configured
        self._metrics = metrics
        self._store = store
        self._warm = warm
        self._clock = clock
        self._monotonic = monotonic
        self._process_start = clock()
        self._state = TrackerState()
        self._sweep = SweepState()
        self._fetches: InFlight[Session] = InFlight()
        self._listing: InFlight[_Findings] = InFlight()
        self._listed_so_far = _Findings()  # what the listing in flight has read yet
        self._start_by = 0.0  # the running cycle's; a listing that outlives its cycle reads it
        self._warm_seconds = 0.0
        self._probe = True  # the first fetch goes alone: at start and after a failed cycle
        self._generation = 0
        self._last_problem: str | None = "not polled yet"
        self._unusable_logged: set[str] = set()  # IDs already warned about
        self._deferred = 0
        self._deferring = False
        self._truncated = False
        self._oldest_refresh: float | None = None
        metrics.sweep_state(configured=options.discovery and options.sweep, running=self._sweeping)
        metrics.watch_oldest_refresh(self._oldest_refresh_age)

    @property
    def _sweeping(self) -> bool:
        return self._options.discovery and self._options.sweep and self._sweep.enabled

    def _oldest_refresh_age(self) -> float:
        oldest = self._oldest_refresh
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    async def aclose(self) -> None:
        """At shutdown: the requests still in flight are cancelled (counted `cut`)."""
        await self._fetches.cancel(SHUTDOWN_GRACE_SECONDS)
        await self._listing.cancel(SHUTDOWN_GRACE_SECONDS)

    async def run_cycle(self) -> bool:
        """One whole cycle within the poll interval; True when it succeeded."""
        started = self._monotonic()
        interval = self._options.poll_interval
        budget = interval * CYCLE_BUDGET_FRACTION - self._warm_seconds
        start_by = started + budget
        cycle = _Cycle(start_by=start_by, deadline=start_by + interval * REQUEST_OVERTIME)
        self._start_by = cycle.start_by
        try:
            async with asyncio.timeout(interval * CYCLE_CUTOFF_FRACTION - self._warm_seconds):
                await self._poll(cycle)
        except TimeoutError:
            cycle.cut = True
        except Exception as exc:  # anything at all fails the cycle, never the next one
            cycle.failures.append(exc)
        self._take_answers(cycle)
        self._apply(cycle)
        if not cycle.failures and cycle.cut and not cycle.answered:
            cycle.failures.append(ApiUnreachable("the poll cycle hit its deadline (no answer)"))
        self._probe = bool(cycle.failures)
        self._finish(cycle, self._monotonic() - started)
        await self._render()
        return not cycle.failures

    async def _render(self) -> None:
        """Render the new snapshot for scrapes, in a thread, and remember how long it took."""
        if self._warm is None:
            return
        started = self._monotonic()
        try:
            await asyncio.to_thread(self._warm)
        except Exception:
            log.exception("could not render the poll cycle's values")
        took = self._monotonic() - started
        self._warm_seconds = min(took, self._options.poll_interval * MAX_WARM_FRACTION)

    async def _poll(self, cycle: _Cycle) -> None:
        cycle.configured = [i for i in self._configured.current() if self._owns(i)]
        if self._options.discovery:
            await self._discover(cycle)
        self._take_answers(cycle)
        if cycle.blocked:
            return
        planned = plan_fetches(self._state, cycle.configured, cycle.findings.listed_ids)
        cycle.planned = [i for i in planned if i not in self._fetches]
        await self._dispatch(cycle)
        await self._fetches.wait(until=cycle.start_by, clock=self._monotonic)

    async def _discover(self, cycle: _Cycle) -> None:
        """Start a listing (unless one is still running) and take its findings if it ends
        in time; one that does not goes on, for the next cycle."""
        if _LISTING not in self._listing:
            self._listed_so_far = _Findings()
            self._listing.start(_LISTING, self._list_and_sweep(self._listed_so_far))
        await self._listing.wait(until=cycle.start_by, clock=self._monotonic)
        for _, outcome in self._listing.take():
            if isinstance(outcome, Exception):
                cycle.failures.append(outcome)
            else:
                cycle.take(outcome)
                self._note_truncation(outcome.truncated)
        if _LISTING in self._listing:
            # Still paging: the API answers, it is slow for the work (no failure).
            cycle.cut = True
            cycle.answered = cycle.answered or self._listed_so_far.answered

    async def _list_and_sweep(self, findings: _Findings) -> _Findings:
        try:
            await self._list_active(findings)
        except Exception as exc:
            self._record(findings, exc)
        if self._sweeping and findings.truncated is not None:
            try:
                await self._sweep_new(findings)
            except Exception as exc:
                self._record(findings, exc)
        return findings

    def _record(self, findings: _Findings, exc: Exception) -> None:
        """A step's failure; one cut for lack of time is no failure."""
        if isinstance(exc, NotStarted | RequestCut):
            findings.cut = True
        else:
            findings.failures.append(exc)

    def _owns(self, session_id: str) -> bool:
        return owns(session_id, self._options.shard, self._options.total_shards)

    async def _list_active(self, findings: _Findings) -> None:
        """Every page of active sessions this replica owns; stops on a short/empty page.

        Pages read before a failure are kept as `seen`: their sessions are
        applied, but without the whole list none is taken to have left it. A
        list cut at the page cap is not whole either: its sessions are seen,
        and only tracked sessions missing from it get a fetch of their own.
        """
        pages: list[Session] = []
        page_size = self._options.page_size
        try:
            for page in range(1, self._options.max_pages + 1):
                result = await self._list_page(findings, page, only_active=True)
                pages += [s for s in result.sessions if self._owns(s.session_id)]
                if result.has_next is False or result.item_count < page_size:
                    findings.listed, findings.truncated = pages, False
                    findings.listed_ids = frozenset(s.session_id for s in pages)
                    return
            findings.truncated = True
            findings.listed_ids = frozenset(s.session_id for s in pages)
        finally:
            if findings.listed is None:
                findings.seen += pages

    def _note_truncation(self, truncated: bool | None) -> None:
        """The gauge, and one warning when listings start stopping at the page cap."""
        if truncated is None:
            return
        self._metrics.list_cut_at_cap(truncated)
        if truncated and not self._truncated:
            log.warning(
                "stopped listing active sessions at the page cap (%d pages, max_sessions x "
                "total_shards): sessions past it are not discovered",
                self._options.max_pages,
            )
        self._truncated = truncated

    async def _list_page(self, findings: _Findings, page: int, *, only_active: bool) -> ListPage:
        slot = await self._client.reserve(start_by=self._start_by)
        result = await self._client.list_sessions(
            page=page,
            page_size=self._options.page_size,
            only_active=only_active,
            include_system=self._options.include_system,
            start_by=self._start_by,
            deadline=self._start_by + self._options.poll_interval * REQUEST_OVERTIME,
            slot=slot,
        )
        findings.answered = True
        return result

    async def _sweep_new(self, findings: _Findings) -> None:
        """List sessions of any status created since the last sweep (see `sweep.py`)."""
        run = start_sweep(
            self._sweep, page_size=self._options.page_size, max_pages=self._options.max_pages
        )
        try:
            while run.next_page is not None:
                page = await self._list_page(findings, run.next_page, only_active=False)
                run = run.read(
                    run.next_page, page.sessions, item_count=page.item_count, has_next=page.has_next
                )
        finally:
            self._end_sweep(run, findings)

    def _end_sweep(self, run: SweepRun, findings: _Findings) -> None:
        self._sweep, found = run.finish()
        findings.seen += [s for s in found if self._owns(s.session_id)]
        if found:
            log.debug("the sweep found %d new sessions", len(found))
        if run.capped and run.state.bearings:
            log.warning(
                "the sweep stopped at the page cap (%d pages): more sessions were created "
                "since the last sweep than it may read in one cycle",
                run.max_pages,
            )
        if not self._sweep.enabled:
            configured = self._options.discovery and self._options.sweep
            self._metrics.sweep_state(configured=configured, running=False)
            log.warning(
                "the sweep is off: the API lists sessions in no order of creation time, so "
                "sessions that start and end between two polls are not seen"
            )

    async def _dispatch(self, cycle: _Cycle) -> None:
        """Start a GET for each planned session, in order, as slots come free, while the
        cycle has time.

        After an answer that would fail every other request too (401/403, or a
        Retry-After pause), the rest are not sent: no storm against a refusing API.
        After a failed cycle (and at start) the first fetch goes alone, so a
        refused key costs one request, not a wave; behind an API that is
        merely slow nothing waits for it.
        """
        for session_id in cycle.planned:
            try:
                slot = await self._client.reserve(start_by=cycle.start_by)
            except NotStarted:
                cycle.cut = True
                return
            self._take_answers(cycle)
            if cycle.blocked:
                slot.release()
                return
            fetch = self._client.get_session(
                session_id, start_by=cycle.start_by, deadline=cycle.deadline, slot=slot
            )
            self._fetches.start(session_id, fetch)
            if self._probe and not cycle.answered:
                await self._fetches.wait(
                    until=cycle.start_by, clock=self._monotonic, key=session_id
                )

    def _take_answers(self, cycle: _Cycle) -> None:
        """Fold in the fetches that ended since last asked, this cycle's or earlier ones'."""
        for session_id, outcome in self._fetches.take():
            if isinstance(outcome, RequestCut):
                cycle.cut = True  # deferred: asked again, first
                continue
            cycle.resolved.add(session_id)
            self._take_answer(cycle, session_id, outcome)

    def _take_answer(self, cycle: _Cycle, session_id: str, outcome: Session | Exception) -> None:
        if isinstance(outcome, Session):
            cycle.fetched[session_id] = outcome
            cycle.answered = True
        elif isinstance(outcome, NotFound):
            cycle.not_found.add(session_id)
            cycle.answered = True
        elif isinstance(outcome, InvalidSession):
            log.warning("skipping session %s: %s", session_id, outcome)
            cycle.answered = True
        elif isinstance(outcome, UnusableSessionId):
            # Skipped, not a failed cycle; said once per ID, not once per cycle.
            first = session_id not in self._unusable_logged
            self._unusable_logged.add(session_id)
            log.log(logging.WARNING if first else logging.DEBUG, "skipping: %s", outcome)
        else:
            cycle.failures.append(outcome)

    def _apply(self, cycle: _Cycle) -> None:
        """Fold what the cycle learned into the tracker, however the cycle ended."""
        if cycle.configured is None:
            return  # it failed before it knew which sessions are configured
        result = CycleResult(
            configured_ids=cycle.configured,
            listed=cycle.findings.listed,
            fetched=cycle.fetched,
            not_found=frozenset(cycle.not_found),
            seen=cycle.findings.seen,
        )
        try:
            self._state = apply_cycle(
                self._state,
                result,
                now=self._clock(),
                process_start=self._process_start,
                retention=self._options.retention,
                max_sessions=self._options.max_sessions,
            )
        except Exception as exc:
            cycle.failures.append(exc)

    def _finish(self, cycle: _Cycle, duration: float) -> None:
        """Publish the snapshot and the cycle's self-metrics; log when health changes."""
        succeeded = not cycle.failures
        now = self._clock()
        self._generation += 1
        try:
            snapshot = build_snapshot(self._state, now, self._generation)
            self._store.publish(snapshot, succeeded=succeeded)
        except Exception:
            log.exception("could not publish the poll cycle's values")
        self._metrics.cycle_ended(succeeded=succeeded, seconds=duration, now=now)
        if cycle.configured is not None and not cycle.blocked:
            self._deferred = _deferred(cycle, self._fetches)
        self._metrics.sessions_deferred(self._deferred)
        self._oldest_refresh = oldest_refresh(self._state)
        self._log_deferral(self._deferred)
        self._log_health(cycle.failures)

    def _log_deferral(self, deferred: int) -> None:
        """One line when sessions start being deferred, one when they stop."""
        if deferred and not self._deferring:
            log.warning(
                "%d sessions deferred to the next cycle: the API is too slow to fetch every "
                "session within the poll interval; they are asked first next cycle",
                deferred,
            )
        elif self._deferring and not deferred:
            log.info("no sessions deferred any more: every session is fetched within a cycle")
        self._deferring = deferred > 0

    def _log_health(self, failures: Sequence[Exception]) -> None:
        """One line when the API's health changes, not one per cycle or request.

        The health is the kind of the first failure, not its text: a hang reads
        "timed out" or "hit its deadline", a pause counts down its seconds, and
        neither is a change worth another line. A failure that is not one of
        the client's errors is a bug: its traceback goes to the debug log.
        """
        problem = type(failures[0]).__name__ if failures else None
        if problem == self._last_problem:
            log.debug("poll cycle: %s", problem or "ok")
            return
        if problem is None:
            log.info("poll cycle succeeded; the Notte API is reachable")
        else:
            log.error("poll cycle failed: %s", _describe(failures))
            unexpected = next((f for f in failures if not isinstance(f, NotteError)), None)
            if unexpected is not None:
                log.debug("the unexpected failure", exc_info=unexpected)
        self._last_problem = problem


def _deferred(cycle: _Cycle, fetches: InFlight[Session]) -> int:
    """Sessions the cycle wanted but has no outcome for: not asked, or not answered yet.

    A blocked cycle planned nothing; it keeps the last count (and the
    tracker keeps their order: the oldest data is asked first, whenever).
    """
    unanswered = {i for i in cycle.planned if i not in cycle.resolved}
    return len(unanswered.union(fetches))


def _describe(failures: Sequence[Exception]) -> str:
    """A summary of why a cycle failed: the first failure, and how many more."""
    first = failures[0]
    text = str(first) if isinstance(first, NotteError) else f"{type(first).__name__}: {first}"
    hint = " (check the API key)" if isinstance(first, Unauthorized) else ""
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{text}{hint}{more}"
