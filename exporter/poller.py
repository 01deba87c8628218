"""One poll cycle: ask the API, fold the answers into the tracker, publish a snapshot.

The only writer of shared state. A cycle lists the active sessions (paging),
fetches the few sessions the tracker asks for, concurrently and bounded by the
client's semaphore, applies the tracker's rules, and swaps in a new immutable
snapshot, whether the cycle succeeded or not (clock-dependent values keep
moving through an outage, and the last known values stay exported).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.client import (
    ApiUnreachable,
    InvalidSession,
    NotFound,
    NotteClient,
    NotteError,
    RateLimited,
    Unauthorized,
    UnusableSessionId,
)
from exporter.configured import ConfiguredIds
from exporter.model import Session
from exporter.selfmetrics import SelfMetrics
from exporter.sharding import owns
from exporter.snapshot import SnapshotStore, build_snapshot
from exporter.tracker import CycleResult, TrackerState, apply_cycle, plan_fetches

log = logging.getLogger(__name__)

# A cycle's requests must end within this share of the poll interval, and the
# cycle itself is cut at the second share (a safety net for anything the
# requests' deadline does not bound): it ends before the next one is due, so a
# hanging API never makes the scheduler skip (and warn about) a run.
CYCLE_BUDGET_FRACTION = 0.9
CYCLE_CUTOFF_FRACTION = 0.95


@dataclass(frozen=True)
class PollOptions:
    """The settings a poll cycle needs, and nothing else."""

    poll_interval: float
    discovery: bool = True
    include_system: bool = False
    page_size: int = 100
    retention: float = 900.0
    max_sessions: int = 10000
    shard: int = 0
    total_shards: int = 1

    @property
    def max_pages(self) -> int:
        """The contract's hard cap on pages listed in one cycle."""
        return math.ceil(self.max_sessions / self.page_size) + 1


