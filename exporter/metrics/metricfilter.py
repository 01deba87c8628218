"""Which of the catalogue's families `/metrics` serves: `--metric-allowlist` / `--metric-denylist`.

As kube-state-metrics' flags of the same names: regular expressions, each
matched against a whole family name (`notte_session_status`,
`notte_sessions_ended_total`). An allowlist serves only the families it
matches; a denylist serves every family but those. The two are exclusive
(`settings.py` refuses both). Only the families derived from the API (the
catalogue) are subject to them: the exporter's own metrics (`notte_up`,
`notte_exporter_*`, `process_*`, `python_*`) are always served, so a lean
deployment can still be alerted on. A family left out is never rendered: it
costs no work at a scrape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from exporter.metrics.catalogue import (
    ACCOUNT_FAMILIES,
    AGGREGATE_FAMILIES,
    SESSION_FAMILIES,
    AccountFamily,
    AggregateFamily,
    SessionFamily,
)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


F = TypeVar("F", bound=_Named)

# The exporter's own families in the catalogue (`notte_exporter_tracked_sessions`, ...)
# are self metrics too: never left out.
ALWAYS_SERVED = re.compile(r"notte_up|notte_exporter_.*")

# What README's "Cardinality" section suggests for many short sessions: per-session
# families that only the dashboards' detail reads; every alert still has its series.
LEAN_DENYLIST = (
    "notte_session_info",
    "notte_session_network_.*",
    "notte_session_(duration|idle_timeout|idle_remaining|max_duration_remaining)_seconds",
    "notte_session_last_accessed_timestamp_seconds",
    "notte_session_steps",
)


def compile_patterns(patterns: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    """The patterns, compiled; `re.error` names the one that is not a regular expression."""
    return tuple(re.compile(pattern) for pattern in patterns)


@dataclass(frozen=True)
class FamilyFilter:
    """An allowlist or a denylist (at most one of the two has patterns)."""

    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, allowlist: Sequence[str] = (), denylist: Sequence[str] = ()) -> FamilyFilter:
        return cls(compile_patterns(allowlist), compile_patterns(denylist))

    def admits(self, name: str) -> bool:
        if ALWAYS_SERVED.fullmatch(name):
            return True
        if self.allow:
            return any(pattern.fullmatch(name) for pattern in self.allow)
        return not any(pattern.fullmatch(name) for pattern in self.deny)

    def select(self, families: Sequence[F]) -> tuple[F, ...]:
        return tuple(family for family in families if self.admits(family.name))


@dataclass(frozen=True)
class Served:
    """The catalogue's families `/metrics` serves, in catalogue order."""

    sessions: tuple[SessionFamily, ...] = SESSION_FAMILIES
    aggregates: tuple[AggregateFamily, ...] = AGGREGATE_FAMILIES
    account: tuple[AccountFamily, ...] = ACCOUNT_FAMILIES

    @classmethod
    def by(cls, family_filter: FamilyFilter) -> Served:
        return cls(
            family_filter.select(SESSION_FAMILIES),
            family_filter.select(AGGREGATE_FAMILIES),
            family_filter.select(ACCOUNT_FAMILIES),
        )


EVERY_FAMILY = Served()
