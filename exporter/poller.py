"""One poll cycle: ask the API, fold the answers into the tracker, publish a snapshot.

The only writer of shared state. A cycle lists the active sessions (paging),
sweeps the newest sessions of any status (`sweep.py`), fetches the sessions
the tracker asks for, concurrently and bounded by `max_concurrency`, applies
the tracker's rules, and swaps in a new immutable snapshot, whether the cycle
succeeded or not (clock-dependent values keep moving through an outage, and
the last known values stay exported).

A cycle is never thrown away: whatever it learned is applied, even when it
failed or ran out of time. Sessions it had no time to fetch are deferred and
asked first next cycle, so a slow API still gets every session refreshed, in
turn; running out of time is not a failure, as long as the API answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from exporter.client import (
    ApiUnreachable,
    InvalidSession,
    ListPage,
    NotFound,
    NotteClient,
    NotteError,
    RateLimited,
    Unauthorized,
    UnusableSessionId,
)
from exporter.configured import ConfiguredIds
from exporter.labels import FAILURE, SUCCESS
from exporter.model import Session
from exporter.selfmetrics import SelfMetrics
from exporter.settings import Settings
from exporter.sharding import owns
from exporter.snapshot import SnapshotStore, build_snapshot
from exporter.sweep import SweepRun, SweepState, start_sweep
from exporter.tracker import CycleResult, TrackerState, apply_cycle, plan_fetches

log = logging.getLogger(__name__)

# A cycle's requests must end within this share of the poll interval, and the
# cycle itself is cut at the second share (a safety net, in the event loop's
# time, for anything the requests' deadline does not bound): it ends before
# the next one is due, so a hanging API never makes the scheduler skip (and
# warn about) a run.
CYCLE_BUDGET_FRACTION = 0.9
CYCLE_CUTOFF_FRACTION = 0.95
# A request that failed this close to the deadline was cut by it.
DEADLINE_TOLERANCE_SECONDS = 0.01


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
        """The contract's hard cap on pages listed in one cycle."""
        return math.ceil(self.max_sessions / self.page_size) + 1


@dataclass
class _Cycle:
    """What one cycle has learned so far; applied whatever happens."""

    deadline: float
    configured: list[str] | None = None
    listed: list[Session] | None = None
    seen: list[Session] = field(default_factory=list)
    fetched: dict[str, Session] = field(default_factory=dict)
    not_found: set[str] = field(default_factory=set)
    deferred: list[str] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    answered: bool = False  # some request got an answer
    cut: bool = False  # some request was cut, or not made, for lack of time

    @property
    def blocked(self) -> bool:
        """An answer that would fail every other request too (401/403, a Retry-After pause)."""
        return any(isinstance(f, Unauthorized | RateLimited) for f in self.failures)


