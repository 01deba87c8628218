"""The sweep: find sessions created since the last cycle, ended ones included.

The active list only shows live sessions, so a session that starts and ends
between two cycles would never be seen. Each cycle the poller also lists
`only_active=false` and hands every page it reads to a `SweepRun`, which says
which page to read next and, when it is done, which sessions are new and what
to remember (`SweepState`). Both are immutable and free of I/O, so the paging
plan is tested with fake pages.

"New" is judged by the API's own clock: a session is new when its
`created_at` is at or after the newest one a good sweep saw (the *mark*),
less `SLACK_SECONDS` for commit order, and it was not reported already
(`SweepState.recent` holds the IDs seen inside that window). Items without
`created_at` are ignored.

The API does not document its order, so it is learned from the items
(`classify`): every page a sweep reads is checked, in page order, against
both time orders, with the same slack.

- One item says nothing: a single timestamp has no order.
- Two items (or more) whose `created_at` lie within the slack of each other
  (equal timestamps, ties) say nothing either: both orders fit them.
- Two items further apart than the slack fit exactly one order, which is taken
  as a working hypothesis. It is not proof: an API in no order shows any given
  pair one way or the other half of the time. Every page read afterwards, in
  every cycle, is checked against it (all pairs, across pages), and the first
  pair that contradicts it by more than the slack turns the sweep off. The
  more items a sweep reads, the surer the order; a page of 100 items in no
  time order shows it at once.

Paging, by order:

- newest first: read from page 1 and stop after the first page that holds a
  session older than the mark (less the slack);
- oldest first: the first sweep finds the last page (double the page number
  until a page is short or empty, then bisect); later sweeps start at the
  remembered last page, step back while a page holds no session seen before
  (the list shrank: the API forgot old sessions), then read on to the end;
- not known yet (no pair apart by more than the slack): read from page 1 to
  the end;
- in no time order: the sweep is off for the life of the process.

Every sweep also stops at a short or empty page and at the page cap. The first
sweep only takes its bearings: it reports nothing. A sweep cut short (a failed
request, the cycle's deadline) still reports what it found, but keeps the old
mark, so the next one reads back to where the last good sweep stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from exporter.notte.model import Session, timestamp

# Seconds a session committed late may be older than one already seen, and
# still be found (commit order is not creation order).
SLACK_SECONDS = 5.0

Order = Literal["unknown", "newest", "oldest", "unsorted"]
_Step = Literal["forward", "back", "gallop", "bisect"]


def classify(created: Sequence[float], slack: float) -> Order:
    """The time order a sequence of `created_at` values fits, given the slack.

    `newest` when no item is newer than an earlier one by more than `slack`
    and some item is older than an earlier one by more; `oldest` the other way
    round; `unknown` when every pair lies within the slack (fewer than two
    items, ties); `unsorted` when both orders are contradicted.
    """
    newest_fits = oldest_fits = True
    lowest = highest = math.nan
    for index, value in enumerate(created):
        if index:
            newest_fits = newest_fits and value <= lowest + slack
            oldest_fits = oldest_fits and value >= highest - slack
            lowest, highest = min(lowest, value), max(highest, value)
        else:
            lowest = highest = value
    if newest_fits and oldest_fits:
        return "unknown"
    if newest_fits:
        return "newest"
    return "oldest" if oldest_fits else "unsorted"


def settle(known: Order, seen: Order) -> Order:
    """Fold new evidence into the order believed so far; a contradiction is no order."""
    if seen == "unknown" or known == seen:
        return known
    return seen if known == "unknown" else "unsorted"


@dataclass(frozen=True)
class SweepState:
    """What the sweep remembers between cycles."""

    order: Order = "unknown"
    bearings: bool = False  # a first sweep has completed
    mark: float = -math.inf  # the newest `created_at` a completed sweep saw
    recent: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    tail: int | None = None  # the last page of the listing, when last seen

    @property
    def enabled(self) -> bool:
        return self.order != "unsorted"


@dataclass(frozen=True)
class SweepRun:
    """One cycle's sweep in progress: read `next_page`, pass it to `read`, until None."""

    state: SweepState
    page_size: int
    max_pages: int
    slack: float
    next_page: int | None
    step: _Step
    order: Order
    pages: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    seen: Mapping[str, float] = field(default_factory=dict)
    found: Mapping[str, Session] = field(default_factory=dict)
    requests: int = 0
    last_page: int | None = None  # the last page with items, once the end was seen
    filled: int = 0  # the highest page read that held items
    low: int = 0  # gallop and bisect: the highest full page known
    high: int = 0  # bisect: the lowest empty page known
    resume: int | None = None  # oldest first: where to read on after stepping back
    capped: bool = False

    @property
    def threshold(self) -> float:
        return self.state.mark - self.slack

    def read(
        self, page: int, sessions: Iterable[Session], *, item_count: int, has_next: bool | None
    ) -> SweepRun:
        """The run after reading `page`; its `next_page` says what to read next."""
        stamped = [(s, t) for s in sessions if (t := timestamp(s.created_at)) is not None]
        pages = {**self.pages, page: tuple(t for _, t in stamped)}
        in_order = [t for number in sorted(pages) for t in pages[number]]
        run = replace(
            self,
            pages=pages,
            seen={**self.seen, **{s.session_id: t for s, t in stamped}},
            found={**self.found, **self._new(stamped)},
            requests=self.requests + 1,
            filled=max(self.filled, page) if item_count else self.filled,
            order=settle(self.state.order, classify(in_order, self.slack)),
        )
        full = item_count >= self.page_size and has_next is not False
        return run._after(
            page,
            full=full,
            empty=item_count == 0,
            holds_old=any(t < self.threshold for _, t in stamped),
            holds_seen=any(s.session_id in self.state.recent for s, _ in stamped),
        )

    def _new(self, stamped: Sequence[tuple[Session, float]]) -> dict[str, Session]:
        if not self.state.bearings:
            return {}
        fresh = (s for s, t in stamped if t >= self.threshold)
        return {s.session_id: s for s in fresh if s.session_id not in self.state.recent}

    def _after(
        self, page: int, *, full: bool, empty: bool, holds_old: bool, holds_seen: bool
    ) -> SweepRun:
        """Plan the next page from what `page` held: sessions older than the mark, or
        sessions an earlier sweep saw."""
        if self.order == "unsorted":
            return replace(self, next_page=None)
        if self.requests >= self.max_pages:
            return replace(self, next_page=None, capped=True)
        if self.step == "back":
            return self._back(page, full=full, known=holds_old or holds_seen)
        if self.step in ("gallop", "bisect"):
            return self._search(page, full=full, empty=empty)
        if not full:
            return self._end(self.filled if empty else page)
        if not self.state.bearings:
            if self.order == "newest":
                return replace(self, next_page=None)
            if self.order == "oldest":
                return replace(self, step="gallop", low=page, next_page=page * 2)
        elif self.order == "newest" and holds_old:
            return replace(self, next_page=None)
        return replace(self, next_page=page + 1)

    def _back(self, page: int, *, full: bool, known: bool) -> SweepRun:
        """Oldest first: step back from the remembered tail to a page with a known session."""
        run = self
        if page == self.state.tail:
            run = replace(self, resume=page + 1 if full else None)
        if not known and page > 1:
            return replace(run, next_page=page - 1)
        if run.resume is None:
            return run._end(run.filled)
        return replace(run, step="forward", next_page=run.resume)

    def _search(self, page: int, *, full: bool, empty: bool) -> SweepRun:
        """Oldest first, first sweep: gallop to a page past the end, then bisect back."""
        if not full and not empty:
            return self._end(page)
        low, high = (page, self.high) if full else (self.low, page)
        if self.step == "gallop" and full:
            return replace(self, low=low, next_page=page * 2)
        if high - low <= 1:
            return self._end(low)
        return replace(self, step="bisect", low=low, high=high, next_page=(low + high) // 2)

    def _end(self, last_page: int) -> SweepRun:
        return replace(self, next_page=None, last_page=last_page or None)

    def finish(self) -> tuple[SweepState, list[Session]]:
        """The state after this run and the new sessions it found.

        A completed run moves the mark to the newest session seen; one cut short
        keeps the old mark (the next sweep reads back to it) but remembers what
        it reported, so nothing is reported twice.
        """
        state = self.state
        if self.next_page is not None:
            reported = {i: t for i, t in self.seen.items() if i in self.found}
            recent = MappingProxyType({**state.recent, **reported})
            return replace(state, order=self.order, recent=recent), self._found()
        mark = max([state.mark, *self.seen.values()])
        tail = self.last_page
        if tail is None and self.capped:  # read on from the last page read, next time
            tail = max(self.pages)
        completed = replace(
            state,
            order=self.order,
            bearings=True,
            mark=mark,
            recent=self._recent(mark),
            tail=tail if tail is not None else state.tail,
        )
        return completed, self._found()

    def _recent(self, mark: float) -> Mapping[str, float]:
        window = mark - self.slack
        merged = {**self.state.recent, **self.seen}
        return MappingProxyType({i: t for i, t in merged.items() if t >= window})

    def _found(self) -> list[Session]:
        return list(self.found.values())


def start_sweep(
    state: SweepState, *, page_size: int, max_pages: int, slack: float = SLACK_SECONDS
) -> SweepRun:
    """Where this cycle's sweep starts: page 1, or the remembered tail when oldest first."""
    if not state.enabled:
        first: int | None = None
    elif state.bearings and state.order == "oldest" and state.tail is not None:
        return SweepRun(state, page_size, max_pages, slack, state.tail, "back", state.order)
    else:
        first = 1
    return SweepRun(state, page_size, max_pages, slack, first, "forward", state.order)
