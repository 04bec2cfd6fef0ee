"""The harness's own moving parts do what the other tests rely on: kill by pid (horse, parent, both),
pause and resume, clean up everything, and restart Redis on the same port with its data."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import redis

from worker.devtools.demo.redis_server import RedisServer

from .procs import Pid, Supervisor, children

# A stand-in for rq's forking worker: a "scheduler" child in the parent's group, and a "horse"
# that leads its own group (rq's horse calls os.setpgrp()); both count ticks into files.
FAKE_WORKER = r"""
import os, sys, time
def tick(path):
    n = 0
    while True:
        n += 1
        with open(path, "w") as f:
            f.write(str(n))
        time.sleep(0.02)
base = sys.argv[1]
if os.fork() == 0:
    tick(base + ".scheduler")
if os.fork() == 0:
    os.setpgrp()
    tick(base + ".horse")
tick(base + ".parent")
"""


def _count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def _start(sup: Supervisor, tmp_path: Path, name: str = "fake") -> Path:
    base = tmp_path / name
    sup.start(name, [sys.executable, "-c", FAKE_WORKER, str(base)], {"PATH": os.environ.get("PATH", "")})
    assert sup.wait_until(lambda: all(_count(Path(f"{base}.{p}")) > 0 for p in ("parent", "horse", "scheduler")), 10)
    return base


def test_the_horse_is_found_and_killed_alone(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    try:
        base = _start(sup, tmp_path)
        horse = sup.horse("fake")
        assert horse is not None and len(children(sup.pid("fake"))) == 2
        sup.kill_horse("fake", horse)
        assert sup.wait_until(lambda: not horse.alive(), 5)
        parent = _count(Path(f"{base}.parent"))
        time.sleep(0.2)
        assert sup.running("fake") and _count(Path(f"{base}.parent")) > parent
    finally:
        sup.cleanup()


def test_killing_the_parent_leaves_the_horse_and_both_kills_both(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    try:
        _start(sup, tmp_path)
        horse = sup.horse("fake")
        assert horse is not None
        sup.kill_parent("fake")
        assert not sup.running("fake") and horse.alive()  # its own process group: it carries on
        sup.restart("fake")
        assert sup.wait_until(lambda: sup.horse("fake") is not None, 10)
        second = sup.horse("fake")
        sup.kill_both("fake", second)
        assert second is not None and sup.wait_until(lambda: not second.alive(), 5) and not sup.running("fake")
        assert [f.kind for f in sup.faults] == ["parent", "both"]
    finally:
        sup.cleanup()
    assert not horse.alive(), "cleanup must kill a horse orphaned by a parent kill"


def test_a_pause_stops_every_process_of_the_worker_then_resumes_it(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    try:
        base = _start(sup, tmp_path)
        sup.pause("fake", 0.6)
        time.sleep(0.1)
        frozen = {p: _count(Path(f"{base}.{p}")) for p in ("parent", "horse", "scheduler")}
        time.sleep(0.3)
        assert {p: _count(Path(f"{base}.{p}")) for p in frozen} == frozen
        time.sleep(0.6)
        assert all(_count(Path(f"{base}.{p}")) > n for p, n in frozen.items())
    finally:
        sup.cleanup()


def test_a_role_that_dies_on_its_own_is_restarted_and_counted(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    try:
        sup.start("dies", [sys.executable, "-c", "import time; time.sleep(0.2); raise SystemExit(3)"], {})
        sup.keep_alive(interval=0.05)
        assert sup.wait_until(lambda: sup.procs["dies"].restarts >= 1, 10)
        assert 3 in sup.unexpected_exits()["dies"]
    finally:
        sup.cleanup()


def test_a_pid_is_never_signalled_once_its_process_is_gone(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    sup.start("short", [sys.executable, "-c", "pass"], {})
    pinned = sup.procs["short"].pid
    assert pinned is not None
    sup.procs["short"].popen.wait(timeout=10)  # type: ignore[union-attr]
    assert not pinned.alive() and not pinned.send(signal.SIGKILL)
    assert Pid.of(pinned.pid) is None or Pid.of(pinned.pid) != pinned
    sup.cleanup()


def test_redis_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        client = redis.Redis(port=server.port, socket_timeout=2)
        client.set("kept", "yes")
        time.sleep(1.2)  # appendfsync everysec
        port = server.port
        server.kill9()
        assert server.process is None
        server.restart()
        assert server.port == port and client.get("kept") == b"yes"
    finally:
        server.kill9()


def test_a_paused_redis_holds_its_clients_until_it_resumes(tmp_path: Path) -> None:
    import signal as signals

    from .procs import Pid

    server = RedisServer(tmp_path / "redis").start()
    try:
        assert server.process is not None
        pinned = Pid.of(server.process.pid)
        assert pinned is not None
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(port=server.port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
        pinned.send(signals.SIGSTOP)
        try:
            client.ping()
            raised = False
        except redis.RedisError:
            raised = True
        pinned.send(signals.SIGCONT)
        assert raised and redis.Redis(port=server.port, socket_timeout=2).ping()
    finally:
        server.kill9()
