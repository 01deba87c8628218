"""Requests that outlive the poll cycle that started them.

A request is never cancelled because its cycle ran out of time: the API would
serve it anyway (work thrown away) and, seen from the API, the abandoned one
would still be open beside the next cycle's, past the concurrency cap. It runs
to its answer (or its own deadline), and whichever cycle is running then takes
the answer and applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class InFlight(Generic[T]):
    """Tasks by key; each one's outcome (its result or the exception it raised) is kept
    until `take` hands it over."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T | Exception]] = {}
        self._arrived: list[tuple[str, T | Exception]] = []

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def start(self, key: str, work: Coroutine[Any, Any, T]) -> None:
        self._tasks[key] = asyncio.ensure_future(self._run(key, work))

    async def _run(self, key: str, work: Coroutine[Any, Any, T]) -> T | Exception:
        """The outcome is handed over the moment `work` ends, before anything else runs:
        whoever its freed request slot wakes sees it (a 401 stops the next request)."""
        outcome: T | Exception
        try:
            outcome = await work
        except Exception as exc:
            outcome = exc
        finally:
            del self._tasks[key]
        self._arrived.append((key, outcome))
        return outcome

    def take(self) -> list[tuple[str, T | Exception]]:
        """The outcomes that arrived since the last call, in arrival order."""
        arrived, self._arrived = self._arrived, []
        return arrived

    async def wait(
        self, *, until: float, clock: Callable[[], float], key: str | None = None
    ) -> None:
        """Wait until every task (or the one with `key`) is done, or `until` on `clock`."""
        if key is None:
            tasks = list(self._tasks.values())
        else:
            tasks = [self._tasks[key]] if key in self._tasks else []
        timeout = until - clock()
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)

    async def cancel(self, grace: float) -> None:
        """Cancel every task (at shutdown) and give them `grace` seconds to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(tasks, timeout=grace)
