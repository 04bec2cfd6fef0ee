"""The load generator: Debian's ``wrk`` with a Lua script that replays pre-signed requests once each.

Why wrk: on a 2-core machine the client competes with the server for CPU, and a Python client
costs far more per request (an asyncio httpx client tops out near 190 req/s). wrk is C with
LuaJIT; the script builds every request once at start, so a request costs a few µs of client CPU.

Why one connection per wrk thread (``-t C -c C``): wrk's ``response()`` hook does not say which
request it answers, but a thread with a single keep-alive connection alternates strictly
``request() → response()``, so each response is matched to its request. That gives per-request
latency (exact percentiles, not wrk's histogram) and the moment each notification was
acknowledged, which the notification→commit latency needs. Each thread writes
``seq sent_µs acked_µs status`` lines; times are ``CLOCK_REALTIME`` µs minus a base the bench
passes in, the same clock the workers stamp ``transitions.at`` with.

Fixed-rate mode: ``delay()`` holds each request until its slot on a per-thread schedule
(threads offset so arrivals interleave). wrk starts a request's clock after the delay, so each
record also carries its slot: when the server falls behind, latency measured from the slot shows
it (no coordinated omission), where the service time alone would not. wrk's main thread sleeps for ``-d`` even when
every thread is done, so the bench interrupts it (SIGINT) once every thread has left its
``done-N`` file; ``-d`` remains the time bound.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local base_us = 0
local function now_us()
  ffi.C.clock_gettime(0, ts)
  return (tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)) - base_us
end

local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local reqs, seqs, n, idx, sent, intended, slot, out, dir, interval, next_at
function init(args)
  dir = args[1]
  local path, rate, nthreads = args[2], tonumber(args[3]), tonumber(args[4])
  base_us = tonumber(args[5])
  local start_us = tonumber(args[6])
  reqs, seqs = {}, {}
  for line in io.lines(dir .. "/plan-" .. tid .. ".tsv") do
    local seq, sign, body = line:match("^(%d+)\t([^\t]+)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json", ["sign"] = sign}, body)
    seqs[#seqs + 1] = seq
  end
  n, idx = #reqs, 1
  out = io.open(dir .. "/acks-" .. tid .. ".tsv", "w")
  if rate > 0 then
    interval = 1000000 / rate
    next_at = start_us + tid * interval / nthreads
  end
end

function delay()
  if interval == nil then return 0 end
  slot = next_at
  next_at = next_at + interval
  local wait = slot - now_us()
  if wait <= 0 then return 0 end
  return math.floor(wait / 1000)
end

function request()
  sent = now_us()
  intended = sent
  if slot ~= nil and slot < sent then intended = slot end
  return reqs[idx] or reqs[n]
end

function response(status, headers, body)
  if idx > n then return end
  out:write(string.format("%s\t%d\t%d\t%d\t%d\n", seqs[idx], sent, now_us(), status, intended))
  idx = idx + 1
  if idx % 250 == 0 then
    local p = io.open(dir .. "/progress-" .. tid, "w"); p:write(idx - 1); p:close()
  end
  if idx > n then
    out:close()
    local d = io.open(dir .. "/done-" .. tid, "w"); d:write(n); d:close()
    wrk.thread:stop()
  end
end
"""


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    sent_us: int  # relative to the run's base, CLOCK_REALTIME µs
    acked_us: int
    status: int
    intended_us: int  # fixed rate: its slot on the schedule (a late slot is not hidden); else = sent_us

    @property
    def latency_ms(self) -> float:
        """Service time: request written → response read."""
        return (self.acked_us - self.sent_us) / 1000

    @property
    def scheduled_latency_ms(self) -> float:
        """From the moment the schedule meant to send it: includes waiting for a free connection, so a
        server slower than the rate shows as latency instead of silently lowering the rate."""
        return (self.acked_us - self.intended_us) / 1000


@dataclass(slots=True)
class LoadResult:
    acks: list[Ack]
    planned: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    wrk_output: str = ""

    @property
    def ok(self) -> list[Ack]:
        return [a for a in self.acks if a.status == 200]

    @property
    def span_seconds(self) -> float:
        """First request sent to last ack received."""
        if not self.acks:
            return 0.0
        return (max(a.acked_us for a in self.acks) - min(a.sent_us for a in self.acks)) / 1e6


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk, or run .ci/system-deps)")
    return binary


def write_plan(directory: Path, requests: list[tuple[int, str, bytes]], threads: int) -> int:
    """Deal ``(seq, sign, body)`` round-robin to ``threads`` files; returns the thread count used."""
    directory.mkdir(parents=True, exist_ok=True)
    threads = max(1, min(threads, len(requests)))
    handles = [open(directory / f"plan-{t}.tsv", "wb") for t in range(threads)]  # noqa: SIM115
    try:
        for i, (seq, sign, body) in enumerate(requests):
            handles[i % threads].write(b"%d\t%s\t%s\n" % (seq, sign.encode("ascii"), body))
    finally:
        for handle in handles:
            handle.close()
    (directory / "load.lua").write_text(LUA)
    return threads


def run_wrk(url: str, directory: Path, *, threads: int, planned: int, base_us: int, rate: float = 0.0,
            time_limit: float = 120.0, on_progress: Callable[[int], None] | None = None) -> LoadResult:
    """Replay the plan in ``directory`` against ``url`` (scheme://host:port/path); bounded by ``time_limit``."""
    for stale in (*directory.glob("done-*"), *directory.glob("progress-*"), *directory.glob("acks-*")):
        stale.unlink()
    host, path = re.match(r"^(https?://[^/]+)(/.*)$", url).groups()  # type: ignore[union-attr]
    start_us = int(time.time() * 1e6) - base_us + 300_000  # threads need a moment to load their plans
    per_thread_rate = rate / threads if rate > 0 else 0
    argv = [wrk_binary(), "-t", str(threads), "-c", str(threads), "-d", f"{max(1, int(time_limit))}s",
            "--timeout", "30s", "-s", str(directory / "load.lua"), host, "--", str(directory), path,
            repr(per_thread_rate), str(threads), str(base_us), str(start_us)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # noqa: S603
                               start_new_session=True)
    deadline = time.monotonic() + time_limit + 15
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if len(list(directory.glob("done-*"))) >= threads:
                process.send_signal(signal.SIGINT)
                break
            if on_progress is not None:
                on_progress(_progress(directory))
            time.sleep(0.1)
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode(errors="replace") if output else ""
    acks = read_acks(directory)
    if not acks and process.returncode not in (0, None):
        raise RuntimeError(f"wrk failed ({process.returncode}): {text.strip()[-500:]}")
    return LoadResult(acks=acks, planned=planned, socket_errors=_socket_errors(text),
                      wrk_output=text)


def _progress(directory: Path) -> int:
    total = 0
    for path in directory.glob("progress-*"):
        try:
            total += int(path.read_text() or 0)
        except (OSError, ValueError):
            continue
    return total


def read_acks(directory: Path) -> list[Ack]:
    acks: list[Ack] = []
    for path in sorted(directory.glob("acks-*.tsv")):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 5:
                acks.append(Ack(*map(int, parts)))
    acks.sort(key=lambda a: a.sent_us)
    return acks


def _socket_errors(text: str) -> dict[str, int]:
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if not match:
        return {}
    return dict(zip(("connect", "read", "write", "timeout"), map(int, match.groups()), strict=True))
