"""The receiver's inbox writer thread is supervised: if its loop dies it is restarted at once, and
``/healthz`` says so; a notification never waits out the 10 s commit timeout for a dead thread."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_receiver_harness import ACK, Rig, payment_note
from worker.receiver.inbox_writer import InboxWriter, _Item


def test_a_writer_thread_that_dies_is_restarted_and_notifications_keep_flowing(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception escapes the writer's loop: the batch it held gets a prompt 503, the next notification a
    prompt 200, and /healthz reports the writer up after one restart."""
    assert rig.deliver(payment_note("RX_W_1")).content == ACK  # the writer thread is running
    real = InboxWriter._write
    died: list[int] = []

    def dying(self: InboxWriter, batch: list[_Item]) -> None:
        if not died:
            died.append(len(batch))
            raise RuntimeError("injected into the writer's loop")
        real(self, batch)

    monkeypatch.setattr(InboxWriter, "_write", dying)
    started = time.monotonic()
    lost = rig.deliver(payment_note("RX_W_2"))
    assert died and lost.status_code == 503 and time.monotonic() - started < 3  # not kept: Checus retries
    started = time.monotonic()
    assert rig.deliver(payment_note("RX_W_3")).content == ACK
    assert time.monotonic() - started < 3
    assert rig.deliver(payment_note("RX_W_2")).content == ACK  # Checus's retry of the lost one
    assert [r.ref for r in rig.inbox_rows()] == ["RX_W_1", "RX_W_3", "RX_W_2"]
    health = rig.http.get(rig.url("/healthz"))
    assert (health.status_code, health.json()) == (
        200, {"store": "ok", "redis": "ok", "inbox_writer": "ok", "inbox_writer_restarts": 1})


def test_healthz_is_503_while_the_writer_is_dead_and_not_restarted(rig: Rig,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer whose thread is gone and whose restart failed: /healthz names it until a restart succeeds."""
    assert rig.deliver(payment_note("RX_W_4")).content == ACK
    monkeypatch.setattr(InboxWriter, "_restart", lambda self: None)  # the restart itself fails

    def dying(self: InboxWriter, batch: list[_Item]) -> None:
        raise RuntimeError("injected into the writer's loop")

    with monkeypatch.context() as patched:
        patched.setattr(InboxWriter, "_write", dying)
        assert rig.deliver(payment_note("RX_W_5")).status_code == 503
    deadline = time.monotonic() + 3
    while (health := rig.http.get(rig.url("/healthz"))).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (health.status_code, health.json()["inbox_writer"]) == (503, "down")
    monkeypatch.undo()  # restarts work again: the next notification brings the writer back
    assert rig.deliver(payment_note("RX_W_5")).content == ACK
    assert rig.http.get(rig.url("/healthz")).json()["inbox_writer"] == "ok"
