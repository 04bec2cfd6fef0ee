"""The inbox writer's Redis work, per batch: the seen check before it writes, a job made certain for
every new row and each fact marked seen after its commit.

Why per batch, from the writer thread: one request at a time this was an ``EXISTS`` and a Redis
script per new notification, awaited on the event loop through redis.asyncio, about a sixth of the
receiver's CPU under load (py-spy). Per batch it is three pipelined round trips, whatever its size:

0. ``EXISTS`` of each fact's seen key (``seen``): a fact seen before is a redelivery, acknowledged
   with no SQL at all (Redis down: nothing is taken as seen, the SQL unique key decides);

1. ``SET NX`` of the wake flag of each shard with a new row: where the flag was already up, that
   shard's job is pending and will see the row (it clears the flag when it starts, before it
   reads); where this call raised it, an apply job is enqueued now;
2. ``SET`` of the seen key of every fact whose job is certain (or that was already processed), so
   Checus's retry of it is acknowledged from Redis alone.

Nothing is marked seen before its job is certain, and the writer answers a request only after
this, so an acknowledged notification always has a job that will find its row. If Redis fails,
the rows of the shards whose job is not certain are reported back (the receiver answers 503 and
Checus retries; the row is also swept); marking seen is only a fast path, so failing at it is
ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from worker.runtime.queueing import WAKE_TTL_SECONDS, Enqueuer, apply_wake_name, wake_key
from worker.store.inbox import shard_of

SEEN_TTL_SECONDS = 7 * 24 * 3600


def seen_key(key: str) -> str:
    return f"checus:seen:{key}"


@dataclass(frozen=True, slots=True)
class Committed:
    """What the writer committed for one notification, and whether a job is certain to apply it."""

    key: str
    ref: str
    processed: bool  # the fact was kept and applied before: nothing to wake


class BatchWaker:
    def __init__(self, enqueuer: Enqueuer) -> None:
        self.enqueuer = enqueuer

    @property
    def redis(self) -> Redis:
        return self.enqueuer.queue.connection

    def seen(self, keys: Sequence[str]) -> list[bool]:
        """Per fact, in order: True when it was kept (and a job made certain) before."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.exists(seen_key(key))
            return [bool(found) for found in pipe.execute()]
        except RedisError:
            return [False] * len(keys)  # the fast path is optional; the SQL unique key is the real dedupe

    def settle(self, rows: Sequence[Committed]) -> list[RedisError | None]:
        """Per row, in order: None once a job is certain to apply it (or it needs none), else why not."""
        shards = sorted({shard_of(row.ref) for row in rows if not row.processed})
        failed: dict[int, RedisError] = {}
        if shards:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for shard in shards:
                    pipe.set(wake_key(apply_wake_name(shard)), 1, nx=True, ex=WAKE_TTL_SECONDS)
                raised = pipe.execute()
            except RedisError as exc:
                failed = dict.fromkeys(shards, exc)
            else:
                for shard, newly in zip(shards, raised, strict=True):
                    if newly:
                        try:
                            self.enqueuer.start_apply_pending(shard)
                        except RedisError as exc:  # start_woken dropped the flag again
                            failed[shard] = exc
        verdicts = [None if row.processed else failed.get(shard_of(row.ref)) for row in rows]
        certain = [row.key for row, verdict in zip(rows, verdicts, strict=True) if verdict is None]
        if certain:
            with contextlib.suppress(RedisError):
                pipe = self.redis.pipeline(transaction=False)
                for key in certain:
                    pipe.set(seen_key(key), 1, ex=SEEN_TTL_SECONDS)
                pipe.execute()
        return verdicts
