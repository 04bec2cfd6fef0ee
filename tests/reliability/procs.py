"""A process supervisor for the reliability harness: start, kill -9, pause, stop and restart, by pid.

Every process gets its own session (so its own process group) and writes stdout and stderr to
one log file per role, appended across restarts, kept for the checker and a later secrets scan.
rq's forking worker runs each job in a *work horse* that calls ``os.setpgrp()``: it is found
with ``pgrep -P <worker pid>`` (the worker's other child, rq's scheduler, stays in the worker's
group, so the horse is the child that leads its own group). Killing "the worker" kills its
process group (the parent and its scheduler child), never the horse; killing "both" also kills
the horse. Nothing is ever killed by name: only pids this supervisor started or saw as horses,
each checked against its start time so a recycled pid is never hit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class SupervisorError(RuntimeError):
    pass


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie is gone for every purpose here
        return None
    return int(fields[19])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``pgrep -P``)."""
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5, check=False)
    return [int(line) for line in result.stdout.split()]


@dataclass(frozen=True, slots=True)
class Pid:
    """A pid pinned to its start time: signals go only to that very process."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> Pid | None:
        started = start_time(pid)
        return cls(pid, started) if started is not None else None

    def alive(self) -> bool:
        return start_time(self.pid) == self.started

    def send(self, sig: signal.Signals) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def signal_group(self, sig: signal.Signals) -> bool:
        """Signal the process group this pid leads (only when it still leads it)."""
        if not self.alive():
            return False
        try:
            if os.getpgid(self.pid) != self.pid:
                return self.send(sig)
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


@dataclass
class Managed:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    pid: Pid | None = None
    generation: int = 0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    expected_down: bool = False  # killed or stopped on purpose: the keeper leaves it alone
    unexpected_exits: list[int] = field(default_factory=list)  # exit codes of deaths nobody asked for


@dataclass(frozen=True, slots=True)
class KillRecord:
    """One fault the supervisor injected, for the run's report."""

    kind: str  # horse | parent | both | process | pause | stop
    name: str
    at: float  # time.monotonic()
    pids: tuple[int, ...]
    job_id: str | None = None
    detail: str = ""


