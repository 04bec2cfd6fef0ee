"""The stack's processes: started as real subprocesses, each in its own process group, always reaped.

Why process groups: rq's forking worker has work-horse children and uvicorn may too; ending a
process group ends them all, so an interrupted bench leaves nothing behind. ``Supervisor.close``
runs from the runner's ``finally``: SIGTERM to every group, then SIGKILL after a grace period.

Why a sampler thread: peak RSS must be caught while the load runs, not read afterwards, and
the CPU each process used during a phase says which one limits that phase (one core busy in
redis-server means Redis; both cores busy means CPU).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

STOP_GRACE_SECONDS = 10.0
SAMPLE_SECONDS = 0.25


class Supervisor:
    """Named subprocesses with their logs in ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.external: dict[str, int] = {}  # processes started elsewhere that we sample (redis-server)
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is already running")
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                       stdin=subprocess.DEVNULL, process_group=0)
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            _end_group(process)

    def stop_matching(self, prefix: str) -> None:
        names = [n for n in self.processes if n.startswith(prefix)]
        for name in names:  # signal all first, so they shut down in parallel
            _signal_group(self.processes[name], signal.SIGTERM)
        for name in names:
            self.stop(name)

    def close(self) -> None:
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        for name in list(self.processes):
            self.stop(name)

    def pids(self) -> dict[str, int]:
        alive = {n: p.pid for n, p in self.processes.items() if p.poll() is None}
        return {**self.external, **alive}

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"processes exited: {dead} (logs in {self.log_dir})")


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=STOP_GRACE_SECONDS)
    _signal_group(process, signal.SIGKILL)  # stragglers left in the group (work horses)


def wait_http(url: str, *, timeout: float = 30.0, alive: Supervisor | None = None) -> None:
    """Until ``GET url`` answers 200; fails early if a supervised process died."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if alive is not None:
                alive.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _trees(roots: dict[str, int]) -> dict[str, list[psutil.Process]]:
    """Each named root with its descendants, from one scan of the process table (psutil's own
    ``children()`` scans the whole table once per call)."""
    kids: dict[int, list[psutil.Process]] = {}
    everyone: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["ppid"]):
        everyone[proc.pid] = proc
        kids.setdefault(proc.info["ppid"], []).append(proc)
    trees: dict[str, list[psutil.Process]] = {}
    for name, pid in roots.items():
        if pid not in everyone:
            continue
        found, queue = [], [everyone[pid]]
        while queue:
            proc = queue.pop()
            found.append(proc)
            queue.extend(kids.get(proc.pid, []))
        trees[name] = found
    return trees


class Sampler:
    """Peak RSS per process name (a process and its children), sampled on a daemon thread."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def rss(self) -> dict[str, int]:
        """Current RSS in bytes of each supervised process (with its children)."""
        sizes: dict[str, int] = {}
        for name, procs in _trees(self.supervisor.pids()).items():
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            if total:
                sizes[name] = total
        return sizes

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for name, size in self.rss().items():
                self.peak[name] = max(self.peak.get(name, 0), size)


def role_of(name: str) -> str:
    """``work-3`` → ``work``: CPU is reported per role, RSS per process."""
    return name.split("-", 1)[0]


def _ours_in_postgres(proc: psutil.Process, database: str | None) -> bool:
    """The server's shared processes, and backends of our database (their title names it)."""
    try:
        title = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    if database is None:
        return False
    backend = "127.0.0.1(" in title or "[local]" in title
    return not backend or f" {database} " in title


@contextlib.contextmanager
def cpu_meter(supervisor: Supervisor, *, postgres_database: str | None = None) -> Iterator[dict[str, float]]:
    """Fill the yielded dict with the cores each role used over the block (1.0 = one core busy):
    each supervised role, ``postgres`` (its shared processes and our database's backends),
    ``loadgen`` (this process and the wrk it reaped), ``machine`` (every process), and ``other``
    (the machine minus all of ours: anything else running here skews the figures)."""
    def snapshot() -> dict[int, tuple[str, float, float]]:
        seen: dict[int, tuple[str, float, float]] = {}

        def add(proc: psutil.Process, role: str) -> None:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()  # children_*: reaped children, e.g. the fork worker's work horses
                seen[proc.pid] = (role, t.user + t.system + t.children_user + t.children_system, proc.create_time())

        for name, procs in _trees(supervisor.pids()).items():
            for proc in procs:
                add(proc, role_of(name))
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres" and proc.pid not in seen and _ours_in_postgres(proc, postgres_database):
                add(proc, "postgres")
        me = psutil.Process()
        t = me.cpu_times()
        seen[me.pid] = ("loadgen", t.user + t.system + t.children_user + t.children_system, me.create_time())
        return seen

    result: dict[str, float] = {}
    before, machine_before, started, started_at = snapshot(), psutil.cpu_times(), time.monotonic(), time.time()
    yield result
    after, machine_after = snapshot(), psutil.cpu_times()
    wall = max(time.monotonic() - started, 1e-6)
    for pid, (role, cpu, created) in after.items():
        if pid in before:
            used = cpu - before[pid][1]
        elif created >= started_at - 0.01:  # started inside the block (a new backend, a restarted worker)
            used = cpu
        else:  # existed but was not seen at the start: its earlier CPU cannot be told apart
            continue
        result[role] = result.get(role, 0.0) + max(0.0, used) / wall
    busy = sum(getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice", "irq",
                                                                              "softirq", "steal"))
    result["machine"] = busy / wall
    result["other"] = max(0.0, result["machine"] - sum(v for k, v in result.items() if k != "machine"))
    for role in list(result):
        result[role] = round(result[role], 3)
