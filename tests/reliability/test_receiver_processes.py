"""``CHECUS_RECEIVER_PROCESSES=2``: the real ``checus-worker web`` as several processes on one port.

What must hold: every process keeps and acknowledges notifications as a single one does, each
runs with the configured limits (they are set in the process, not inherited), and a process that
dies is replaced while the others go on serving.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
import sqlalchemy as sa

from worker.gateway.signing import PortalKeyPair
from worker.store.db import read
from worker.store.schema import inbox

from .test_slow_and_large_clients import Receiver, assert_serving, web_process, workdir

pytestmark = pytest.mark.slow
PROCESSES = 2
MAX_HEAD = 4096


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, platform_keys: PortalKeyPair) -> Iterator[Receiver]:
    with web_process(workdir(tmp_path_factory, "receiver-processes"), platform_keys,
                     CHECUS_RECEIVER_PROCESSES=str(PROCESSES), CHECUS_RECEIVER_MAX_HEADER_BYTES=str(MAX_HEAD)) as rx:
        yield rx


def serving_processes(rx: Receiver) -> list[psutil.Process]:
    """The supervisor's children that serve (multiprocessing also starts its resource tracker)."""
    found = []
    for proc in psutil.Process(rx.sup.pid("web")).children():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone, or a zombie, meanwhile
            continue
    return found


def wait_for_processes(rx: Receiver, count: int, *, excluding: frozenset[int] = frozenset()) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [p.pid for p in serving_processes(rx)]
        if len(pids) == count and not excluding & set(pids) and rx.healthy():
            return pids
        time.sleep(0.1)
    raise AssertionError(f"expected {count} serving processes, have {[p.pid for p in serving_processes(rx)]}")


def test_notifications_on_many_connections_are_all_kept_once(receiver: Receiver) -> None:
    wait_for_processes(receiver, PROCESSES)
    refs = []
    for _ in range(10):  # fresh connections, so the kernel hands them to either process
        with httpx.Client(timeout=10.0) as client:
            for _ in range(4):
                ref, status, _body, _seconds = receiver.deliver(client, "MP")
                assert status == 200
                refs.append(ref)
    with read(receiver.engine) as conn:
        kept = conn.execute(sa.select(inbox.c.ref).where(inbox.c.ref.like("MP_%"))).scalars().all()
    assert sorted(kept) == sorted(refs)
    log = receiver.log()
    assert log.count('"notification.acked"') >= len(refs) and "uvicorn.access" not in log, "one line per notification"


def test_each_process_applies_the_configured_limits(receiver: Receiver) -> None:
    head = b"X-Big: " + b"a" * (2 * MAX_HEAD)
    for _ in range(2 * PROCESSES):
        with httpx.Client(timeout=10.0) as client:
            response = client.post(receiver.url + "/checus/notify/payment", content=b"{}",
                                   headers={"x-big": head.decode()})
        assert response.status_code == 431


def test_a_killed_process_is_replaced_and_the_others_serve_meanwhile(receiver: Receiver) -> None:
    before = wait_for_processes(receiver, PROCESSES)
    psutil.Process(before[0]).send_signal(signal.SIGKILL)
    assert_serving(receiver)  # the other process answers at once
    after = wait_for_processes(receiver, PROCESSES, excluding=frozenset({before[0]}))
    assert before[1] in after
    assert_serving(receiver)


def test_the_processes_stop_when_their_supervisor_is_killed(tmp_path_factory: pytest.TempPathFactory,
                                                           platform_keys: PortalKeyPair) -> None:
    """kill -9 of the supervisor: its processes stop too (no unmanaged receiver left serving the port)."""
    with web_process(workdir(tmp_path_factory, "receiver-orphans"), platform_keys,
                     CHECUS_RECEIVER_PROCESSES=str(PROCESSES)) as rx:
        children = [psutil.Process(pid) for pid in wait_for_processes(rx, PROCESSES)]
        psutil.Process(rx.sup.pid("web")).send_signal(signal.SIGKILL)
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], f"still running after their supervisor died: {[p.pid for p in alive]}"
        assert not rx.healthy()
