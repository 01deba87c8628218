"""Scale benchmark: notte-exporter against a plain prometheus-client exporter, at N sessions.

One run, side by side: the simulator (in this process, not ticking) holds N
active sessions and a few ended ones that both exporters are given as
configured IDs. Ours (`python -m exporter`) and `bench/reference_exporter.py`
(module-level gauges, one GET per session, rendering at every scrape) run as
subprocesses, each against its own simulator built from the same seed, so
each one's API requests are counted apart and their RSS and CPU are their own.

Phases (one after the other, so that no measurement competes with another
exporter's poll cycle for the machine's cores):

1. ours (long poll interval): time to ready, first-cycle requests;
2. reference: time until `/metrics` shows every session, first-cycle requests;
3. `/metrics` latency, ours / reference / ours' body as a static file
   (`python -m http.server`), interleaved scrape by scrape, plain and gzip;
4. reference: CPU of one more poll cycle (triggered by SIGUSR1, no scrapes);
5. ours with a short poll interval (polling continuously): CPU per cycle (no
   scrapes), requests per cycle with sessions ended between cycles, and scrape
   latency with and without 200 ms of added API latency;
6. in-process: one poll cycle plus one fast render, against prometheus-client's
   `generate_latest` rendering the same families through the Collector; the
   cycle's bookkeeping (plan, apply, snapshot; no HTTP) with N configured IDs
   of which half were deferred, against N discovered ones; and the requests per
   cycle of three replicas sharing N sessions;
7. `promtool check metrics` on ours' body.

    python bench/scale.py --sessions 1000
    python bench/scale.py --sessions 10000
    python bench/scale.py --sweep-figures   # the sweep's cost and a slow API, ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr

from bench.common import LineCollector
from exporter.metrics.metricfilter import LEAN_DENYLIST, FamilyFilter, Served
from exporter.metrics.render import render_session_families
from exporter.metrics.selfmetrics import create_self_metrics
from exporter.notte.apikey import ApiKeySource
from exporter.notte.client import NotteClient
from exporter.notte.model import parse_session
from exporter.polling.configured import ConfiguredIds
from exporter.polling.poller import Poller, PollOptions
from exporter.polling.snapshot import SnapshotStore, build_snapshot
from exporter.polling.tracker import CycleResult, TrackerState, apply_cycle, plan_fetches
from exporter.settings import Settings
from exporter.simulator import Fault, RequestRecord, SimulatedNotte, SimulatorServer
from exporter.simulator.world import iso
from tests.oracle import render_with_prometheus_client

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-scale-bench-key"
CONFIGURED = 3  # ended sessions given to both exporters as configured IDs
ENDED_BETWEEN = 5  # sessions ended between two cycles, to show the "+ ended" term
SWEEP_STEADY_MAX = 2  # a steady sweep: 1 page, or 2 when oldest first or page 1 spans < the slack
QUICK_PER_CYCLE = 5  # sessions that start and end between two cycles (--sweep-figures)
SPREAD_SECONDS = 1800.0  # --sweep-figures: the active sessions were created over this long
CLK_TCK = os.sysconf("SC_CLK_TCK")
SESSION_LINE = re.compile(rb'^notte_session_max_duration_seconds\{session_id="([^"]*)"\}', re.M)
POLLS_LINE = re.compile(
    rb'^notte_exporter_polls_total\{result="(?:success|failure)"\} (\S+)$', re.M
)
MIB = 1024 * 1024

# Targets at N=10,000 (README of the benchmark task).
LATENCY_SPEEDUP = 20.0
STATIC_RATIO = 3.0
HANG_CHANGE = 0.20
CYCLE_CPU_RATIO = 1.5
DEFERRED_PLANNING_RATIO = 2.0  # configured IDs, half deferred, against discovered ones
SHARDS = 3
RSS_MIB = 200.0


def note(message: str) -> None:
    """Progress, on stderr (the report goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_mib(pid: int, name: str) -> float:
    """A /proc/<pid>/status field (VmRSS, VmHWM) in MiB."""
    match = re.search(rf"^{name}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def session_ids_in(body: bytes) -> set[bytes]:
    return set(SESSION_LINE.findall(body))


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, step: float = 0.02
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


class Child:
    """A subprocess whose stderr is read as it comes (so the pipe never fills)."""

    def __init__(self, name: str, argv: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
        env["PYTHONPATH"] = str(ROOT)
        self.name = name
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._stderr = LineCollector(self.process.stderr)
        self.lines = self._stderr.lines

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit(f"{self.name} exited early:\n" + "".join(self.lines[-30:]))

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._stderr.join(5)


class Scraper:
    """GETs one URL over a kept-alive connection; times the request until the body is read."""

    def __init__(self, port: int, path: str = "/metrics", timeout: float = 300) -> None:
        self.port, self.path, self.timeout = port, path, timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, *, gzip: bool = False) -> tuple[float, int, bytes]:
        """(seconds, status, raw body as sent, still compressed when gzip).

        A kept-alive connection the server closed while idle (ours closes them
        after 10 s) is replaced and the request sent again, timed from scratch.
        """
        reused = self._conn is not None
        try:
            return self._get(gzip)
        except (ConnectionError, http.client.RemoteDisconnected):
            if not reused:
                raise
            return self._get(gzip)

    def _get(self, gzip: bool) -> tuple[float, int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        started = time.perf_counter()
        try:
            self._conn.request("GET", self.path, headers=headers)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            raise
        elapsed = time.perf_counter() - started
        if response.will_close:
            self._conn.close()
            self._conn = None
        return elapsed, response.status, body

    def status(self) -> int:
        try:
            return self.get()[1]
        except (OSError, http.client.HTTPException):
            return 0


@dataclass
class Latencies:
    values: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.values)

    @property
    def p99(self) -> float:
        return percentile(self.values, 0.99)

    def text(self) -> str:
        return (
            f"p50 {self.p50 * 1000:8.2f} ms  p99 {self.p99 * 1000:8.2f} ms  (n={len(self.values)})"
        )


class CycleWatch:
    """Poll cycles seen in a simulator's request log: each starts with active list page 1."""

    def __init__(self, world: SimulatedNotte) -> None:
        self.world = world

    def starts(self) -> int:
        return sum(1 for r in self.world.request_log() if starts_cycle(r))

    def wait_next_start(self, timeout: float) -> int:
        seen = self.starts()
        return int(wait_for(lambda: self.starts() > seen and self.starts(), timeout, "a cycle"))

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 120) -> None:
        """Until no request came for `quiet` seconds (the cycle's requests are done)."""
        deadline = time.monotonic() + timeout
        last, since = self.world.requests_total(), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise SystemExit("the API never went quiet")
            time.sleep(0.02)
            now = self.world.requests_total()
            if now != last:
                last, since = now, time.monotonic()

    def segments(self) -> list[Counter[str]]:
        """Requests by kind for each cycle in the log (split at active list page 1)."""
        cycles: list[Counter[str]] = []
        for record in self.world.request_log():
            if starts_cycle(record):
                cycles.append(Counter())
            if cycles:
                cycles[-1][request_kind(record)] += 1
        return cycles


def starts_cycle(record: RequestRecord) -> bool:
    """Page 1 of the active list: the first request of a cycle (the sweep comes after)."""
    return request_kind(record) == "list_sessions" and record.query.get("page") == "1"


def request_kind(record: RequestRecord) -> str:
    """`list_sessions` (the active list), `sweep` (`only_active=false`) or `get_session`."""
    if record.endpoint == "list_sessions" and record.query.get("only_active") == "false":
        return "sweep"
    return record.endpoint


def by_endpoint(world: SimulatedNotte) -> Counter[str]:
    return Counter(request_kind(r) for r in world.request_log())


def requests_text(counts: Counter[str]) -> str:
    total = counts["list_sessions"] + counts["get_session"] + counts["sweep"]
    return (
        f"{total} (list {counts['list_sessions']}, sweep {counts['sweep']}, "
        f"get {counts['get_session']})"
    )


def start_ours(
    url: str, port: int, poll_interval: float, max_sessions: int, configured: list[str], cwd: Path
) -> Child:
    argv = [
        sys.executable, "-m", "exporter",
        "--api-url", url, "--api-key", API_KEY,
        "--listen-address", f"127.0.0.1:{port}",
        "--poll-interval", str(poll_interval),
        "--max-sessions", str(max_sessions),
    ]  # fmt: skip
    for session_id in configured:
        argv += ["--session-id", session_id]
    return Child("ours", argv, cwd)


def start_reference(
    url: str, port: int, concurrency: int, configured: list[str], cwd: Path
) -> Child:
    argv = [
        sys.executable, str(ROOT / "bench" / "reference_exporter.py"),
        "--api-url", url, "--api-key", API_KEY,
        "--listen-address", f"127.0.0.1:{port}",
        "--poll-interval", "3600",
        "--concurrency", str(concurrency),
    ]  # fmt: skip
    for session_id in configured:
        argv += ["--session-id", session_id]
    return Child("reference", argv, cwd)


def cycles_done(child: Child) -> int:
    return sum(1 for line in list(child.lines) if " done: " in line and "cycle " in line)


def make_world(seed: int, sessions: int) -> SimulatedNotte:
    world = SimulatedNotte(seed=seed, target_active=sessions)
    world.populate(active=sessions, ended=CONFIGURED)
    return world


def polls_in(body: bytes) -> float:
    """Poll cycles so far (success + failure), from the self part at the end of the body."""
    return sum(float(value) for value in POLLS_LINE.findall(body[-65536:]))


@dataclass
class Scrapes:
    """Scrape latencies, all of them, and split by whether a new snapshot came before."""

    all: Latencies = field(default_factory=Latencies)
    cached: Latencies = field(default_factory=Latencies)
    fresh: Latencies = field(default_factory=Latencies)


def scrape_for(scraper: Scraper, seconds: float, pause: float, minimum: int) -> Scrapes:
    """Scrape repeatedly for `seconds` (and at least `minimum` times).

    A scrape whose poll count differs from the previous one's is the first after a
    new snapshot: it rendered the session part, the others were served from cache.
    """
    found = Scrapes()
    previous = polls_in(scraper.get()[2])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(found.all.values) < minimum:
        elapsed, status, body = scraper.get()
        if status == 200:
            polls = polls_in(body)
            found.all.values.append(elapsed)
            (found.fresh if polls != previous else found.cached).values.append(elapsed)
            previous = polls
        del body  # freed before the next read, as in the interleaved scrapes
        time.sleep(pause)
    return found


async def in_process_cycles(
    url: str, configured: list[str], args: argparse.Namespace, repeats: int
) -> dict[str, list[float]]:
    """Poll cycles on this thread (thread CPU), then the two renderers on the same snapshot."""
    settings = bench_settings(
        url, page_size=args.page_size, max_sessions=args.sessions + 100, session_ids=configured
    )
    poller, client, store = in_process_poller(settings)
    found: dict[str, list[float]] = {
        "cycle": [],
        "render": [],
        "lean": [],
        "gzip": [],
        "collector": [],
    }
    lean = Served.by(FamilyFilter.of(denylist=LEAN_DENYLIST))
    try:
        for _ in range(repeats):
            started = time.thread_time()
            if not await poller.run_cycle():
                raise SystemExit("the in-process poll cycle failed")
            found["cycle"].append(time.thread_time() - started)
            started = time.thread_time()
            fast = render_session_families(store.current, False)
            found["render"].append(time.thread_time() - started)
            started = time.thread_time()
            trimmed = render_session_families(store.current, False, lean)
            found["lean"].append(time.thread_time() - started)
            started = time.thread_time()  # what the exposition does once for gzip scrapes
            compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            compressor.compress(fast)
            compressor.flush(zlib.Z_SYNC_FLUSH)
            found["gzip"].append(time.thread_time() - started)
        for _ in range(repeats):
            started = time.thread_time()
            slow = render_with_prometheus_client(store.current, False)
            found["collector"].append(time.thread_time() - started)
        found["identical"] = [float(fast == slow)]
        found["sessions"] = [float(len(store.current.sessions))]
        found["series"] = [float(series_lines(fast)), float(series_lines(trimmed))]
    finally:
        await client.aclose()
    return found


def series_lines(body: bytes) -> int:
    """Series (sample lines) in an exposition."""
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def bench_settings(url: str, **values: object) -> Settings:
    """Settings for an in-process poller: the defaults, but for these values."""
    values = {"api_url": url, "api_key": API_KEY, "poll_interval": 600, **values}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def in_process_poller(settings: Settings) -> tuple[Poller, NotteClient, SnapshotStore]:
    metrics = create_self_metrics(process_metrics=False)
    client = NotteClient(
        base_url=settings.api_url,
        api_key=ApiKeySource(key=SecretStr(API_KEY)),
        request_timeout=settings.request_timeout,
        max_concurrency=settings.max_concurrency,
        metrics=metrics,
    )
    store = SnapshotStore()
    poller = Poller(
        options=PollOptions.from_settings(settings),
        client=client,
        configured=ConfiguredIds(settings.session_ids),
        metrics=metrics,
        store=store,
    )
    return poller, client, store


def bookkeeping_cpu(n: int, seed: int, repeats: int = 5) -> dict[str, float]:
    """Thread CPU of a cycle's bookkeeping (plan_fetches, apply_cycle, build_snapshot),
    median of `repeats`: N discovered sessions, all listed; and N configured IDs of
    which the last cycle answered only half (the rest deferred, oldest data first)."""
    world = make_world(seed, n)
    sessions = [parse_session(world.session(i)) for i in world.session_ids("active")][:n]
    ids = [s.session_id for s in sessions]
    now = time.time()

    def cycle(state: TrackerState, result: CycleResult) -> TrackerState:
        return apply_cycle(
            state, result, now=now, process_start=now, retention=900, max_sessions=2 * n
        )

    def timed(work: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            started = time.thread_time()
            work()
            times.append(time.thread_time() - started)
        return statistics.median(times)

    by_id = {s.session_id: s for s in sessions}
    listed_ids = frozenset(ids)
    discovered = cycle(TrackerState(), CycleResult((), sessions, {}))
    first_half = {s.session_id: s for s in sessions[: n // 2]}
    configured = cycle(TrackerState(), CycleResult(ids, None, first_half))

    def discovered_cycle() -> None:
        plan_fetches(discovered, [], listed_ids)
        build_snapshot(cycle(discovered, CycleResult((), sessions, {})), now, 1)

    def configured_cycle() -> None:
        planned = plan_fetches(configured, ids, None)  # the deferred half first
        fetched = {i: by_id[i] for i in planned[: n // 2]}
        build_snapshot(cycle(configured, CycleResult(ids, None, fetched)), now, 1)

    return {"discovered": timed(discovered_cycle), "configured": timed(configured_cycle)}


async def shard_economy(n: int, page_size: int, seed: int) -> list[tuple[Counter[str], int]]:
    """SHARDS in-process replicas sharing N active sessions: each one's requests in its
    second (steady) cycle, and how many sessions it exports."""
    world = make_world(seed, n)
    found: list[tuple[Counter[str], int]] = []
    with SimulatorServer(world, api_key=API_KEY) as api:
        for shard in range(SHARDS):
            settings = bench_settings(
                api.url, page_size=page_size, shard=shard, total_shards=SHARDS
            )
            poller, client, store = in_process_poller(settings)
            try:
                for _ in range(2):
                    world.reset_requests()
                    if not await poller.run_cycle():
                        raise SystemExit(f"a poll cycle of shard {shard} failed")
                found.append((by_endpoint(world), len(store.current.sessions)))
            finally:
                await client.aclose()
    return found


@dataclass
class SweepEconomy:
    """API requests per cycle with the sweep: bearings, quiet cycles, cycles with churn."""

    order: str
    sessions: int
    cycles: list[Counter[str]]
    quiet: int  # how many cycles after the first had nothing new
    caught: int
    quick: int


async def sweep_economy(n: int, order: str, page_size: int, seed: int) -> SweepEconomy:
    """N active sessions listed in `order`; 2 quiet cycles, then QUICK_PER_CYCLE sessions
    that start and end between each two of 8 cycles."""
    now = [time.time()]
    world = SimulatedNotte(seed=seed, clock=lambda: now[0], target_active=n, list_order=order)
    world.populate(active=n)
    # Created over the last half hour (the longest max duration), as N concurrent
    # sessions in a steady state are: N/1800 a second, not all within minutes.
    rng = random.Random(seed)
    for session_id in world.session_ids():
        world.update_session(session_id, created_at=iso(now[0] - rng.uniform(0, SPREAD_SECONDS)))
    quiet, churn = 2, 8
    with SimulatorServer(world, api_key=API_KEY) as api:
        settings = bench_settings(api.url, page_size=page_size, max_sessions=2 * n)
        poller, client, store = in_process_poller(settings)
        cycles: list[Counter[str]] = []
        try:
            for index in range(1 + quiet + churn):
                if index > quiet:
                    for _ in range(QUICK_PER_CYCLE):
                        session_id = world.add_session()["session_id"]
                        now[0] += 1
                        world.end_session(session_id, "error")
                world.reset_requests()
                if not await poller.run_cycle():
                    raise SystemExit(f"a poll cycle failed (sweep, {order} first, N={n})")
                cycles.append(by_endpoint(world))
                now[0] += 15
        finally:
            await client.aclose()
        caught = store.current.by_status.get(("error",), 0)  # counts are keyed by label tuple
    return SweepEconomy(order, n, cycles, quiet, caught, churn * QUICK_PER_CYCLE)


@dataclass
class SlowRefresh:
    """How many cycles a slow API needs to refresh every configured session once."""

    ids: int
    latency: float
    interval: float
    concurrency: int
    refreshed: list[int]  # sessions refreshed in each cycle
    succeeded: list[bool]
    seconds: float


async def slow_refresh(ids: int, latency: float, interval: float, seed: int) -> SlowRefresh:
    """`ids` configured sessions behind an API answering each GET after `latency` seconds.

    Before each cycle every session's byte count is set to the cycle's number, so
    the snapshot tells which sessions that cycle refreshed.
    """
    world = SimulatedNotte(seed=seed)
    configured = [f"cfg{index:05d}" for index in range(ids)]
    for session_id in configured:
        world.add_session(session_id)
    world.inject(Fault(endpoint="get_session", hang=latency))
    started = time.monotonic()
    with SimulatorServer(world, api_key=API_KEY) as api:
        settings = bench_settings(
            api.url, poll_interval=interval, discovery=False, session_ids=configured
        )
        poller, client, store = in_process_poller(settings)
        seen: set[str] = set()
        refreshed: list[int] = []
        succeeded: list[bool] = []
        try:
            while len(seen) < ids and len(refreshed) < 10:
                mark = len(refreshed) + 1
                for session_id in configured:
                    world.update_session(session_id, network_request_bytes=mark)
                succeeded.append(await poller.run_cycle())
                now = {s.session_id for s in store.current.sessions if s.request_bytes == mark}
                refreshed.append(len(now))
                seen |= now
        finally:
            await client.aclose()
    return SlowRefresh(
        ids,
        latency,
        interval,
        settings.max_concurrency,
        refreshed,
        succeeded,
        time.monotonic() - started,
    )


def sweep_figures(args: argparse.Namespace) -> int:
    """`--sweep-figures`: the sweep's cost per cycle, and a slow API's refresh, printed."""
    page_size = args.page_size
    ok = True
    print(f"Sweep: API requests per cycle (page_size {page_size}; N active sessions created")
    print(f"over {SPREAD_SECONDS:g} s; {QUICK_PER_CYCLE} sessions starting and ending between")
    print("each two churn cycles; bound ceil(N/page_size) + 1)")
    for n in (1000, 10000):
        for order in ("newest", "oldest"):
            note(f"sweep economy: N={n}, {order} first")
            found = asyncio.run(sweep_economy(n, order, page_size, args.seed))
            bound = math.ceil(n / page_size) + 1
            steady = found.cycles[1:]
            totals = [sum(c.values()) for c in steady]
            sweeps = [c["sweep"] for c in steady]
            quiet, churn = totals[: found.quiet], totals[found.quiet :]
            ok = ok and max(quiet) <= bound and found.caught == found.quick
            print(
                f"  N={n:>5} {order:>6} first: first cycle {requests_text(found.cycles[0])}; "
                f"quiet {max(quiet)}; churn max {max(churn)}, mean {statistics.mean(churn):.2f} "
                f"(sweep requests {min(sweeps)}-{max(sweeps)}); bound {bound} "
                f"({'ok' if max(quiet) <= bound else 'OVER'} when quiet); "
                f"short sessions caught {found.caught}/{found.quick}"
            )
    note("slow API: 1,000 configured IDs, 200 ms a request")
    slow = asyncio.run(slow_refresh(1000, 0.2, 15.0, args.seed))
    cycles = len(slow.refreshed)
    print(
        f"Slow API ({slow.latency * 1000:.0f} ms a request, {slow.ids} configured IDs, "
        f"max_concurrency {slow.concurrency}, poll interval {slow.interval:g} s): every session "
        f"refreshed once after {cycles} cycles; refreshed per cycle {slow.refreshed}; "
        f"cycles succeeded {slow.succeeded}; {slow.seconds:.0f} s"
    )
    return 0 if ok and all(slow.succeeded) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000, help="active sessions (N)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--page-size", type=int, default=100, help="ours' page size (default)")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes per target (>= 20)")
    parser.add_argument(
        "--cycle-interval",
        type=float,
        default=None,
        help="ours' poll interval when polling continuously (default max(2, N/2500) s)",
    )
    parser.add_argument("--ref-concurrency", type=int, default=8, help="reference GETs in flight")
    parser.add_argument("--hang", type=float, default=0.2, help="added API latency, seconds")
    parser.add_argument(
        "--sweep-figures",
        action="store_true",
        help="only the sweep's requests per cycle and a slow API's refresh, in process",
    )
    args = parser.parse_args(argv)
    if args.sweep_figures:
        return sweep_figures(args)
    n = args.sessions
    interval = args.cycle_interval or max(2.0, n / 2500)
    page_size = args.page_size
    started_run = time.monotonic()

    world_ours, world_ref = make_world(args.seed, n), make_world(args.seed, n)
    active = set(world_ours.session_ids("active"))
    configured = [i for i in world_ours.session_ids() if i not in active]
    assert configured == [i for i in world_ref.session_ids() if i not in active]
    api_ours = SimulatorServer(world_ours, api_key=API_KEY)
    api_ref = SimulatorServer(world_ref, api_key=API_KEY)
    api_ours.start()
    api_ref.start()
    workdir = Path(tempfile.mkdtemp(prefix="notte-scale-"))
    children: list[Child] = []
    report: dict[str, object] = {}
    try:
        # -- 1. ours, long poll interval -------------------------------------------------
        note(f"N={n}: starting ours")
        ours_port = free_port()
        ours = start_ours(api_ours.url, ours_port, 600, n + 100, configured, workdir)
        children.append(ours)
        ready = Scraper(ours_port, "/readyz")
        wait_for(lambda: ours.alive() or ready.status() == 200, 300, "ours to be ready")
        ours_ready = time.monotonic() - ours.started
        ours_scraper = Scraper(ours_port)
        first_plain, _, body = ours_scraper.get()
        first_gzip, _, _ = ours_scraper.get(gzip=True)
        ours_ids = len(session_ids_in(body))
        ours_first_cycle = by_endpoint(world_ours)
        note(f"ours ready in {ours_ready:.2f} s, {ours_ids} sessions on /metrics")

        # -- 2. reference ------------------------------------------------------------------
        note("starting the reference exporter")
        ref_port = free_port()
        ref = start_reference(api_ref.url, ref_port, args.ref_concurrency, configured, workdir)
        children.append(ref)
        wait_for(lambda: ref.alive() or cycles_done(ref) >= 1, 1800, "the reference's cycle", 0.05)
        ref_scraper = Scraper(ref_port)
        scrape_sent = time.monotonic()
        _, _, ref_body = ref_scraper.get()
        ref_complete = scrape_sent - ref.started
        ref_ids = len(session_ids_in(ref_body))
        ref_first_cycle = by_endpoint(world_ref)
        note(f"reference complete in {ref_complete:.2f} s, {ref_ids} sessions on /metrics")

        # -- 3. latency, interleaved -----------------------------------------------------
        static_dir = workdir / "static"
        static_dir.mkdir()
        _, _, ours_body = ours_scraper.get()
        (static_dir / "metrics").write_bytes(ours_body)
        static_port = free_port()
        static = Child(
            "static",
            [
                sys.executable, "-m", "http.server", str(static_port),
                "--bind", "127.0.0.1", "--directory", str(static_dir),
            ],
            workdir,
        )  # fmt: skip
        children.append(static)
        static_scraper = Scraper(static_port)
        wait_for(lambda: static.alive() or static_scraper.status() == 200, 30, "http.server")
        targets = {
            ("ours", False): ours_scraper,
            ("ours", True): ours_scraper,
            ("reference", False): ref_scraper,
            ("reference", True): ref_scraper,
            ("static", False): static_scraper,
        }
        latency = {key: Latencies() for key in targets}
        sizes: dict[tuple[str, bool], int] = {}
        note(f"scraping each target {args.scrapes} times, interleaved")
        for _ in range(args.scrapes):
            for (name, gzip), scraper in targets.items():
                elapsed, status, raw = scraper.get(gzip=gzip)
                if status != 200:
                    raise SystemExit(f"{name} answered {status}")
                latency[(name, gzip)].values.append(elapsed)
                sizes[(name, gzip)] = len(raw)
                # Freed before the next read: held, it made every read of ours' body (the one
                # after the static file's) fault in a fresh 14 MiB, some 3,500 page faults in
                # this process, and the static file's read reuse the freed pages: 1.4x-1.7x
                # of the client's own making.
                del raw
        rss = {"ours": vm_mib(ours.pid, "VmHWM"), "reference": vm_mib(ref.pid, "VmHWM")}
        static.stop()

        # -- 4. reference: one more cycle, no scrapes -------------------------------------
        note("reference: timing one more poll cycle")
        before = by_endpoint(world_ref)
        cpu_start = ref.cpu()
        cycle_started = time.monotonic()
        ref.process.send_signal(signal.SIGUSR1)
        wait_for(lambda: ref.alive() or cycles_done(ref) >= 2, 1800, "the reference's cycle", 0.05)
        ref_cycle_wall = time.monotonic() - cycle_started
        time.sleep(0.2)
        ref_cycle_cpu = ref.cpu() - cpu_start
        ref_cycle = by_endpoint(world_ref) - before
        rss["reference"] = vm_mib(ref.pid, "VmHWM")
        rss["ours"] = vm_mib(ours.pid, "VmHWM")
        ref.stop()
        ours.stop()

        # -- 5. ours, polling continuously -------------------------------------------------
        note(f"ours polling every {interval:g} s: CPU per cycle, API economy, hang")
        world_ours.reset_requests()
        watch = CycleWatch(world_ours)
        cont_port = free_port()
        cont = start_ours(api_ours.url, cont_port, interval, n + 100, configured, workdir)
        children.append(cont)
        cont_ready = Scraper(cont_port, "/readyz")
        wait_for(lambda: cont.alive() or cont_ready.status() == 200, 300, "ours to be ready")
        watch.wait_next_start(interval * 3)  # cycle 2 has started: measure from here
        cpu_start, cycles_start = cont.cpu(), watch.starts()
        measured_cycles = 3
        for _ in range(measured_cycles):
            watch.wait_next_start(interval * 3)
        ours_cycle_cpu = (cont.cpu() - cpu_start) / (watch.starts() - cycles_start)
        # End some sessions between two cycles: the next cycle asks for exactly those.
        watch.wait_quiet()
        ending = random.Random(args.seed).sample(
            sorted(world_ours.session_ids("active")), ENDED_BETWEEN
        )
        for session_id in ending:
            world_ours.end_session(session_id, "closed")
        ended_at_cycle = watch.starts() + 1  # 1-based index of the cycle that sees them
        watch.wait_next_start(interval * 3)
        watch.wait_quiet()
        economy = watch.segments()[:ended_at_cycle]

        scraper = Scraper(cont_port)
        span = max(4 * interval, 8.0)
        note(f"scraping {span:g} s without, then with {args.hang * 1000:.0f} ms API latency")
        without = scrape_for(scraper, span, 0.05, max(args.scrapes, 20))
        world_ours.inject(Fault(hang=args.hang))
        watch.wait_next_start(interval * 3)
        with_hang = scrape_for(scraper, span, 0.05, max(args.scrapes, 20))
        world_ours.clear_faults()
        _, _, cont_body = scraper.get()
        rss["ours (continuous)"] = vm_mib(cont.pid, "VmHWM")
        cont.stop()
        polls = {
            result: re.search(
                rf'^notte_exporter_polls_total\{{result="{result}"\}} (\S+)'.encode(),
                cont_body,
                re.M,
            )
            for result in ("success", "failure")
        }

        # -- 6. in-process: cycle + render vs generate_latest ----------------------------
        note("in-process: poll cycles and renders on this thread")
        inproc = asyncio.run(in_process_cycles(api_ours.url, configured, args, 3))
        note("in-process: bookkeeping with configured IDs, and three shards' requests")
        bookkeeping = bookkeeping_cpu(n, args.seed)
        shards = asyncio.run(shard_economy(n, page_size, args.seed))

        # -- 7. promtool ---------------------------------------------------------------
        promtool = shutil.which("promtool")
        if promtool:
            checked = subprocess.run(
                [promtool, "check", "metrics"], input=ours_body, capture_output=True, check=False
            )
            promtool_rc = checked.returncode
            promtool_out = (checked.stdout + checked.stderr).decode(errors="replace").strip()
        else:
            promtool_rc, promtool_out = -1, "promtool not found on PATH"
        report["done"] = True
    finally:
        for child in children:
            child.stop()
        api_ours.stop()
        api_ref.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    # -- the report ---------------------------------------------------------------------
    ceil_pages = math.ceil(n / page_size)
    out: list[str] = []
    say = out.append
    say(
        f"notte-exporter scale benchmark: N={n} active sessions (+{CONFIGURED} configured "
        f"ended), page_size {page_size}, seed {args.seed}, {os.cpu_count()} CPUs, "
        f"run took {time.monotonic() - started_run:.0f} s"
    )
    say(
        f"reference: list then one GET per session, {args.ref_concurrency} in flight, "
        "default registry rendered at every scrape"
    )
    say("")
    width = 40
    say(f"{'':{width}}{'ours':>30}{'reference':>30}{'ours/ref':>10}")

    def row(label: str, ours_value: float, ref_value: float, fmt: str) -> None:
        ratio = ours_value / ref_value if ref_value else float("nan")
        say(f"{label:{width}}{fmt.format(ours_value):>30}{fmt.format(ref_value):>30}{ratio:>10.3f}")

    row("time to first complete snapshot (s)", ours_ready, ref_complete, "{:.2f}")
    say(f"{'  sessions on /metrics':{width}}{ours_ids:>30}{ref_ids:>30}")
    ours_steady = economy[-2] if len(economy) >= 2 else Counter()
    row(
        "API requests per cycle (steady)",
        ours_steady["list_sessions"] + ours_steady["get_session"] + ours_steady["sweep"],
        ref_cycle["list_sessions"] + ref_cycle["get_session"],
        "{:.0f}",
    )
    for label, ours_counts, ref_counts in (
        ("  steady, by endpoint", ours_steady, ref_cycle),
        ("  first cycle", ours_first_cycle, ref_first_cycle),
    ):
        say(f"{label:{width}}ours {requests_text(ours_counts)}; ref {requests_text(ref_counts)}")
    row("CPU seconds per poll cycle", ours_cycle_cpu, ref_cycle_cpu, "{:.3f}")
    ours_note = f"  (ours: mean of {measured_cycles} cycles every {interval:g} s;"
    say(f"{ours_note:{width}}{f'reference: wall {ref_cycle_wall:.1f} s)':>60}")
    for gzip in (False, True):
        kind = "gzip" if gzip else "plain"
        ours_lat, ref_lat = latency[("ours", gzip)], latency[("reference", gzip)]
        row(f"/metrics p50 latency, {kind} (ms)", ours_lat.p50 * 1000, ref_lat.p50 * 1000, "{:.2f}")
        row(f"/metrics p99 latency, {kind} (ms)", ours_lat.p99 * 1000, ref_lat.p99 * 1000, "{:.2f}")
    for gzip in (False, True):
        kind = "gzip" if gzip else "plain"
        row(
            f"body size, {kind} (KiB)",
            sizes[("ours", gzip)] / 1024,
            sizes[("reference", gzip)] / 1024,
            "{:.0f}",
        )
    row("peak RSS, VmHWM (MiB)", rss["ours"], rss["reference"], "{:.1f}")
    say(f"{'  ours polling continuously':{width}}{rss['ours (continuous)']:>30.1f}")
    say(
        f"{'  ours: first scrape after a snapshot':{width}}"
        f"{f'plain {first_plain * 1000:.1f} ms, gzip {first_gzip * 1000:.1f} ms':>60}"
    )

    say("")
    static_lat = latency[("static", False)]
    ours_plain = latency[("ours", False)]
    static_ratio = ours_plain.p50 / static_lat.p50
    say("Same body as a static file (python -m http.server):")
    say(f"  static  {static_lat.text()}")
    say(f"  ours    {ours_plain.text()}")
    say(f"  ours/static (p50): {static_ratio:.2f}")

    say("")
    change = with_hang.all.p50 / without.all.p50 - 1
    cached_change = with_hang.cached.p50 / without.cached.p50 - 1
    say(
        f"Scrapes while ours polls every {interval:g} s, without and with {args.hang * 1000:.0f} ms"
    )
    say("added to every API request:")
    for label, found in (("without", without), ("with", with_hang)):
        say(f"  {label:<8} {found.all.text()}")
        say(f"    cached          {found.cached.text()}")
        if found.fresh.values:
            say(f"    new snapshot    {found.fresh.text()}")
    say(
        f"  change of p50: {change * 100:+.1f} % "
        f"(cached scrapes only: {cached_change * 100:+.1f} %)"
    )
    successes, failures = (
        float(m.group(1)) if m else float("nan") for m in (polls["success"], polls["failure"])
    )
    say(f"  polls_total at the end: success {successes:.0f}, failure {failures:.0f}")

    say("")
    say(f"API economy (ours, every {interval:g} s; bound = ceil(active/page_size) + ended")
    say("since last cycle + configured not listed + the sweep: its bearings in cycle 1, then")
    say(f"{SWEEP_STEADY_MAX}, the most it costs when oldest first):")
    economy_ok = True
    for index, counts in enumerate(economy, start=1):
        ended_now = ENDED_BETWEEN if index == ended_at_cycle else 0
        active_now = n - (ENDED_BETWEEN if index >= ended_at_cycle else 0)
        configured_now = CONFIGURED if index == 1 else 0
        # The sweep: its first cycle takes its bearings (a few pages), then one or two.
        sweep_now = counts["sweep"] if index == 1 else SWEEP_STEADY_MAX
        bound = math.ceil(active_now / page_size) + ended_now + configured_now + sweep_now
        total = counts["list_sessions"] + counts["get_session"] + counts["sweep"]
        economy_ok = economy_ok and total <= bound
        pages = math.ceil(active_now / page_size)
        say(
            f"  cycle {index}: {requests_text(counts):<40} bound {pages} + {ended_now}"
            f" + {configured_now} + sweep {sweep_now} = {bound}"
            f"  {'ok' if total <= bound else 'OVER'}"
        )
    ref_total = ref_cycle["list_sessions"] + ref_cycle["get_session"]
    say(f"  reference, every cycle: {requests_text(ref_cycle)}")

    say("")
    cycle_cpu = statistics.median(inproc["cycle"][1:])
    render_cpu = statistics.median(inproc["render"])
    gzip_cpu = statistics.median(inproc["gzip"])
    collector_cpu = statistics.median(inproc["collector"])
    ours_total_cpu = cycle_cpu + render_cpu
    cpu_ratio = ours_total_cpu / collector_cpu
    say(
        f"In-process, thread CPU, {inproc['sessions'][0]:.0f} sessions (median of "
        f"{len(inproc['collector'])}):"
    )
    say(f"  poll cycle (list, parse, track, snapshot): {cycle_cpu * 1000:8.1f} ms"
        f"   (first cycle {inproc['cycle'][0] * 1000:.1f} ms)")  # fmt: skip
    say(f"  render_sessions (fast renderer), once:     {render_cpu * 1000:8.1f} ms")
    lean_cpu = statistics.median(inproc["lean"])
    full_series, lean_series = inproc["series"]
    say(f"  the same with the README's lean denylist:  {lean_cpu * 1000:8.1f} ms"
        f"   ({lean_cpu / render_cpu:.2f}x; series {full_series:.0f} -> {lean_series:.0f},"
        f" {full_series / inproc['sessions'][0]:.1f} -> {lean_series / inproc['sessions'][0]:.1f}"
        " a session)")  # fmt: skip
    say(f"  gzip of the rendered part (level 6), once: {gzip_cpu * 1000:8.1f} ms")
    say(f"  cycle + render:                            {ours_total_cpu * 1000:8.1f} ms")
    say(f"  generate_latest through the Collector:     {collector_cpu * 1000:8.1f} ms")
    say(f"  ratio (cycle + render) / generate_latest:  {cpu_ratio:8.2f}")
    say(f"  fast render identical to generate_latest:  {bool(inproc['identical'][0])}")
    planning_ratio = bookkeeping["configured"] / bookkeeping["discovered"]
    say(f"Cycle bookkeeping, thread CPU (plan, apply, snapshot; no HTTP), {n} sessions:")
    say(f"  discovered, all listed:                     {bookkeeping['discovered'] * 1000:8.1f} ms")
    say(f"  configured IDs, half deferred last cycle:   {bookkeeping['configured'] * 1000:8.1f} ms")
    say(f"  ratio configured / discovered:              {planning_ratio:8.2f}")

    say("")
    shard_bound = math.ceil(n / page_size) + SWEEP_STEADY_MAX
    shard_ok = sum(exported for _, exported in shards) == n
    say(f"{SHARDS} shards sharing {n} active sessions, requests in a steady cycle (each replica")
    say("reads the whole list, page cap max_sessions x total_shards; bound per replica")
    say(f"ceil({n}/{page_size}) + sweep {SWEEP_STEADY_MAX} = {shard_bound}):")
    for shard, (counts, exported) in enumerate(shards):
        total = sum(counts.values())
        shard_ok = shard_ok and total <= shard_bound
        say(f"  shard {shard}: {requests_text(counts):<40} exports {exported}")
    say(f"  all shards: {sum(sum(c.values()) for c, _ in shards)} requests a cycle, "
        f"{sum(e for _, e in shards)} sessions exported (each once)")  # fmt: skip

    say("")
    say(f"promtool check metrics on ours' body ({sizes[('ours', False)] / 1024:.0f} KiB): "
        f"exit {promtool_rc}")  # fmt: skip
    lines = promtool_out.splitlines()
    for line in lines[:20]:
        say(f"  {line}")
    if len(lines) > 20:
        say(f"  ... {len(lines) - 20} more lines")
    if not lines:
        say("  (no problems reported)")

    say("")
    say(f"Targets (set for N=10,000; this run N={n}):")
    checks = []
    for gzip in (False, True):
        kind = "gzip" if gzip else "plain"
        speedup = latency[("reference", gzip)].p50 / latency[("ours", gzip)].p50
        label = f"median /metrics latency {kind} >= {LATENCY_SPEEDUP:g}x lower than the reference"
        checks.append((label, speedup >= LATENCY_SPEEDUP, f"{speedup:.1f}x lower"))
    checks += [
        (f"within {STATIC_RATIO:g}x of a static file", static_ratio <= STATIC_RATIO,
         f"{static_ratio:.2f}x"),
        (f"scrape p50 changes < {HANG_CHANGE * 100:g}% with {args.hang * 1000:.0f} ms API latency",
         change < HANG_CHANGE, f"{change * 100:+.1f} %"),
        ("requests per cycle <= ceil(active/page_size) + ended + configured-not-listed + sweep",
         economy_ok and ours_ids == n + CONFIGURED,
         f"steady {sum(ours_steady.values())} = {ceil_pages} pages + sweep "
         f"{ours_steady['sweep']} (at most {SWEEP_STEADY_MAX}); reference {ref_total}"),
        (f"cycle CPU (+ render) <= {CYCLE_CPU_RATIO:g}x generate_latest",
         cpu_ratio <= CYCLE_CPU_RATIO, f"{cpu_ratio:.2f}x"),
        (f"bookkeeping with configured IDs, half deferred <= {DEFERRED_PLANNING_RATIO:g}x "
         "discovered", planning_ratio <= DEFERRED_PLANNING_RATIO, f"{planning_ratio:.2f}x"),
        (f"{SHARDS} shards: every session exported once, requests per replica within the bound",
         shard_ok, f"{sum(e for _, e in shards)} of {n} sessions"),
        (f"peak RSS <= {RSS_MIB:g} MiB", max(rss["ours"], rss["ours (continuous)"]) <= RSS_MIB,
         f"{max(rss['ours'], rss['ours (continuous)']):.1f} MiB"),
        ("promtool check metrics is clean", promtool_rc == 0 and not lines,
         f"exit {promtool_rc}, {len(lines)} lines"),
    ]  # fmt: skip
    for label, passed, figure in checks:
        say(f"  {'PASS' if passed else 'FAIL'}  {label}: {figure}")
    print("\n".join(out))
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