class Poller:
    """Runs poll cycles; owns the tracker state and publishes snapshots to the store."""

    def __init__(
        self,
        *,
        options: PollOptions,
        client: NotteClient,
        configured: ConfiguredIds,
        metrics: SelfMetrics,
        store: SnapshotStore,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = options
        self._client = client
        self._configured = configured
        self._metrics = metrics
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._process_start = clock()
        self._state = TrackerState()
        self._sweep = SweepState()
        self._generation = 0
        self._last_problem: str | None = "not polled yet"
        self._unusable_logged: set[str] = set()  # IDs already warned about
        self._deferring = False
        metrics.sweep_enabled.set(1 if self._sweeping else 0)
        metrics.sweep_configured.set(1 if options.discovery and options.sweep else 0)

    @property
    def _sweeping(self) -> bool:
        return self._options.discovery and self._options.sweep and self._sweep.enabled

    async def run_cycle(self) -> bool:
        """One whole cycle within the poll interval; True when it succeeded."""
        started = self._monotonic()
        cycle = _Cycle(deadline=started + self._options.poll_interval * CYCLE_BUDGET_FRACTION)
        try:
            async with asyncio.timeout(self._options.poll_interval * CYCLE_CUTOFF_FRACTION):
                await self._poll(cycle)
        except TimeoutError:
            cycle.cut = True
        except Exception as exc:  # anything at all fails the cycle, never the next one
            cycle.failures.append(exc)
        self._apply(cycle)
        if not cycle.failures and cycle.cut and not cycle.answered:
            cycle.failures.append(ApiUnreachable("the poll cycle hit its deadline (no answer)"))
        self._finish(cycle, self._monotonic() - started)
        return not cycle.failures

    async def _poll(self, cycle: _Cycle) -> None:
        cycle.configured = [i for i in self._configured.current() if self._owns(i)]
        if self._options.discovery:
            await self._guarded(cycle, self._list_active(cycle))
            if self._sweeping and cycle.listed is not None:
                await self._guarded(cycle, self._sweep_new(cycle))
        if cycle.blocked:
            return
        listed_ids = None if cycle.listed is None else frozenset(s.session_id for s in cycle.listed)
        await self._fetch_all(plan_fetches(self._state, cycle.configured, listed_ids), cycle)

    async def _guarded(self, cycle: _Cycle, step: Coroutine[object, object, None]) -> None:
        """Run one step; its failure is recorded (or, cut by the deadline, is no failure)."""
        try:
            await step
        except Exception as exc:
            self._record(cycle, exc)

    def _record(self, cycle: _Cycle, exc: Exception) -> None:
        if isinstance(exc, ApiUnreachable) and self._timed_out(cycle):
            cycle.cut = True
        else:
            cycle.failures.append(exc)

    def _timed_out(self, cycle: _Cycle) -> bool:
        return self._monotonic() >= cycle.deadline - DEADLINE_TOLERANCE_SECONDS

    def _owns(self, session_id: str) -> bool:
        return owns(session_id, self._options.shard, self._options.total_shards)

    async def _list_active(self, cycle: _Cycle) -> None:
        """Every page of active sessions this replica owns; stops on a short/empty page.

        Pages read before a failure are kept as `seen`: their sessions are
        applied, but without the whole list none is taken to have left it.
        """
        pages: list[Session] = []
        page_size = self._options.page_size
        try:
            for page in range(1, self._options.max_pages + 1):
                result = await self._list_page(cycle, page, only_active=True)
                pages += [s for s in result.sessions if self._owns(s.session_id)]
                if result.has_next is False or result.item_count < page_size:
                    cycle.listed = pages
                    return
            log.warning("stopped listing at the page cap (%d pages)", self._options.max_pages)
            cycle.listed = pages
        finally:
            if cycle.listed is None:
                cycle.seen += pages

    async def _list_page(self, cycle: _Cycle, page: int, *, only_active: bool) -> ListPage:
        result = await self._client.list_sessions(
            page=page,
            page_size=self._options.page_size,
            only_active=only_active,
            include_system=self._options.include_system,
            deadline=cycle.deadline,
        )
        cycle.answered = True
        return result

    async def _sweep_new(self, cycle: _Cycle) -> None:
        """List sessions of any status created since the last sweep (see `sweep.py`)."""
        run = start_sweep(
            self._sweep, page_size=self._options.page_size, max_pages=self._options.max_pages
        )
        try:
            while run.next_page is not None:
                if self._timed_out(cycle):
                    cycle.cut = True
                    return
                page = await self._list_page(cycle, run.next_page, only_active=False)
                run = run.read(
                    run.next_page, page.sessions, item_count=page.item_count, has_next=page.has_next
                )
        finally:
            self._end_sweep(run, cycle)

    def _end_sweep(self, run: SweepRun, cycle: _Cycle) -> None:
        self._sweep, found = run.finish()
        cycle.seen += [s for s in found if self._owns(s.session_id)]
        if found:
            log.debug("the sweep found %d new sessions", len(found))
        if run.capped and run.state.bearings:
            log.warning(
                "the sweep stopped at the page cap (%d pages): more sessions were created "
                "since the last sweep than it may read in one cycle",
                run.max_pages,
            )
        if not self._sweep.enabled:
            self._metrics.sweep_enabled.set(0)
            log.warning(
                "the sweep is off: the API lists sessions in no order of creation time, so "
                "sessions that start and end between two polls are not seen"
            )

    async def _fetch_all(self, session_ids: Sequence[str], cycle: _Cycle) -> None:
        """GET each session, at most `max_concurrency` at once, while the cycle has time.

        After an answer that would fail every other request too (401/403, or a
        Retry-After pause), the rest are not sent: no storm against a refusing API.
        When no request has succeeded yet this cycle, the first fetch goes
        alone, so a refused key costs one request, not one per session. What
        the deadline leaves unasked, or cuts, is deferred to the next cycle.
        """
        queue = deque(session_ids)
        in_flight: dict[str, None] = {}

        async def fetch_next() -> bool:
            if not queue or cycle.blocked:
                return False
            if self._timed_out(cycle):
                cycle.cut = True
                return False
            session_id = queue.popleft()
            in_flight[session_id] = None
            await self._fetch(session_id, cycle)
            del in_flight[session_id]
            return True

        async def worker() -> None:
            while await fetch_next():
                pass

        try:
            if not cycle.answered:
                await fetch_next()
            workers = min(self._options.max_concurrency, len(queue))
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            if not cycle.blocked:
                cycle.deferred += [*in_flight, *queue]

    async def _fetch(self, session_id: str, cycle: _Cycle) -> None:
        try:
            cycle.fetched[session_id] = await self._client.get_session(
                session_id, deadline=cycle.deadline
            )
            cycle.answered = True
        except NotFound:
            cycle.not_found.add(session_id)
            cycle.answered = True
        except InvalidSession as exc:
            log.warning("skipping session %s: %s", session_id, exc)
            cycle.answered = True
        except UnusableSessionId as exc:
            # Skipped, not a failed cycle; said once per ID, not once per cycle.
            first = session_id not in self._unusable_logged
            self._unusable_logged.add(session_id)
            log.log(logging.WARNING if first else logging.DEBUG, "skipping: %s", exc)
        except Exception as exc:
            if isinstance(exc, ApiUnreachable) and self._timed_out(cycle):
                cycle.deferred.append(session_id)
                cycle.cut = True
            else:
                cycle.failures.append(exc)

    def _apply(self, cycle: _Cycle) -> None:
        """Fold what the cycle learned into the tracker, however the cycle ended."""
        if cycle.configured is None:
            return  # it failed before it knew which sessions are configured
        result = CycleResult(
            configured_ids=cycle.configured,
            listed=cycle.listed,
            fetched=cycle.fetched,
            not_found=frozenset(cycle.not_found),
            seen=cycle.seen,
            deferred=list(dict.fromkeys(cycle.deferred)),
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
        metrics = self._metrics
        metrics.poll_duration.observe(duration)
        metrics.polls.labels(result=SUCCESS if succeeded else FAILURE).inc()
        metrics.up.set(1 if succeeded else 0)
        if succeeded:
            metrics.last_poll_success.set(now)
        metrics.deferred_sessions.set(len(self._state.deferred))
        self._log_deferral(len(self._state.deferred))
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


def _describe(failures: Sequence[Exception]) -> str:
    """A summary of why a cycle failed: the first failure, and how many more."""
    first = failures[0]
    text = str(first) if isinstance(first, NotteError) else f"{type(first).__name__}: {first}"
    hint = " (check the API key)" if isinstance(first, Unauthorized) else ""
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{text}{hint}{more}"
