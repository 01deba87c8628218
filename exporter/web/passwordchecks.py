"""Uncached password checks: admitted per peer address, run in an executor, peers in turn.

bcrypt is slow on purpose (some 60 ms at cost 10), so who waits for it decides who
gets in while nothing is cached (after a restart, or a change of users). The HTTP
server asks `PasswordChecks.check` for credentials `BasicAuthVerifier.known` does not
know; credentials seen before never come here.

- At most `per_peer` checks wait or run for one peer address, and at most `suspects`
  for addresses whose last check failed; past either bound `VerifierBusy` is raised
  at once (the server answers 429).
- Waiting checks start one peer at a time, in turn, addresses that never failed
  first. So a wrong-password flood from a few addresses delays Prometheus's first
  scrape by the checks already running, and never takes every slot from it.
- At most `running` checks are in the executor at once (bcrypt itself runs one at a
  time, under the verifier's lock, as in exporter-toolkit); a slot is given back when
  the check's thread is done, not when its client gives up.
- The checks' threads run at a lower CPU priority (`NICENESS`): a flood keeps one
  core busy with bcrypt, and on a small machine the event loop serving authorised
  scrapes would otherwise wait behind it for a CPU.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor

from exporter.web.basicauth import BasicAuthVerifier, VerifierBusy

RUNNING = 2  # checks in the executor at once: one in bcrypt, one waiting on its lock
PER_PEER = 2  # checks waiting or running for one peer address
SUSPECTS = 4  # checks waiting or running for addresses whose last check failed
REMEMBERED_FAILURES = 4096  # addresses remembered as having failed, the latest kept
NICENESS = 5  # added to the checks' threads' nice value; 19 is the lowest priority

log = logging.getLogger(__name__)


def check_executor(workers: int = RUNNING, niceness: int = NICENESS) -> ThreadPoolExecutor:
    """The executor for bcrypt checks, its threads `niceness` lower in CPU priority."""
    return ThreadPoolExecutor(
        workers,
        thread_name_prefix="basic-auth",
        initializer=lower_this_threads_priority,
        initargs=(niceness,),
    )


def lower_this_threads_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by `niceness`, where the platform allows.

    On Linux a thread's nice value is its own (setpriority on its native id); where
    that is not so, or it is refused, the thread runs at the process's priority.
    """
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
    except (AttributeError, OSError) as error:
        log.debug("password checks keep the process's CPU priority: %s", error)


class PasswordChecks:
    """Fair admission of uncached checks; used from the server's event loop only."""

    def __init__(
        self,
        executor: Executor,
        *,
        running: int = RUNNING,
        per_peer: int = PER_PEER,
        suspects: int = SUSPECTS,
    ) -> None:
        self._executor = executor
        self._running_bound = running
        self._per_peer = per_peer
        self._suspects_bound = suspects
        self._running = 0
        self._pending: collections.Counter[str] = collections.Counter()  # by peer
        self._suspect_pending = 0
        self._failed: OrderedDict[str, None] = OrderedDict()
        # Turns waiting, by peer: [never failed, failed]; a peer leaves when it has none.
        self._queues: tuple[OrderedDict[str, collections.deque[asyncio.Future[None]]], ...] = (
            OrderedDict(),
            OrderedDict(),
        )

    async def check(self, verifier: BasicAuthVerifier, peer: str, header: str | None) -> bool:
        """`verifier.check(header)` in the executor, once this peer's turn comes."""
        suspect = peer in self._failed
        if self._pending[peer] >= self._per_peer or (
            suspect and self._suspect_pending >= self._suspects_bound
        ):
            raise VerifierBusy
        self._pending[peer] += 1
        self._suspect_pending += suspect
        try:
            await self._turn(peer, suspect)
            matches = await self._run(verifier, header)
        finally:
            self._pending[peer] -= 1
            if not self._pending[peer]:
                del self._pending[peer]
            self._suspect_pending -= suspect
        self._remember(peer, failed=not matches)
        return matches

    async def _turn(self, peer: str, suspect: bool) -> None:
        """Wait until a running slot is this check's; the slot is taken on return."""
        if self._running < self._running_bound and not any(self._queues):
            self._running += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues[suspect]
        queue.setdefault(peer, collections.deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._finished()  # given a turn it will not take: pass it on
            else:
                waiting = queue.get(peer)
                if waiting is not None and turn in waiting:
                    waiting.remove(turn)
                    if not waiting:
                        del queue[peer]
            raise

    async def _run(self, verifier: BasicAuthVerifier, header: str | None) -> bool:
        work = asyncio.get_running_loop().run_in_executor(self._executor, verifier.check, header)
        work.add_done_callback(self._done)
        return await asyncio.shield(work)

    def _done(self, work: asyncio.Future[bool]) -> None:
        if not work.cancelled():
            work.exception()  # retrieved here, whoever still waits for it
        self._finished()

    def _finished(self) -> None:
        """A running slot is free: give it to the next peer in turn."""
        self._running -= 1
        for queue in self._queues:
            while queue and self._running < self._running_bound:
                peer, waiting = next(iter(queue.items()))
                turn = waiting.popleft()
                if waiting:
                    queue.move_to_end(peer)
                else:
                    del queue[peer]
                if not turn.done():
                    turn.set_result(None)
                    self._running += 1

    def _remember(self, peer: str, *, failed: bool) -> None:
        if not failed:
            self._failed.pop(peer, None)
            return
        self._failed[peer] = None
        self._failed.move_to_end(peer)
        while len(self._failed) > REMEMBERED_FAILURES:
            self._failed.popitem(last=False)
