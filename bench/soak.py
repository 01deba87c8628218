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
calm spells, while a checker compares `notte_up` with what the API is doing.
At the same time the exporter's own HTTP side is attacked (`HOSTILE_CLIENTS`):
300 slowloris connections and 300 connections sending wrong passwords, each
set from a `tests/hostile_peer.py` process of its own, and every 10 s a connect
flood of 1,500 idle connections from 127.0.0.2, past the connection cap, held 5 s.
The exporter runs with a web config holding basic auth with a bcrypt hash of cost 10, so every wrong
password it checks costs real bcrypt work, and the scrapers send the right one
(half on kept-alive connections, as Prometheus does, half on a new connection
each time). It prints scrape latency p50/p99/max (every authorised scrape must
be answered within 1 s), the peak RSS (VmHWM) against the memory limit
shipped in deploy/kubernetes/base, how often `notte_up` told the truth, what
the attackers got, and the exit status on SIGTERM, sent while the attack runs.

Bounded: it stops by itself after `--seconds`; everything binds 127.0.0.1.

    python bench/soak.py --seconds 60
    python bench/soak.py --hostile            # 120 s: each hostile answer once
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LineCollector
from exporter.simulator import Fault, SimulatedNotte, SimulatorServer
from exporter.web.http_server import HEADER_TIMEOUT_SECONDS

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-soak-bench-key"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
FAULT_KINDS = ("500", "429", "hang", "not_json")
MiB = 1 << 20
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "base" / "deployment.yaml"
SCRAPE_DEADLINE = 1.0  # seconds: an authorised scrape slower than this fails the hostile run

# Basic auth for the hostile run: the scrapers' credentials; the attackers send others.
USER, PASSWORD = "prometheus", "soak-scrape-password"
BCRYPT_COST = 10
ATTACK_CONNECTIONS = 300  # per kind of hostile client
FLOOD_CONNECTIONS = 1500  # the connect flood's, past the exporter's cap of 1,000
FLOOD_SOURCE = "127.0.0.2"  # another peer address than the scrapers'

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


