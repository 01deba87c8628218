"""`python -m exporter.simulator`: the simulated Notte API on its own, on loopback.

For trying Prometheus, dashboards or scripts without a Notte account. The first
line on stdout is `<base URL> <API key>` (flushed), so a script can read where
to point `NOTTE_API_URL` and `NOTTE_API_KEY`; the world then lives until
SIGTERM or SIGINT, which stop it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import DEMO_TICK_SECONDS, demo_world


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve a simulated Notte API on 127.0.0.1 (prints '<base URL> <API key>').",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument(
        "--api-key", default=None, help="the bearer key to accept (default: a random one)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated world")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        _parser().error("--port: must be 0 to 65535")
    api_key = args.api_key or f"sim-{secrets.token_hex(16)}"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = SimulatorServer(
        demo_world(args.seed), api_key=api_key, port=args.port, tick_interval=DEMO_TICK_SECONDS
    )
    try:
        server.start()
    except OSError as exc:
        print(f"exporter.simulator: cannot serve on port {args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"{server.url} {api_key}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
