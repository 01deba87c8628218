"""A fake Notte API on loopback: `--demo`, the tests and the benchmarks talk to it.

It stands where the real API stands in the data flow (before the client), so
everything downstream runs unchanged against it. `world` holds the sessions
and their life; `server` serves them over HTTP.
"""

from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import (
    BROWSERS,
    ENDED,
    Fault,
    RequestRecord,
    SimulatedNotte,
    iso,
    parse_timestamp,
)

__all__ = [
    "BROWSERS",
    "ENDED",
    "Fault",
    "RequestRecord",
    "SimulatedNotte",
    "SimulatorServer",
    "iso",
    "parse_timestamp",
]