def kubernetes_memory_limit_mib() -> float:
    """The exporter container's memory limit in deploy/kubernetes/base, in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for document in yaml.safe_load_all(DEPLOYMENT.read_text()):
        if document and document.get("kind") == "Deployment":
            container = document["spec"]["template"]["spec"]["containers"][0]
            limit = str(container["resources"]["limits"]["memory"])
            return float(limit[:-2]) * units[limit[-2:]]
    raise SystemExit(f"no Deployment with a memory limit in {DEPLOYMENT}")


class Peer:
    """`python -m tests.hostile_peer`: ATTACK_CONNECTIONS hostile connections from a
    process of its own (an attacker does not share the exporter's or our GIL)."""

    def __init__(
        self,
        port: int,
        mode: str,
        connections: int = ATTACK_CONNECTIONS,
        source: str = "127.0.0.1",
    ) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile_peer", "--port", str(port), "--mode", mode,
             "--connections", str(connections), "--source", source],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        # Not ready: it could not connect (the exporter is stopping); `finish` says so.
        self.ready = self.process.stdout.readline().strip() == "ready"

    def finish(self) -> Counter[str]:
        """Close its connections; what the server did to them (statuses, closes)."""
        try:
            out, _ = self.process.communicate(input="", timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            return Counter({"peer hung": 1})
        lines = out.strip().splitlines()
        if not self.ready or not lines:
            return Counter({"peer could not connect": 1})
        return Counter(json.loads(lines[-1]))


def slowloris(port: int, stop: threading.Event, record: Record) -> None:
    """ATTACK_CONNECTIONS slowloris connections at all times, until `stop`.

    The server cuts each at its header deadline, and the peer does not reconnect;
    so a new peer opens its connections a second before the previous ones are
    due to be cut, and each peer is finished (its tally taken) two seconds after.
    """
    peers = [Peer(port, "slowloris")]
    with record.lock:
        record.attack_peers["slowloris"] += 1
    while not stop.wait(0.25):
        if time.monotonic() - peers[-1].started >= HEADER_TIMEOUT_SECONDS - 1:
            peers.append(Peer(port, "slowloris"))
            with record.lock:
                record.attack_peers["slowloris"] += 1
        while len(peers) > 1 and time.monotonic() - peers[0].started > HEADER_TIMEOUT_SECONDS + 2:
            tally = peers.pop(0).finish()
            with record.lock:
                record.attacks["slowloris"].update(tally)
    for peer in peers:  # the exporter has stopped: these were closed by its shutdown
        tally = peer.finish()
        with record.lock:
            record.attacks["slowloris, at SIGTERM"].update(tally)


def wrong_passwords(port: int, stop: threading.Event, record: Record) -> None:
    """ATTACK_CONNECTIONS connections sending a wrong password, again as soon as
    answered, for the whole run (the server keeps them open: they never idle)."""
    peer = Peer(port, "wrong-password")
    with record.lock:
        record.attack_peers["wrong-password"] += 1
    stop.wait()
    tally = peer.finish()  # its closes: the exporter's shutdown
    with record.lock:
        record.attacks["wrong-password"].update(tally)


def connect_flood(port: int, stop: threading.Event, record: Record) -> None:
    """Every 10 s, FLOOD_CONNECTIONS idle connections from FLOOD_SOURCE, held 5 s: past
    the connection cap, so the exporter closes connections for room all along (the
    flood's own, never a scrape being answered nor a kept-alive scraper)."""
    while not stop.wait(5):
        peer = Peer(port, "idle", FLOOD_CONNECTIONS, FLOOD_SOURCE)
        with record.lock:
            record.attack_peers["connect-flood"] += 1
        stop.wait(5)
        tally = peer.finish()
        with record.lock:
            record.attacks["connect-flood"].update(tally)


# Hostile clients of the exporter's own HTTP endpoints, each started on a daemon
# thread as `client(port, stop, record)` and returning (tallies in `record.attacks`)
# once `stop` is set, which happens only after the exporter got its SIGTERM.
HOSTILE_CLIENTS: dict[str, Callable[[int, threading.Event, Record], None]] = {
    "slowloris": slowloris,
    "wrong-password": wrong_passwords,
    "connect-flood": connect_flood,
}


def write_web_config(directory: Path) -> Path:
    """A web config with basic auth for USER, a bcrypt hash of cost BCRYPT_COST."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    path = directory / "web.yml"
    path.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    return path


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
    phase_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    phase_count: Counter[str] = field(default_factory=Counter)
    since: float = field(default_factory=time.monotonic)  # when `fault` last changed
    up_checks: Counter[str] = field(default_factory=Counter)  # by kind: "ok" / "wrong"
    by_connection: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    attacks: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    attack_peers: Counter[str] = field(default_factory=Counter)


class ExporterProcess:
    """The exporter under test; its log is read as it comes so the pipe never fills."""

    def __init__(
        self,
        api_url: str,
        poll_interval: float,
        request_timeout: float,
        web_config: Path | None = None,
        root: Path = ROOT,
        settings: Sequence[str] = (),
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTTE_")}
        env["NOTTE_API_KEY"] = API_KEY
        for setting in settings:
            name, value = setting.split("=", 1)
            env[name] = value
        extra = ["--web-config-file", str(web_config)] if web_config else []
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "exporter",
                "--api-url", api_url,
                "--listen-address", "127.0.0.1:0",
                "--poll-interval", str(poll_interval),
                "--request-timeout", str(request_timeout),
                *extra,
            ],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=root,
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


def scraper(
    url: str,
    record: Record,
    stop: threading.Event,
    seed: int,
    auth: tuple[str, str] | None = None,
    fresh: bool = False,
) -> None:
    """Scrapes `/metrics` until stopped, on one kept-alive connection, or on a new
    connection each time when `fresh` (which must get past the attackers' queue)."""
    rng = random.Random(seed)
    connection = "new connection" if fresh else "kept alive"
    with httpx.Client(timeout=10, auth=auth) as client:
        while not stop.is_set():
            headers = {"Accept-Encoding": "gzip"} if rng.random() < 0.5 else {}
            if fresh:
                headers["Connection"] = "close"
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
                    record.by_connection[connection].append(elapsed)
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


def up_checker(
    url: str,
    record: Record,
    stop: threading.Event,
    grace: float,
    auth: tuple[str, str] | None = None,
) -> None:
    """Compares `notte_up` with what the API is doing, once the exporter had `grace`
    seconds to notice a change: 0 while a failing answer is in force, 1 when calm."""
    with httpx.Client(timeout=10, auth=auth) as client:
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
    parser.add_argument("--seconds", type=float, default=120.0, help="how long (default 120)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="default 2")
    parser.add_argument("--request-timeout", type=float, default=1.0, help="default 1")
    parser.add_argument("--scrapers", type=int, default=4, help="scraping threads (default 4)")
    parser.add_argument("--sessions", type=int, default=60, help="active sessions (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="hostile API answers in turn, notte_up checked, slowloris and wrong passwords",
    )
    parser.add_argument(
        "--no-connect-flood",
        action="store_true",
        help="with --hostile, leave out the connect flood (to compare with runs before it)",
    )
    parser.add_argument(
        "--spell",
        type=float,
        default=None,
        help="seconds per hostile spell (default: 3 s more than the exporter needs to notice)",
    )
    parser.add_argument(
        "--exporter-root",
        type=Path,
        default=ROOT,
        help="run the exporter from this checkout (a git worktree of another commit), to"
        " compare two servers in one sitting with the same attackers and scrapers",
    )
    parser.add_argument(
        "--exporter-env",
        action="append",
        default=[],
        type=environment_setting,
        metavar="NAME=VALUE",
        help="an environment variable for the exporter (repeatable), such as"
        " NOTTE_EXPORTER_FUNCTIONS=false to compare with a commit that polls no account",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notte-soak-") as directory:
        return soak(args, write_web_config(Path(directory)) if args.hostile else None)


def environment_setting(text: str) -> str:
    """`NAME=VALUE`, as --exporter-env takes it."""
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return text


def soak(args: argparse.Namespace, web_config: Path | None) -> int:
    """One bounded run; prints its figures; 0 when every verdict passed."""
    rng = random.Random(args.seed)
    auth = (USER, PASSWORD) if web_config else None
    world = SimulatedNotte(seed=args.seed, target_active=args.sessions)
    world.populate(active=args.sessions, ended=10)
    api = SimulatorServer(world, api_key=API_KEY, tick_interval=1.0)
    api.start()
    exporter = ExporterProcess(
        api.url,
        args.poll_interval,
        args.request_timeout,
        web_config,
        args.exporter_root,
        args.exporter_env,
    )
    record = Record()
    stop = threading.Event()  # the scrapers, the schedule and the checker
    stop_attack = threading.Event()  # the attackers: only once the exporter got SIGTERM
    threads: list[threading.Thread] = []
    attackers: list[threading.Thread] = []
    try:
        port = exporter.port()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while httpx.get(url + "/readyz", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the exporter never became ready")
            time.sleep(0.1)
        pid = exporter.process.pid
        rss_start = vm_kib(pid, "VmRSS")
        tracked_start = tracked(samples(httpx.get(url + "/metrics", auth=auth, timeout=10).text))
        log_lines_start = len(exporter.lines)
        started = time.monotonic()
        if args.hostile:
            grace = 2 * args.poll_interval + args.request_timeout + 0.5
            spell = args.spell or grace + 3
            threads += [
                threading.Thread(
                    target=hostile_schedule, args=(world, record, stop, spell), daemon=True
                ),
                threading.Thread(
                    target=up_checker, args=(url, record, stop, grace, auth), daemon=True
                ),
            ]
            attackers += [
                threading.Thread(target=client, args=(port, stop_attack, record), daemon=True)
                for mode, client in HOSTILE_CLIENTS.items()
                if not (mode == "connect-flood" and args.no_connect_flood)
            ]
        else:
            threads.append(
                threading.Thread(
                    target=fault_schedule, args=(world, record, stop, rng), daemon=True
                )
            )
        threads += [
            threading.Thread(
                target=scraper,
                args=(url, record, stop, index, auth, args.hostile and index % 2 == 1),
                daemon=True,
            )
            for index in range(args.scrapers)
        ]
        for thread in attackers + threads:
            thread.start()
        stop.wait(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(15)
        world.clear_faults()
        elapsed = time.monotonic() - started
        final = samples(httpx.get(url + "/metrics", auth=auth, timeout=10).text)
        rss_end = vm_kib(pid, "VmRSS")
        rss_peak = vm_kib(pid, "VmHWM")
    finally:
        stop.set()
        code, stop_seconds = exporter.stop()  # while the attackers still hold their connections
        stop_attack.set()
        for thread in attackers:
            thread.join(60)
        api.stop()

    def metric(name: str, **labels: str) -> float:
        return final.get((name, tuple(sorted(labels.items()))), 0.0)

    success = metric("notte_exporter_polls_total", result="success")
    failure = metric("notte_exporter_polls_total", result="failure")
    requests: Counter[str] = Counter()  # by code, over both endpoints
    for (name, labels), v in final.items():
        if name == "notte_exporter_api_requests_total":
            requests[dict(labels)["code"]] += int(v)
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
    rows = [
        (phase, record.latencies.get(phase, [])) for phase in ("without faults", "during faults")
    ]
    rows += sorted(record.by_connection.items()) if args.hostile else []
    for label, seconds in rows:
        values = [v * 1000 for v in seconds]
        row = [percentile(values, q) for q in (0.5, 0.9, 0.99)] + [max(values, default=0.0)]
        print(f"  {label:<20}{len(values):>7}" + "".join(f"{v:>8.1f}" for v in row))
    print(f"exporter log: {len(log)} lines, {len(loud)} at warning or above")
    print(f"SIGTERM: exit status {code} after {stop_seconds:.2f} s")
    truthful = True
    if args.hostile:
        truthful = report_hostile(record, final, rss_peak, elapsed)
    return 0 if code == 0 and errors == 0 and truthful else 1


def report_hostile(record: Record, final: Samples, rss_peak_kib: int, elapsed: float) -> bool:
    """The hostile run's verdict lines; True when every authorised scrape was answered
    within SCRAPE_DEADLINE, memory fit the shipped limit and `notte_up` never lied."""
    for mode in (mode for mode in HOSTILE_CLIENTS if record.attack_peers[mode]):
        at_once = FLOOD_CONNECTIONS if mode == "connect-flood" else ATTACK_CONNECTIONS
        print(
            f"hostile: {mode}: {at_once} connections at a time, "
            f"{record.attack_peers[mode]} x {at_once} in all"
        )
    for mode, tally in sorted(record.attacks.items()):
        answers = ", ".join(f"{k}={v}" for k, v in sorted(tally.items())) or "nothing"
        print(f"hostile:   {mode}: what the server did: {answers}")
    checked = record.attacks["wrong-password"]["401"]
    print(f"hostile: wrong passwords checked with bcrypt (cost {BCRYPT_COST}): {checked} "
          f"({checked / elapsed:.1f}/s), refused at once as busy (429): "
          f"{record.attacks['wrong-password']['429']}")  # fmt: skip
    every = [v * 1000 for values in record.latencies.values() for v in values]
    slowest = max(every, default=0.0)
    p50, p99 = percentile(every, 0.5), percentile(every, 0.99)
    fast = bool(every) and slowest < SCRAPE_DEADLINE * 1000
    print(f"hostile: authorised scrape latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"max {slowest:.1f} ms ({'under' if fast else 'NOT under'} "
          f"{SCRAPE_DEADLINE * 1000:.0f} ms)")  # fmt: skip
    peak_mib = rss_peak_kib / 1024
    limit_mib = kubernetes_memory_limit_mib()
    fits = peak_mib < limit_mib
    print(
        f"hostile: peak RSS (VmHWM) {peak_mib:.1f} MiB "
        f"({'under' if fits else 'OVER'} the {limit_mib:g} MiB limit in deploy/kubernetes/base)"
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
    return fast and fits and not wrong and right > 0


if __name__ == "__main__":
    sys.exit(main())
