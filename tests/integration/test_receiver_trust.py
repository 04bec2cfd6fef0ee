"""Trust: key rotation at the receiver, and the worker trusting nothing it reads from the store or the queue.

The receiver accepts a signature from any key on the local trust list, so a rotation is two
keys for a while, then the new one alone. Behind the receiver, the job re-verifies the raw
inbox body (a row forged in SQL changes nothing) and the worker is JSON-only (a job pickled
into the queue is never deserialized, let alone run).

``store_rig`` comes from ``conftest.py``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.serializers import DefaultSerializer

from tests.integration.test_receiver_harness import ACK, Rig, open_rig, payment_note, signer_of
from worker.flows.notifications import apply_notification
from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair
from worker.gateway.wire import dumps
from worker.rqworker import build_worker
from worker.runtime.queueing import QUEUE_NAME
from worker.store import inbox as inbox_store
from worker.store.db import write
from worker.store.schema import anomalies, inbox, outbox, transitions


@pytest.fixture(scope="module")
def new_platform_keys() -> PortalKeyPair:
    """The key Checus rotates to."""
    return generate_portal_key_pair()


@pytest.fixture
def rig(redis_url: str, tmp_path: Path, platform_keys: PortalKeyPair) -> Iterator[Rig]:
    with open_rig(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", platform=platform_keys) as r:
        yield r


def test_during_a_rotation_either_key_is_accepted(redis_url: str, tmp_path: Path, platform_keys: PortalKeyPair,
                                                  new_platform_keys: PortalKeyPair) -> None:
    """With the old and the new platform key trusted, notifications signed by either are acked and kept."""
    with open_rig(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", platform=platform_keys,
                  trusted=(platform_keys, new_platform_keys)) as rig:
        assert rig.deliver(payment_note("RX_OLD_KEY")).content == ACK
        assert rig.deliver(payment_note("RX_NEW_KEY"), signer=signer_of(new_platform_keys)).content == ACK
        assert [r.ref for r in rig.inbox_rows()] == ["RX_OLD_KEY", "RX_NEW_KEY"]


def test_after_the_rotation_the_old_key_is_refused(redis_url: str, tmp_path: Path, platform_keys: PortalKeyPair,
                                                   new_platform_keys: PortalKeyPair) -> None:
    """With only the new key trusted, the old key's signature is a 401 and nothing is kept."""
    with open_rig(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", platform=platform_keys,
                  trusted=(new_platform_keys,)) as rig:
        refused = rig.deliver(payment_note("RX_OLD_KEY"))
        assert (refused.status_code, refused.json()) == (401, {"code": "FAIL", "msg": "bad_signature"})
        assert rig.inbox_rows() == [] and rig.jobs() == []
        assert rig.deliver(payment_note("RX_NEW_KEY"), signer=signer_of(new_platform_keys)).content == ACK


def forge(rig: Rig, entry_id: int, **values: Any) -> None:
    with write(rig.rt.engine) as conn:
        conn.execute(inbox.update().where(inbox.c.id == entry_id).values(**values))


def test_an_inbox_row_altered_in_sql_is_not_applied(store_rig: Rig, other_keys: PortalKeyPair) -> None:
    """A kept CLOSED rewritten in the store to SUCCESS (same sign, or re-signed by a stranger) changes nothing:
    it is kept unverified (never finished: the worker may just not trust a new key yet), with an anomaly."""
    rig = store_rig
    rig.create_order("RX_ORDER_1")
    rig.create_order("RX_ORDER_2")
    assert rig.deliver(payment_note("RX_ORDER_1", status="CLOSED")).content == ACK
    assert rig.deliver(payment_note("RX_ORDER_2", status="CLOSED")).content == ACK
    first, second = rig.inbox_rows()
    success = dumps(payment_note("RX_ORDER_1"))
    forge(rig, first.id, body=success)  # the body changed, the genuine sign kept
    stranger = dumps(payment_note("RX_ORDER_2"))
    forge(rig, second.id, body=stranger, sign=signer_of(other_keys).sign(stranger))
    assert apply_notification(rig.rt, first.id) == "deferred_unverified"
    assert apply_notification(rig.rt, second.id) == "deferred_unverified"
    assert [(r.outcome, r.processed_at is None) for r in rig.inbox_rows()] == [("unverified", True)] * 2
    assert [(rig.order(n).state, rig.order(n).version) for n in ("RX_ORDER_1", "RX_ORDER_2")] == [("CREATED", 1)] * 2
    assert rig.rows(transitions) == []
    assert [(a.kind, a.entity_id) for a in rig.rows(anomalies)] == [("unverified_notification", first.id),
                                                                   ("unverified_notification", second.id)]
    assert {r.type for r in rig.rows(outbox)} == {"anomaly.detected"}


def test_a_forged_row_with_a_json_job_changes_nothing(rig: Rig) -> None:
    """A row inserted straight into the store plus its job on the queue: the worker runs it, and it waits unverified."""
    rig.create_order("RX_ORDER_1")
    raw = dumps(payment_note("RX_ORDER_1"))
    with write(rig.rt.engine) as conn:
        entry_id, _new, _done = inbox_store.record(conn, kind="payment", ref="RX_ORDER_1", key="forged-1", body=raw,
                                                   sign="A" * 344, now=rig.order("RX_ORDER_1").created_at)
    rig.rt.enqueuer.apply_notification(entry_id)
    rig.drain()
    [row] = rig.inbox_rows()
    assert (row.outcome, row.processed_at) == ("unverified", None)
    assert (rig.order("RX_ORDER_1").state, rig.order("RX_ORDER_1").version) == ("CREATED", 1)
    assert rig.rows(transitions) == [] and [a.kind for a in rig.rows(anomalies)] == ["unverified_notification"]


class Canary:
    """Unpickling this creates a file: proof that a pickle was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.path), "w")


def test_a_pickled_job_is_not_run_by_the_json_worker(rig: Rig, tmp_path: Path) -> None:
    """Jobs pushed with rq's default pickle serializer fail to load in the product's worker: nothing runs."""
    rig.create_order("RX_ORDER_1")
    raw = dumps(payment_note("RX_ORDER_1"))
    with write(rig.rt.engine) as conn:  # a genuine row the pickled job would apply if it ever ran
        entry_id, _new, _done = inbox_store.record(conn, kind="payment", ref="RX_ORDER_1", key="genuine-1", body=raw,
                                                   sign=rig.signer.sign(raw), now=rig.order("RX_ORDER_1").created_at)
    canary = tmp_path / "unpickled"
    pickled = Queue(QUEUE_NAME, connection=rig.rt.redis)  # rq's default serializer: pickle
    assert pickled.serializer is DefaultSerializer and DefaultSerializer.loads is pickle.loads
    applying = pickled.enqueue("worker.jobs.apply_notification", entry_id)
    payload = pickled.enqueue("worker.jobs.apply_notification", Canary(canary))
    build_worker(rig.rt).work(burst=True)  # the product's worker, exactly as `checus-worker work` builds it
    assert not canary.exists()
    assert sorted(pickled.failed_job_registry.get_job_ids()) == sorted([applying.id, payload.id])
    [row] = rig.inbox_rows()
    assert row.processed_at is None and row.outcome is None
    assert (rig.order("RX_ORDER_1").state, rig.order("RX_ORDER_1").version) == ("CREATED", 1)
    assert rig.rows(transitions) == []
