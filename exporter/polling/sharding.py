"""Which replica owns a session: a stable hash of its ID, as the contract defines it."""

from __future__ import annotations

import hashlib


def shard_of(session_id: str, total_shards: int) -> int:
    """The shard (0-based) that exports `session_id` among `total_shards` replicas."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


def owns(session_id: str, shard: int, total_shards: int) -> bool:
    """True when this replica's shard owns the session; always true unsharded."""
    return total_shards == 1 or shard_of(session_id, total_shards) == shard
