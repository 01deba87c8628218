"""A reference exporter, written the plain prometheus-client way, for `bench/scale.py`.

It exports the same per-session metrics as notte-exporter, the way a first
version usually does: module-level `Gauge`s on the default registry, set with
`.labels(session_id).set()`; every cycle lists the active sessions to learn
their IDs and then GETs each one (plus the configured IDs); `start_http_server`
renders the whole registry at every scrape (gzip too, when asked). Counter-like
values are gauges, since a prometheus-client `Counter` cannot be set.

It is a yardstick, not an example to follow (see STYLE.md's anti-patterns):
series of vanished sessions are never removed, and the loop is a plain
`while True`. SIGUSR1 starts the next cycle at once (a hook for the benchmark,
so it can time one cycle without waiting a whole interval); SIGTERM stops it.

    python bench/reference_exporter.py --api-url http://127.0.0.1:8000 \
        --api-key KEY --listen-address 127.0.0.1:9100 --poll-interval 600
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Gauge, start_http_server

log = logging.getLogger("reference-exporter")

STATUSES = ("active", "authenticating", "closed", "error", "timed_out")
ENDED = frozenset(STATUSES[2:])
ID = ["session_id"]
INFO_LABELS = [
    "session_id",
    "browser_type",
    "proxies",
    "solve_captchas",
    "web_bot_auth",
]
DURATION = re.compile(r"^P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$")

SESSION_STATUS = Gauge("notte_session_status", "Session status.", ["session_id", "status"])
REQUEST_BYTES = Gauge("notte_session_network_request_bytes_total", "Bytes sent.", ID)
RESPONSE_BYTES = Gauge("notte_session_network_response_bytes_total", "Bytes received.", ID)
DURATION_SECONDS = Gauge("notte_session_duration_seconds", "Session duration.", ID)
IDLE_TIMEOUT = Gauge("notte_session_idle_timeout_seconds", "Idle timeout.", ID)
IDLE_REMAINING = Gauge("notte_session_idle_remaining_seconds", "Idle time left.", ID)
IDLE_DEADLINE = Gauge("notte_session_idle_deadline_timestamp_seconds", "Idle deadline.", ID)
MAX_DURATION = Gauge("notte_session_max_duration_seconds", "Maximum duration.", ID)
MAX_REMAINING = Gauge("notte_session_max_duration_remaining_seconds", "Duration left.", ID)
CREATED = Gauge("notte_session_created_timestamp_seconds", "Creation time.", ID)
LAST_ACCESSED = Gauge("notte_session_last_accessed_timestamp_seconds", "Last access.", ID)
CLOSED = Gauge("notte_session_closed_timestamp_seconds", "Close time.", ID)
STEPS = Gauge("notte_session_steps", "Number of steps.", ID)
INFO = Gauge("notte_session_info", "Session properties.", INFO_LABELS)
ERROR_INFO = Gauge("notte_session_error_info", "Session error.", ["session_id", "error"])
SESSIONS = Gauge("notte_sessions", "Sessions by status.", ["status"])
UP = Gauge("notte_up", "1 when the last cycle worked.")


def seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def iso_duration(value: Any) -> float | None:
    match = DURATION.match(value) if isinstance(value, str) else None
    if not match:
        return None
    days, hours, minutes, secs = (float(part or 0) for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + secs


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | list | dict):
        return "true" if value else "false"
    return str(value)


def export(session: dict[str, Any], now: float) -> None:
    """Set every gauge of one session."""
    sid = session["session_id"]
    status = session.get("status", "")
    for known in STATUSES:
        SESSION_STATUS.labels(sid, known).set(1 if known == status else 0)
    if status not in STATUSES:
        SESSION_STATUS.labels(sid, status).set(1)
    REQUEST_BYTES.labels(sid).set(session.get("network_request_bytes") or 0)
    RESPONSE_BYTES.labels(sid).set(session.get("network_response_bytes") or 0)
    created = seconds(session.get("created_at"))
    accessed = seconds(session.get("last_accessed_at"))
    closed = seconds(session.get("closed_at"))
    active = status not in ENDED
    if created is not None:
        CREATED.labels(sid).set(created)
        if active:
            DURATION_SECONDS.labels(sid).set(max(0.0, now - created))
        else:
            duration = iso_duration(session.get("duration"))
            end = closed if closed is not None else accessed
            if duration is None and end is not None:
                duration = max(0.0, end - created)
            if duration is not None:
                DURATION_SECONDS.labels(sid).set(duration)
    if accessed is not None:
        LAST_ACCESSED.labels(sid).set(accessed)
    if closed is not None:
        CLOSED.labels(sid).set(closed)
    idle = session.get("idle_timeout_minutes", session.get("timeout_minutes"))
    if isinstance(idle, int | float):
        IDLE_TIMEOUT.labels(sid).set(idle * 60)
        since = accessed if accessed is not None else created
        if active and since is not None:
            deadline = since + idle * 60
            IDLE_DEADLINE.labels(sid).set(deadline)
            IDLE_REMAINING.labels(sid).set(max(0.0, deadline - now))
    longest = (session.get("max_duration_minutes") or 15) * 60
    MAX_DURATION.labels(sid).set(longest)
    if active and created is not None:
        MAX_REMAINING.labels(sid).set(max(0.0, created + longest - now))
    STEPS.labels(sid).set(len(session.get("steps") or ()))
    INFO.labels(
        sid,
        text(session.get("browser_type")),
        text(session.get("proxies")),
        text(session.get("solve_captchas")),
        text(session.get("web_bot_auth")),
    ).set(1)
    if session.get("error"):
        ERROR_INFO.labels(sid, str(session["error"])[:200]).set(1)


def list_ids(client: httpx.Client, page_size: int) -> list[str]:
    """Every active session ID, page by page."""
    ids: list[str] = []
    page = 1
    while True:
        params = {
            "only_active": "true",
            "include_system": "false",
            "page": page,
            "page_size": page_size,
        }
        body = client.get("/sessions/", params=params).raise_for_status().json()
        items = body["items"] if isinstance(body, dict) else body
        ids += [item["session_id"] for item in items]
        if len(items) < page_size or (isinstance(body, dict) and body.get("has_next") is False):
            return ids
        page += 1


def fetch(client: httpx.Client, session_id: str) -> dict[str, Any] | None:
    try:
        response = client.get("/sessions/" + quote(session_id, safe=""))
        return response.raise_for_status().json()  # type: ignore[no-any-return]
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("GET %s failed: %s", session_id, type(exc).__name__)
        return None


def poll(client: httpx.Client, pool: ThreadPoolExecutor, args: argparse.Namespace) -> int:
    """One cycle: list, then GET every session; returns how many were exported."""
    ids = list_ids(client, args.page_size)
    ids += [i for i in args.session_id if i not in set(ids)]
    counts = dict.fromkeys(STATUSES, 0)
    exported = 0
    now = time.time()
    for session in pool.map(lambda sid: fetch(client, sid), ids):
        if session is None:
            continue
        export(session, now)
        counts[session.get("status", "")] = counts.get(session.get("status", ""), 0) + 1
        exported += 1
    for status, count in counts.items():
        SESSIONS.labels(status).set(count)
    return exported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--listen-address", default="127.0.0.1:9100")
    parser.add_argument("--poll-interval", type=float, default=15.0)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="GETs in flight at once")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--session-id", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    wake = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: wake.set())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, _, port = args.listen_address.rpartition(":")
    start_http_server(int(port), addr=host)
    log.info("listening on http://%s:%s", host, port)

    limits = httpx.Limits(max_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {args.api_key}"}
    with (
        httpx.Client(
            base_url=args.api_url, headers=headers, timeout=args.request_timeout, limits=limits
        ) as client,
        ThreadPoolExecutor(args.concurrency) as pool,
    ):
        cycle = 0
        while True:
            cycle += 1
            started = time.monotonic()
            try:
                exported = poll(client, pool, args)
                UP.set(1)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.error("cycle %d failed: %s", cycle, exc)
                UP.set(0)
                exported = 0
            log.info(
                "cycle %d done: %d sessions in %.2f s", cycle, exported, time.monotonic() - started
            )
            wake.wait(args.poll_interval)
            wake.clear()


if __name__ == "__main__":
    sys.exit(main())