class Supervisor:
    def __init__(self, log_dir: Path, *, cwd: Path | None = None) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Managed] = {}
        self.faults: list[KillRecord] = []
        self._seen: set[Pid] = set()  # every pid ever started or seen as a horse, for cleanup
        self._lock = threading.Lock()
        self._roles = threading.RLock()  # spawning, restarting, killing and the keeper, one at a time
        self._timers: list[threading.Timer] = []
        self._keeper_stop = threading.Event()
        self._keeper: threading.Thread | None = None

    # -- starting ---------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Managed:
        if name in self.procs and self.running(name):
            raise SupervisorError(f"{name} is already running")
        proc = self.procs.get(name) or Managed(name=name, argv=argv, env=env, log_path=self.log_dir / f"{name}.log")
        self.procs[name] = proc
        self._spawn(proc)
        return proc

    def _spawn(self, proc: Managed) -> None:
        with self._roles:  # never two spawns of one role, nor the keeper looking at a half-made one
            proc.generation += 1
            log: IO[bytes]
            with open(proc.log_path, "ab") as log:
                log.write(f"\n=== {proc.name} generation {proc.generation} at {time.time():.3f}\n".encode())
                log.flush()
                popen = subprocess.Popen(proc.argv, env=proc.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
            pid = Pid.of(popen.pid)
            if pid is None:
                raise SupervisorError(f"{proc.name} exited at once")
            proc.popen, proc.pid, proc.expected_down = popen, pid, False
            with self._lock:
                self._seen.add(pid)

    def restart(self, name: str) -> Managed:
        proc = self.procs[name]
        with self._roles:
            if self.running(name):
                raise SupervisorError(f"{name} is still running")
            self._reap(proc)
            proc.restarts += 1
            self._spawn(proc)
        return proc

    def restart_later(self, name: str, delay: float) -> None:
        timer = threading.Timer(delay, self._restart_quietly, args=(name,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _restart_quietly(self, name: str) -> None:
        with self._roles:
            if not self.running(name):
                self.restart(name)

    # -- looking ----------------------------------------------------------------------------

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return bool(proc and proc.popen and proc.popen.poll() is None)

    def pid(self, name: str) -> int:
        proc = self.procs[name]
        if proc.pid is None:
            raise SupervisorError(f"{name} was never started")
        return proc.pid.pid

    def horse(self, name: str) -> Pid | None:
        """The work horse of a forking worker right now (the child that leads its own group)."""
        proc = self.procs[name]
        if proc.pid is None or not proc.pid.alive():
            return None
        for child in children(proc.pid.pid):
            try:
                if os.getpgid(child) != child:
                    continue
            except ProcessLookupError:
                continue
            pinned = Pid.of(child)
            if pinned is not None:
                with self._lock:
                    self._seen.add(pinned)
                return pinned
        return None

    def wait_for_horse(self, name: str, timeout: float) -> Pid | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            horse = self.horse(name)
            if horse is not None:
                return horse
            time.sleep(0.005)
        return None

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(interval)
        return check()

    # -- faults -----------------------------------------------------------------------------

    def kill_horse(self, name: str, horse: Pid, *, job_id: str | None = None) -> KillRecord:
        horse.send(signal.SIGKILL)
        return self.record("horse", name, (horse.pid,), job_id)

    def kill_parent(self, name: str, *, job_id: str | None = None) -> KillRecord:
        """kill -9 the worker process (and its process group), leaving a horse to finish alone."""
        proc = self.procs[name]
        assert proc.pid is not None
        with self._roles:
            proc.expected_down = True
            popen = proc.popen
        proc.pid.signal_group(signal.SIGKILL)
        self._reap(proc, popen)
        return self.record("parent", name, (proc.pid.pid,), job_id)

    def kill_both(self, name: str, horse: Pid | None, *, job_id: str | None = None) -> KillRecord:
        proc = self.procs[name]
        assert proc.pid is not None
        with self._roles:
            proc.expected_down = True
            popen = proc.popen
        proc.pid.signal_group(signal.SIGKILL)
        pids = [proc.pid.pid]
        if horse is not None:
            horse.send(signal.SIGKILL)
            pids.append(horse.pid)
        self._reap(proc, popen)
        return self.record("both", name, tuple(pids), job_id)

    def kill9(self, name: str, *, kind: str = "process", job_id: str | None = None) -> KillRecord:
        """kill -9 a whole role (its process group): the receiver, the scheduler, a SimpleWorker."""
        proc = self.procs[name]
        assert proc.pid is not None
        with self._roles:
            proc.expected_down = True
            popen = proc.popen
        proc.pid.signal_group(signal.SIGKILL)
        self._reap(proc, popen)
        return self.record(kind, name, (proc.pid.pid,), job_id)

    def pause(self, name: str, seconds: float, *, job_id: str | None = None) -> KillRecord:
        """SIGSTOP the worker's group and its horse; SIGCONT both after ``seconds`` (on a timer)."""
        proc = self.procs[name]
        assert proc.pid is not None
        horse = self.horse(name)
        targets = [proc.pid] + ([horse] if horse else [])
        for target in targets:
            target.signal_group(signal.SIGSTOP)
        timer = threading.Timer(seconds, self._resume, args=(targets,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return self.record("pause", name, tuple(t.pid for t in targets), job_id, detail=f"{seconds:.1f}s")

    @staticmethod
    def _resume(targets: list[Pid]) -> None:
        for target in targets:
            target.signal_group(signal.SIGCONT)

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        """Graceful stop: SIGTERM to the group, then SIGKILL if it is still there after ``timeout``."""
        proc = self.procs.get(name)
        if proc is None or proc.popen is None or proc.pid is None:
            return None
        proc.expected_down = True
        proc.pid.signal_group(signal.SIGCONT)
        proc.pid.signal_group(signal.SIGTERM)
        try:
            code = proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.pid.signal_group(signal.SIGKILL)
            code = proc.popen.wait(timeout=10)
        proc.exits.append(code)
        return code

    def record(self, kind: str, name: str, pids: tuple[int, ...], job_id: str | None,
                detail: str = "") -> KillRecord:
        record = KillRecord(kind=kind, name=name, at=time.monotonic(), pids=pids, job_id=job_id, detail=detail)
        with self._lock:
            self.faults.append(record)
        return record

    def _reap(self, proc: Managed, popen: subprocess.Popen[bytes] | None = None) -> None:
        """Wait for the death of ``popen`` (by default the role's current process) and record it."""
        popen = popen or proc.popen
        if popen is not None and popen.returncode is None:
            try:
                code = popen.wait(timeout=10)
            except subprocess.TimeoutExpired as exc:
                raise SupervisorError(f"{proc.name} did not die") from exc
            proc.exits.append(code)

    # -- a process manager --------------------------------------------------------------------

    def keep_alive(self, interval: float = 0.5) -> None:
        """Restart any role that dies without being killed, as systemd or Kubernetes would; each such
        death is recorded in ``unexpected_exits`` (a role must survive what the storm does to it)."""
        self._keeper = threading.Thread(target=self._keep, args=(interval,), name="keeper", daemon=True)
        self._keeper.start()

    def _keep(self, interval: float) -> None:
        while not self._keeper_stop.wait(interval):
            for proc in list(self.procs.values()):
                with self._roles:
                    if proc.popen is None or proc.expected_down or proc.popen.poll() is None:
                        continue
                    proc.unexpected_exits.append(int(proc.popen.returncode))
                    proc.restarts += 1
                    self._spawn(proc)

    def unexpected_exits(self) -> dict[str, list[int]]:
        """Roles that died on their own (kept alive or not), with their exit codes."""
        out = {n: list(p.unexpected_exits) for n, p in self.procs.items() if p.unexpected_exits}
        for name, proc in self.procs.items():
            if proc.popen is not None and not proc.expected_down and proc.popen.poll() is not None \
                    and not proc.unexpected_exits:
                out[name] = [int(proc.popen.returncode)]
        return out

    # -- cleanup ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Kill everything this supervisor started or saw, by pid and process group; always safe."""
        self._keeper_stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            seen = list(self._seen)
        for pinned in seen:
            pinned.signal_group(signal.SIGCONT)
            pinned.signal_group(signal.SIGKILL)
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                try:
                    proc.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    sys.stderr.write(f"reliability harness: {proc.name} (pid {proc.popen.pid}) survived SIGKILL\n")
        deadline = time.monotonic() + 5
        while any(p.alive() for p in seen) and time.monotonic() < deadline:
            time.sleep(0.02)
