"""A fake Notte API on loopback: `--demo`, the tests and the benchmarks talk to it.

It stands where the real API stands in the data flow (before the client), so
everything downstream runs unchanged against it. `world` holds the sessions
and their life; `server` serves them over HTTP; `python -m exporter.simulator`
serves one on its own.
"""

from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import (
    BROWSERS,
    DEMO_TICK_SECONDS,
    ENDED,
    LIST_ORDERS,
    LIVE,
    Fault,
    RequestRecord,
    SimulatedNotte,
    demo_world,
    iso,
    parse_timestamp,
)

__all__ = [
    "BROWSERS",
    "DEMO_TICK_SECONDS",
    "ENDED",
    "LIST_ORDERS",
    "LIVE",
    "Fault",
    "RequestRecord",
    "SimulatedNotte",
    "SimulatorServer",
    "demo_world",
    "iso",
    "parse_timestamp",
]
