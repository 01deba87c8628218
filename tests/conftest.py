"""Fixtures shared by several test modules.

`world` is the fake Notte API's state and `api` serves it on 127.0.0.1. A module
that needs another population, clock or seed overrides `world` only (pytest
fixture overriding); `api` then serves that world.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import bcrypt
import pytest

from exporter.simulator import SimulatedNotte, SimulatorServer
from tests.harness import API_KEY, Serve

SEED = 3  # any fixed seed: the simulated values of a run repeat exactly


@pytest.fixture
def world() -> SimulatedNotte:
    """An empty world; tests add its sessions."""
    return SimulatedNotte(seed=SEED)


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts a fake API: `serve(world, **options)`, with the harness's key unless
    `api_key=` says otherwise; each one is stopped after the test."""
    with ExitStack() as stack:

        def start(world: SimulatedNotte, **options: Any) -> SimulatorServer:
            options.setdefault("api_key", API_KEY)
            return stack.enter_context(SimulatorServer(world, **options))

        yield start


@pytest.fixture
def api(world: SimulatedNotte, serve: Serve) -> SimulatorServer:
    """`world` behind the fake API, with the key in-process exporters send (`API_KEY`).
    No tick thread: the world changes only when the test says so."""
    return serve(world)


@pytest.fixture(scope="module")
def module_api() -> Iterator[SimulatorServer]:
    """One fake API for a module's long-lived exporters (started once: TLS set up and
    credentials checked once); its world holds one active session, `a1`."""
    world = SimulatedNotte(seed=SEED)
    world.add_session("a1")
    with SimulatorServer(world, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts bcrypt checks (recording the hash each was made against) and delegates."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls
