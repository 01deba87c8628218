"""Function schedules: when an AWS EventBridge cron or rate expression fires next.

Notte schedules functions with EventBridge expressions, in UTC: either
`rate(5 minutes)` or a cron of six fields, `minute hour day-of-month month
day-of-week year`, bare or wrapped as `cron(...)`. EventBridge's cron is not
Unix cron: it has a year field, `?` for "any" in one of the two day fields, and
numbers its weekdays 1-7 from Sunday (Unix: 0-6). The expression is translated
to croniter's seven-field form (`minute hour day month weekday second year`),
and croniter, a well-kept parser that knows `L`, `W` and `#`, computes the
times. An expression that does not read raises `BadSchedule`: the caller counts
it as bad data and exports no next run, it never crashes a cycle.

croniter (with dateutil, 0.9 MiB of the process) is imported when the first cron
is read: an account without cron schedules, or with functions not watched, never
loads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from types import ModuleType

MAX_SCHEDULE_CHARS: Final = 256
_RATE: Final = re.compile(r"rate\(\s*(\d{1,6})\s+(minute|hour|day)s?\s*\)", re.IGNORECASE)
_CRON: Final = re.compile(r"cron\((.*)\)", re.IGNORECASE | re.DOTALL)
_UNIT_SECONDS: Final = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
_WEEKDAY_NUMBER: Final = re.compile(r"\d+")


class BadSchedule(ValueError):
    """A schedule expression that cannot be read."""


@dataclass(frozen=True)
class Schedule:
    """A readable schedule: a fixed period (`rate`) or croniter's form of a cron."""

    kind: Literal["cron", "rate"]
    cron: str = ""  # croniter's seven fields, for a cron
    every: float = 0.0  # seconds, for a rate

    def next_after(self, after: float) -> float:
        """The first time the schedule fires strictly after `after` (Unix seconds).

        A rate fires `every` seconds after its last run; a cron at its next match.
        """
        if self.kind == "rate":
            return after + self.every
        start = datetime.fromtimestamp(after, UTC)
        cron = _croniter()
        try:
            found: datetime = cron.croniter(self.cron, start).get_next(datetime)
        except (cron.CroniterError, ValueError, OverflowError) as exc:  # e.g. a year long past
            raise BadSchedule(f"no next run: {exc}") from None
        return found.timestamp()


def parse_schedule(text: str) -> Schedule:
    """`rate(...)`, `cron(...)` or six bare cron fields; raises `BadSchedule`."""
    text = text.strip()
    if not text or len(text) > MAX_SCHEDULE_CHARS:
        raise BadSchedule("empty or too long")
    rate = _RATE.fullmatch(text)
    if rate:
        count = int(rate.group(1))
        if count < 1:
            raise BadSchedule("a rate must be at least 1")
        return Schedule("rate", every=count * _UNIT_SECONDS[rate.group(2).lower()])
    wrapped = _CRON.fullmatch(text)
    fields = (wrapped.group(1) if wrapped else text).split()
    if len(fields) != 6:
        raise BadSchedule(f"a cron needs 6 fields (EventBridge), not {len(fields)}")
    minute, hour, day, month, weekday, year = fields
    cron = " ".join((minute, hour, _any(day), month, _weekdays(_any(weekday)), "0", _any(year)))
    if not _croniter().croniter.is_valid(cron):
        raise BadSchedule("not a cron expression croniter reads")
    return Schedule("cron", cron=cron)


def _croniter() -> ModuleType:
    import croniter  # here, not at the top: see the module's docstring

    return croniter


def _any(field: str) -> str:
    return "*" if field == "?" else field


def _weekdays(field: str) -> str:
    """EventBridge weekdays (1-7, Sunday first; `6L`, `2#1`) as croniter's (0-6; `L5`, `1#1`).

    Only the weekday numbers move: a step after `/` and the n-th after `#` stay.
    """
    parts = []
    for part in field.split(","):
        body, slash, step = part.partition("/")
        body, hash_, nth = body.partition("#")
        last = body.upper().endswith("L") and body.upper() != "L"
        if last:
            body = body[:-1]
        body = _WEEKDAY_NUMBER.sub(lambda m: str(int(m.group()) - 1), body)
        if last:
            body = "L" + body
        parts.append(body + hash_ + nth + slash + step)
    return ",".join(parts)
