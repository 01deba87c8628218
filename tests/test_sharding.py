"""Sharding: three replicas together export exactly what one unsharded exporter does.

Three shards (`--shard 0..2 --total-shards 3`) and one unsharded exporter poll one
simulator, cycle by cycle. Each cycle's requests are read from the simulator's
request log between one exporter's cycle and the next, so every request is
attributed to the replica that sent it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from contextlib import ExitStack
from urllib.parse import unquote

import pytest

from exporter.labels import ENDED_STATUSES, STATUSES
from exporter.simulator import RequestRecord, SimulatedNotte, SimulatorServer
from tests.harness import exporter_for, total, value

TOTAL_SHARDS = 3
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def contract_shard(session_id: str) -> int:
    """The contract's hash, written out here rather than imported from the exporter."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % TOTAL_SHARDS


def exported_ids(samples: Samples) -> set[str]:
    return {
        dict(labels)["session_id"] for name, labels in samples if name == "notte_session_status"
    }


def fetched_ids(records: list[RequestRecord]) -> list[str]:
    return [
        unquote(r.path.removeprefix("/sessions/")) for r in records if r.endpoint == "get_session"
    ]


@pytest.fixture
def world() -> SimulatedNotte:
    world = SimulatedNotte(seed=11)
    world.populate(active=60, ended=6)
    return world


class Fleet:
    """Three shards and an unsharded exporter; `cycle()` polls each in turn."""

    def __init__(self, stack: ExitStack, world: SimulatedNotte, url: str, ids: list[str]) -> None:
        self.world = world
        self.shards = [
            stack.enter_context(
                exporter_for(url, shard=shard, total_shards=TOTAL_SHARDS, session_ids=ids)
            )
            for shard in range(TOTAL_SHARDS)
        ]
        self.whole = stack.enter_context(exporter_for(url, session_ids=ids))
        self.requests: dict[int | None, list[RequestRecord]] = {
            shard: [] for shard in (*range(TOTAL_SHARDS), None)
        }

    def cycle(self) -> None:
        """One cycle of every exporter, noting which requests each one sent."""
        for shard, exporter in (*enumerate(self.shards), (None, self.whole)):
            self.world.reset_requests()
            assert exporter.cycle(timeout=10)
            self.requests[shard] += self.world.request_log()

    def samples(self) -> tuple[list[Samples], Samples]:
        return [shard.metrics() for shard in self.shards], self.whole.metrics()


def assert_sums_match(
    shards: list[Samples], whole: Samples, name: str, statuses: tuple[str, ...]
) -> None:
    """Every shard exports the series, and their values add up to the unsharded one."""
    for status in statuses:
        parts = [total(samples, name, status=status) for samples in shards]
        assert all(part is not None for part in parts), (name, status, parts)
        summed = sum(part or 0.0 for part in parts)
        assert summed == total(whole, name, status=status), (name, status, parts)


def test_three_shards_export_exactly_what_one_unsharded_exporter_does(
    world: SimulatedNotte, api: SimulatorServer
) -> None:
    active = world.session_ids("active")
    configured = [i for i in world.session_ids() if i not in set(active)]
    # The configured (ended) IDs fall on more than one shard, or the test proves little.
    assert len({contract_shard(i) for i in configured}) >= 2

    with ExitStack() as stack:
        fleet = Fleet(stack, world, api.url, configured)
        fleet.cycle()
        shards, whole = fleet.samples()

        ids = [exported_ids(samples) for samples in shards]
        assert exported_ids(whole) == set(active) | set(configured)
        assert set().union(*ids) == exported_ids(whole)
        assert sum(len(part) for part in ids) == len(exported_ids(whole))  # no overlap
        for shard, part in enumerate(ids):
            assert part, f"shard {shard} exports nothing"
            assert {contract_shard(i) for i in part} == {shard}
            assert value(shards[shard], "notte_exporter_shard_ordinal") == shard
            assert value(shards[shard], "notte_exporter_total_shards") == TOTAL_SHARDS
        assert value(whole, "notte_exporter_shard_ordinal") == 0
        assert value(whole, "notte_exporter_total_shards") == 1
        assert_sums_match(shards, whole, "notte_sessions", STATUSES)

        # Some sessions of every shard end, with every final status; then one more cycle.
        ending = {
            shard: [i for i in active if contract_shard(i) == shard][:3]
            for shard in range(TOTAL_SHARDS)
        }
        ended_ids = [i for chosen in ending.values() for i in chosen]
        for index, session_id in enumerate(ended_ids):
            world.end_session(session_id, ENDED_STATUSES[index % len(ENDED_STATUSES)])
        fleet.cycle()
        shards, whole = fleet.samples()

    assert_sums_match(shards, whole, "notte_sessions", STATUSES)
    assert_sums_match(shards, whole, "notte_sessions_ended_total", ENDED_STATUSES)
    expected_ended = Counter(ENDED_STATUSES[i % 3] for i in range(len(ended_ids)))
    for status in ENDED_STATUSES:
        assert total(whole, "notte_sessions_ended_total", status=status) == expected_ended[status]

    # Each shard discovers everything (the same pages as the unsharded exporter) but
    # fetches only its own sessions: its configured IDs once, its ended ones once.
    pages = Counter(r.endpoint for r in fleet.requests[None])["list_sessions"]
    for shard in range(TOTAL_SHARDS):
        records = fleet.requests[shard]
        assert Counter(r.endpoint for r in records)["list_sessions"] == pages
        fetched = fetched_ids(records)
        assert {contract_shard(i) for i in fetched} <= {shard}
        own_configured = [i for i in configured if contract_shard(i) == shard]
        assert sorted(fetched) == sorted(own_configured + ending[shard])
    assert sorted(fetched_ids(fleet.requests[None])) == sorted(configured + ended_ids)
