"""Soak test: the exporter against a living, misbehaving fake Notte API, scraped all along.

Runs `python -m exporter` as a subprocess against the simulator (in this process,
ticking so that sessions live and end), for a bounded time. Faults (5xx, 429 with
Retry-After, hangs, bodies that are not JSON) are injected and removed at random
while a few threads scrape `/metrics`. Prints the exporter's RSS at the start and
the end, scrape latency percentiles with and without a fault in force, the poll
cycles completed, and how much it logged.

With `--hostile`, the API answers with hostile bodies in turn instead (a 200 MB
body, an endless chunked body, a gzip bomb, `[{},{},...]` just under the cap,
JSON nested 100k deep, a redirect, an answer about another session), between
calm spells, while the scrapers run and a checker compares `notte_up` with what
the API is doing. It prints scrape latency p50/p99, the peak RSS against the
Kubernetes memory limit, and how often `notte_up` told the truth. Hostile
*clients* of `/metrics` (slowloris, wrong passwords) plug in at `HOSTILE_CLIENTS`.

    python bench/soak.py --seconds 60
    python bench/soak.py --hostile --seconds 60
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LineCollector
from exporter.simulator import Fault, SimulatedNotte, SimulatorServer

API_KEY = "sk-soak-bench-key"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
FAULT_KINDS = ("500", "429", "hang", "not_json")
MiB = 1 << 20
KUBERNETES_MEMORY_LIMIT_MIB = 256  # deploy/: the limit the exporter ships with

# Hostile answers, taken in turn by `--hostile`, and whether the cycle fails while
# one is in force (so `notte_up` must read 0): every cycle lists sessions, but only
# sessions leaving the list are fetched one by one, so `wrong_session` may not be asked.
HOSTILE_KINDS: dict[str, tuple[Callable[[], Fault], bool]] = {
    "200mb": (lambda: Fault(endpoint="list_sessions", body=b" " * MiB, repeat=200), True),
    "endless": (lambda: Fault(endpoint="list_sessions", body=b"[" * 65536, endless=True), True),
    "gzip_bomb": (
        lambda: Fault(endpoint="list_sessions", body=b" " * (16 * MiB), gzip=True, repeat=128),
        True,
    ),
    "dict_bomb": (  # under the byte cap, ~400 MiB once parsed
        lambda: Fault(endpoint="list_sessions", body=b"[" + b"{}," * (5 * MiB) + b"{}]"),
        True,
    ),
    "deep_json": (
        lambda: Fault(endpoint="list_sessions", body=b"[" * 100_000 + b"]" * 100_000),
        True,
    ),
    "redirect": (
        lambda: Fault(
            endpoint="list_sessions",
            status=307,
            headers={"Location": "https://collector.example/steal?key=x"},
        ),
        True,
    ),
    "wrong_session": (
        lambda: Fault(
            endpoint="get_session", body=b'{"session_id": "imposter", "status": "active"}'
        ),
        False,
    ),
}

# Hostile clients of the exporter's own HTTP endpoints (slowloris connections,
# wrong-password floods), each started on a daemon thread as `client(url, stop)`
# and expected to return once `stop` is set. The HTTP side's soak adds them here.
HOSTILE_CLIENTS: list[Callable[[str, threading.Event], None]] = []


def make_fault(kind: str, rng: random.Random) -> Fault:
    if kind == "500":
        return Fault(status=rng.choice((500, 502, 503)))
    if kind == "429":
        return Fault(status=429, retry_after=str(rng.randint(1, 5)))
    if kind == "hang":
        return Fault(hang=30.0)
    return Fault(body=b"<html><body>502 Bad Gateway</body></html>")


def vm_kib(pid: int, field_name: str) -> int:
    """A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else -1


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def tracked(found: Samples) -> int:
    return int(
        sum(v for (name, _), v in found.items() if name == "notte_exporter_tracked_sessions")
    )


@dataclass
class Record:
    """What the scrapers and the fault schedule saw; guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    fault: str | None = None
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    phase_seconds: Counter[str] = field(default_factory=Counter)
    phase_count: Counter[str] = field(default_factory=Counter)
    since: float = field(default_factory=time.monotonic)  # when `fault` last changed
    up_checks: Counter[str] = field(default_factory=Counter)  # by kind: "ok" / "wrong"


class ExporterProcess:
    """The exporter under test; its log is read as it comes so the pipe never fills."""

    def __init__(self, api_url: str, poll_interval: float, request_timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
        env["NOTTE_API_KEY"] = API_KEY
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "exporter",
                "--api-url", api_url,
                "--listen-address", "127.0.0.1:0",
                "--poll-interval", str(poll_interval),
                "--request-timeout", str(request_timeout),
            ],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        self._stderr = LineCollector(self.process.stderr)
        self.lines = self._stderr.lines

    def port(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := LISTENING.search(line):
                    return int(match.group(1))
            if self.process.poll() is not None:
                raise SystemExit("the exporter exited early:\n" + "".join(self.lines))
            time.sleep(0.05)
        raise SystemExit("the exporter did not start listening")

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        elapsed = time.monotonic() - started
        self._stderr.join(5)
        return code, elapsed


def scraper(url: str, record: Record, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            headers = {"Accept-Encoding": "gzip"} if rng.random() < 0.5 else {}
            with record.lock:
                phase = "during faults" if record.fault else "without faults"
            started = time.perf_counter()
            try:
                response = client.get(url + "/metrics", headers=headers)
                elapsed = time.perf_counter() - started
                ok = response.status_code == 200 and b"notte_up" in response.content
            except httpx.HTTPError as exc:
                elapsed, ok = time.perf_counter() - started, False
                with record.lock:
                    record.errors[type(exc).__name__] += 1
            with record.lock:
                if ok:
                    record.latencies[phase].append(elapsed)
                else:
                    record.errors["bad answer"] += 1
            stop.wait(rng.uniform(0.02, 0.2))


def fault_schedule(
    world: SimulatedNotte, record: Record, stop: threading.Event, rng: random.Random
) -> None:
    """Alternate calm and faulty spells of random length, until stopped; the faults
    come round in a shuffled order, so a short run still sees every kind."""
    faulty = False
    kinds: list[str] = []
    while not stop.is_set():
        if faulty and not kinds:
            kinds = list(FAULT_KINDS)
            rng.shuffle(kinds)
        kind = kinds.pop() if faulty else None
        world.clear_faults()
        if kind is not None:
            world.inject(make_fault(kind, rng))
        with record.lock:
            record.fault = kind
        spell = rng.uniform(3, 8)
        started = time.monotonic()
        stop.wait(spell)
        with record.lock:
            record.phase_seconds[kind or "none"] += time.monotonic() - started
            record.phase_count[kind or "none"] += 1
        faulty = not faulty
    world.clear_faults()


def hostile_schedule(
    world: SimulatedNotte, record: Record, stop: threading.Event, spell: float
) -> None:
    """Each hostile answer in turn, for `spell` seconds, with a calm spell after each."""
    kinds = list(HOSTILE_KINDS)
    index = 0
    while not stop.is_set():
        for kind in (kinds[index % len(kinds)], None):
            world.clear_faults()
            if kind is not None:
                world.inject(HOSTILE_KINDS[kind][0]())
            with record.lock:
                record.fault, record.since = kind, time.monotonic()
            started = time.monotonic()
            stop.wait(spell)
            with record.lock:
                record.phase_seconds[kind or "none"] += time.monotonic() - started
                record.phase_count[kind or "none"] += 1
            if stop.is_set():
                break
        index += 1
    world.clear_faults()


def up_checker(url: str, record: Record, stop: threading.Event, grace: float) -> None:
    """Compares `notte_up` with what the API is doing, once the exporter had `grace`
    seconds to notice a change: 0 while a failing answer is in force, 1 when calm."""
    with httpx.Client(timeout=10) as client:
        while not stop.wait(0.25):
            with record.lock:
                kind, since = record.fault, record.since
            try:
                found = samples(client.get(url + "/metrics").text)
            except httpx.HTTPError:
                continue  # the scrapers count failed scrapes
            with record.lock:
                if kind != record.fault or time.monotonic() - since < grace:
                    continue
            expected = 1.0 if kind is None else (0.0 if HOSTILE_KINDS[kind][1] else None)
            if expected is None:
                continue
            up = found.get(("notte_up", ()))
            with record.lock:
                record.up_checks[f"{kind or 'none'} {'ok' if up == expected else 'wrong'}"] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long (default 180)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="default 2")
    parser.add_argument("--request-timeout", type=float, default=1.0, help="default 1")
    parser.add_argument("--scrapers", type=int, default=4, help="scraping threads (default 4)")
    parser.add_argument("--sessions", type=int, default=60, help="active sessions (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hostile", action="store_true", help="hostile API answers in turn, notte_up checked"
    )
    parser.add_argument(
        "--spell",
        type=float,
        default=None,
        help="seconds per hostile spell (default: 3 s more than the exporter needs to notice)",
    )
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    world = SimulatedNotte(seed=args.seed, target_active=args.sessions)
    world.populate(active=args.sessions, ended=10)
    api = SimulatorServer(world, api_key=API_KEY, tick_interval=1.0)
    api.start()
    exporter = ExporterProcess(api.url, args.poll_interval, args.request_timeout)
    record = Record()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        url = f"http://127.0.0.1:{exporter.port()}"
        deadline = time.monotonic() + 30
        while httpx.get(url + "/readyz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the exporter never became ready")
            time.sleep(0.1)
        pid = exporter.process.pid
        rss_start = vm_kib(pid, "VmRSS")
        tracked_start = tracked(samples(httpx.get(url + "/metrics", timeout=10).text))
        log_lines_start = len(exporter.lines)
        started = time.monotonic()
        if args.hostile:
            grace = 2 * args.poll_interval + args.request_timeout + 0.5
            spell = args.spell or grace + 3
            threads += [
                threading.Thread(
                    target=hostile_schedule, args=(world, record, stop, spell), daemon=True
                ),
                threading.Thread(target=up_checker, args=(url, record, stop, grace), daemon=True),
            ]
            threads += [
                threading.Thread(target=client, args=(url, stop), daemon=True)
                for client in HOSTILE_CLIENTS
            ]
        else:
            threads.append(
                threading.Thread(
                    target=fault_schedule, args=(world, record, stop, rng), daemon=True
                )
            )
        threads += [
            threading.Thread(target=scraper, args=(url, record, stop, index), daemon=True)
            for index in range(args.scrapers)
        ]
        for thread in threads:
            thread.start()
        stop.wait(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(15)
        world.clear_faults()
        elapsed = time.monotonic() - started
        final = samples(httpx.get(url + "/metrics", timeout=10).text)
        rss_end = vm_kib(pid, "VmRSS")
        rss_peak = vm_kib(pid, "VmHWM")
    finally:
        stop.set()
        code, stop_seconds = exporter.stop()
        api.stop()

    def metric(name: str, **labels: str) -> float:
        return final.get((name, tuple(sorted(labels.items()))), 0.0)

    success = metric("notte_exporter_polls_total", result="success")
    failure = metric("notte_exporter_polls_total", result="failure")
    requests = Counter(
        {dict(labels)["code"]: v for (name, labels), v in final.items()
         if name == "notte_exporter_api_requests_total" and v}
    )  # fmt: skip
    log = exporter.lines[log_lines_start:]
    loud = [line for line in log if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)]

    print(f"notte-exporter soak: {elapsed:.0f} s, poll interval {args.poll_interval:g} s, "
          f"request timeout {args.request_timeout:g} s, {args.scrapers} scrapers, "
          f"~{args.sessions} live sessions, seed {args.seed}")  # fmt: skip
    print(f"RSS (pid {pid}): start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB "
          f"({(rss_end - rss_start) / 1024:+.1f} MiB), peak {rss_peak / 1024:.1f} MiB")  # fmt: skip
    print(f"tracked sessions: {tracked_start} at the start, {tracked(final)} at the end "
          "(ended ones stay for --retention, 900 s)")  # fmt: skip
    expected = elapsed / args.poll_interval
    print(f"poll cycles completed: {success + failure:.0f} (success {success:.0f}, "
          f"failure {failure:.0f}; {expected:.0f} due in {elapsed:.0f} s)")  # fmt: skip
    kinds = HOSTILE_KINDS if args.hostile else FAULT_KINDS
    print("fault spells: " + ", ".join(
        f"{kind} x{record.phase_count[kind]} ({record.phase_seconds[kind]:.0f} s)"
        for kind in ("none", *kinds) if record.phase_count[kind]
    ))  # fmt: skip
    print("API requests by code: " + ", ".join(f"{c}={n:.0f}" for c, n in sorted(requests.items())))
    scrapes = sum(len(v) for v in record.latencies.values())
    errors = sum(record.errors.values())
    print(f"scrapes: {scrapes} ok, {errors} failed {dict(record.errors) if errors else ''}")
    print(f"{'scrape latency (ms)':<22}{'n':>7}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for phase in ("without faults", "during faults"):
        values = [v * 1000 for v in record.latencies.get(phase, [])]
        row = [percentile(values, q) for q in (0.5, 0.9, 0.99)] + [max(values, default=0.0)]
        print(f"  {phase:<20}{len(values):>7}" + "".join(f"{v:>8.1f}" for v in row))
    print(f"exporter log: {len(log)} lines, {len(loud)} at warning or above")
    print(f"SIGTERM: exit status {code} after {stop_seconds:.2f} s")
    truthful = True
    if args.hostile:
        truthful = report_hostile(record, final, rss_peak)
    return 0 if code == 0 and errors == 0 and truthful else 1


def report_hostile(record: Record, final: Samples, rss_peak_kib: int) -> bool:
    """The hostile run's verdict lines; True when `notte_up` never lied and memory fit."""
    every = [v * 1000 for values in record.latencies.values() for v in values]
    slowest = max(every, default=0.0)
    p50, p99 = percentile(every, 0.5), percentile(every, 0.99)
    print(f"hostile: scrape latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {slowest:.1f} ms")
    peak_mib = rss_peak_kib / 1024
    fits = peak_mib < KUBERNETES_MEMORY_LIMIT_MIB
    verdict = "under" if fits else "OVER"
    print(
        f"hostile: peak RSS {peak_mib:.1f} MiB "
        f"({verdict} the {KUBERNETES_MEMORY_LIMIT_MIB} MiB limit)"
    )
    bad = {
        dict(labels)["kind"]: v
        for (name, labels), v in final.items()
        if name == "notte_exporter_api_bad_data_total" and v
    }
    print(
        "hostile: bad API data by kind: "
        + ", ".join(f"{k}={v:.0f}" for k, v in sorted(bad.items()))
    )
    right = sum(n for key, n in record.up_checks.items() if key.endswith(" ok"))
    wrong = {key: n for key, n in record.up_checks.items() if key.endswith(" wrong")}
    lies = sum(wrong.values())
    detail = f" {wrong}" if wrong else ""
    print(f"hostile: notte_up checked {right + lies} times, wrong {lies}{detail}")
    return fits and not wrong and right > 0


if __name__ == "__main__":
    sys.exit(main())