@dataclass
class _Fetches:
    sessions: dict[str, Session] = field(default_factory=dict)
    not_found: set[str] = field(default_factory=set)
    failures: list[NotteError] = field(default_factory=list)


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
    ) -> None:
        self._options = options
        self._client = client
        self._configured = configured
        self._metrics = metrics
        self._store = store
        self._clock = clock
        self._process_start = clock()
        self._state = TrackerState()
        self._generation = 0
        self._last_problem: str | None = "not polled yet"
        self._unusable_logged: set[str] = set()  # IDs already warned about

    @property
    def state(self) -> TrackerState:
        return self._state

    async def run_cycle(self) -> bool:
        """One whole cycle within the poll interval; True when it succeeded."""
        started = time.monotonic()
        deadline = started + self._options.poll_interval * CYCLE_BUDGET_FRACTION
        try:
            async with asyncio.timeout(self._options.poll_interval * CYCLE_CUTOFF_FRACTION):
                failures = await self._poll(deadline)
        except TimeoutError:
            failures = [ApiUnreachable("the poll cycle hit its deadline (the poll interval)")]
        succeeded = not failures
        self._finish(succeeded, failures, time.monotonic() - started)
        return succeeded

    async def _poll(self, deadline: float) -> list[NotteError]:
        configured = [i for i in self._configured.current() if self._owns(i)]
        failures: list[NotteError] = []
        listed: list[Session] | None = None
        if self._options.discovery:
            try:
                listed = await self._list_all(deadline)
            except NotteError as exc:
                failures.append(exc)
        if not _blocks_further_requests(failures):
            listed_ids = None if listed is None else frozenset(s.session_id for s in listed)
            wanted = plan_fetches(self._state, configured, listed_ids)
            fetches = await self._fetch_all(wanted, deadline, probe_first=listed is None)
        else:
            fetches = _Fetches()
        failures += fetches.failures
        result = CycleResult(
            configured_ids=configured,
            listed=listed,
            fetched=fetches.sessions,
            not_found=frozenset(fetches.not_found),
        )
        self._state = apply_cycle(
            self._state,
            result,
            now=self._clock(),
            process_start=self._process_start,
            retention=self._options.retention,
            max_sessions=self._options.max_sessions,
        )
        return failures

    def _owns(self, session_id: str) -> bool:
        return owns(session_id, self._options.shard, self._options.total_shards)

    async def _list_all(self, deadline: float) -> list[Session]:
        """Every page of active sessions this replica owns; stops on a short/empty page."""
        sessions: list[Session] = []
        page_size = self._options.page_size
        for page in range(1, self._options.max_pages + 1):
            result = await self._client.list_sessions(
                page=page,
                page_size=page_size,
                only_active=True,
                include_system=self._options.include_system,
                deadline=deadline,
            )
            sessions += [s for s in result.sessions if self._owns(s.session_id)]
            if result.has_next is False or result.item_count < page_size:
                return sessions
        log.warning("stopped listing at the page cap (%d pages)", self._options.max_pages)
        return sessions

    async def _fetch_all(
        self, session_ids: Sequence[str], deadline: float, *, probe_first: bool
    ) -> _Fetches:
        """GET each session concurrently (the client bounds requests in flight).

        After an answer that would fail every other request too (401/403, or a
        Retry-After pause), the rest are not sent: no storm against a refusing API.
        When no request has succeeded yet this cycle (`probe_first`), the first
        fetch goes alone, so a refused key costs one request, not one per session.
        """
        fetches = _Fetches()
        stop = asyncio.Event()

        async def fetch(session_id: str) -> None:
            if stop.is_set():
                return
            try:
                fetches.sessions[session_id] = await self._client.get_session(
                    session_id, deadline=deadline
                )
            except NotFound:
                fetches.not_found.add(session_id)
            except InvalidSession as exc:
                log.warning("skipping session %s: %s", session_id, exc)
            except UnusableSessionId as exc:
                # Skipped, not a failed cycle; said once per ID, not once per cycle.
                first = session_id not in self._unusable_logged
                self._unusable_logged.add(session_id)
                log.log(logging.WARNING if first else logging.DEBUG, "skipping: %s", exc)
            except NotteError as exc:
                fetches.failures.append(exc)
                if _blocks_further_requests([exc]):
                    stop.set()

        rest = list(session_ids)
        if probe_first and rest:
            await fetch(rest.pop(0))
        await asyncio.gather(*(fetch(session_id) for session_id in rest))
        return fetches

    def _finish(self, succeeded: bool, failures: list[NotteError], duration: float) -> None:
        """Publish the snapshot and the cycle's self-metrics; log when health changes."""
        now = self._clock()
        self._generation += 1
        self._store.publish(build_snapshot(self._state, now, self._generation), succeeded=succeeded)
        metrics = self._metrics
        metrics.poll_duration.observe(duration)
        metrics.polls.labels(result="success" if succeeded else "failure").inc()
        metrics.up.set(1 if succeeded else 0)
        if succeeded:
            metrics.last_poll_success.set(now)
        self._log_health(failures)

    def _log_health(self, failures: Sequence[NotteError]) -> None:
        """One line when the API's health changes, not one per cycle or request.

        The health is the kind of the first failure, not its text: a hang reads
        "timed out" or "hit its deadline", a pause counts down its seconds, and
        neither is a change worth another line.
        """
        problem = type(failures[0]).__name__ if failures else None
        if problem == self._last_problem:
            log.debug("poll cycle: %s", problem or "ok")
            return
        if problem is None:
            log.info("poll cycle succeeded; the Notte API is reachable")
        else:
            log.error("poll cycle failed: %s", _describe(failures))
        self._last_problem = problem


def _blocks_further_requests(failures: Sequence[NotteError]) -> bool:
    return any(isinstance(f, Unauthorized | RateLimited) for f in failures)


def _describe(failures: Sequence[NotteError]) -> str:
    """A summary of why a cycle failed: the first failure, and how many more."""
    first = failures[0]
    hint = " (check the API key)" if isinstance(first, Unauthorized) else ""
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{first}{hint}{more}"
