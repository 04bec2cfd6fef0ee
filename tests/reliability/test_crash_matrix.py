"""The crash-point matrix (target 2): every job type x every crash point relevant to it.

Each cell prepares one record, runs the job in a **separate process** with ``CHECUS_CRASH_AT``
armed (``python -c`` calling ``worker.jobs.<job>`` with a runtime built from the environment,
as a worker would), and checks that it died with 137 exactly there. The job and everything rq
knew about it are then thrown away (as if the worker died with it and Redis lost the job), so
only the product's own healing is left: the scheduler's due polls and the sweeper. The system
runs to quiescence (after the dead process's lock lapses) and each cell must converge to the
gateway's truth with no double effect: one creation per outTradeNo/outRefundNo in the
simulator's ledger, each event id received (repeats only with the same id), a legal and
contiguous audit history, and only the anomalies the cell provoked.

All cells crash concurrently against one embedded stack (SQLite, a real Redis, the simulator
and the receiver on threads), each on its own order, so the lock TTL is waited out once. The
receiver's ``before_ack`` point needs the receiver itself to die: it has its own test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from rq.registry import ScheduledJobRegistry

from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.devtools.demo.stack import EmbeddedStack
from worker.flows import notifications, polls
from worker.runtime import Runtime
from worker.runtime.queueing import make_queue
from worker.service import PaymentService
from worker.store.db import read
from worker.store.inbox import SHARDS, shard_of
from worker.store.repo import find_order, find_refund
from worker.store.schema import inbox

from .checker import check, load_snapshot
from .cluster import PASS_THROUGH, REPO
from .conftest import note
from .procs import Supervisor
from .simctl import SimControl
from .sinks import EVENT_LOG_VARIABLE, FileSink

# The one read-decide-write path (no lock), a poll (its lock, its query, then that path), and a send: the
# claim's write, the claim committed and nothing sent, the answer in hand, then the answer's write (the
# second time those points are reached). A point "name:n" dies the n-th time the point is reached.
WRITE = ("before_cas", "after_outbox", "after_commit")
POLL = ("after_lock", "after_gateway_call", *WRITE)
SEND = ("before_cas", "after_claim", "after_gateway_call", "before_cas:2", "after_outbox:2", "after_commit:2")
RUN_JOB = "import sys; from worker import jobs; getattr(jobs, sys.argv[1])(*map(int, sys.argv[2:]))"


@dataclass(frozen=True, slots=True)
class Cell:
    job: str
    scenario: str
    point: str

    @property
    def name(self) -> str:
        return f"{self.job}-{self.scenario}-{self.point}"


CELLS = (
    *(Cell("apply_notification", "payment", p) for p in WRITE),
    *(Cell("apply_notification", "refund", p) for p in WRITE),
    *(Cell("apply_notification", "contradiction", p) for p in WRITE),
    *(Cell("poll_order", "paid", p) for p in POLL),
    *(Cell("poll_refund", "refunded", p) for p in POLL),
    *(Cell("submit_refund", "new", p) for p in SEND),
    *(Cell("resubmit_order", "lost", p) for p in SEND),
    Cell("deliver_events", "undelivered", "after_event_delivery"),
    # The batched applier: payment rows in one transaction without a lock, the rest one at a time.
    *(Cell("apply_pending", "payment", p) for p in ("after_outbox", "after_commit")),
    *(Cell("apply_pending", "refund", p) for p in WRITE),
    *(Cell("apply_pending", "contradiction", p) for p in ("after_outbox", "after_commit")),
)
# What each scenario must end as: (order state, refund state or None, anomalies provoked).
EXPECTED: dict[str, tuple[str, str | None, Counter[str]]] = {
    "payment": ("SUCCESS", None, Counter()),
    "refund": ("SUCCESS", "REFUND_SUCCESS", Counter()),
    "contradiction": ("SUCCESS", None, Counter({"success_contradicted": 1})),
    "paid": ("SUCCESS", None, Counter()),
    "refunded": ("SUCCESS", "REFUND_SUCCESS", Counter()),
    "new": ("SUCCESS", "REFUND_PENDING", Counter()),
    "lost": ("PENDING", None, Counter()),
    "undelivered": ("SUCCESS", None, Counter()),
}


@dataclass
class Prepared:
    cell: Cell
    order_no: str
    refund_no: str | None = None
    args: tuple[int, ...] = ()
    exit_code: int | None = None
    output: str = ""


@dataclass
class Lab:
    stack: EmbeddedStack
    sim: SimControl
    sink: FileSink
    root: Path
    cells: dict[str, Prepared] = field(default_factory=dict)
    quiesced_after: float | None = None

    @property
    def rt(self) -> Runtime:
        return self.stack.rt

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
        env.update(self.stack.environment(notify_base_url=self.stack.receiver.base_url))
        env.update({"CHECUS_EVENT_HANDLER": "tests.reliability.sinks:record_event",
                    EVENT_LOG_VARIABLE: str(self.sink.path), "PYTHONUNBUFFERED": "1", **extra})
        return env


# -- preparing the cells ---------------------------------------------------------------------------

def _pay(lab: Lab, no: str, amount: str = "40.00") -> None:
    result = lab.stack.service.create_card_payment(out_trade_no=no, amount=Decimal(amount), currency="USD",
                                                   user_id="crash", subject="crash",
                                                   front_callback_url="https://shop.test/return")
    assert result.state == "PENDING", result


def _order_id(lab: Lab, no: str) -> int:
    with read(lab.rt.engine) as conn:
        order = find_order(conn, no)
    assert order is not None
    return order.id


def _refund_id(lab: Lab, no: str) -> int:
    with read(lab.rt.engine) as conn:
        refund = find_refund(conn, no)
    assert refund is not None
    return refund.id


def _inbox_row(lab: Lab, ref: str, status: str, timeout: float = 15.0) -> int:
    """The inbox row of the notification the simulator is sending for ``ref`` (delivered on its thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with read(lab.rt.engine) as conn:
            rows = conn.execute(sa.select(inbox.c.id, inbox.c.dedupe_key).where(inbox.c.ref == ref)).all()
        for row in rows:
            if f":{status}:" in row.dedupe_key:
                return int(row.id)
        time.sleep(0.02)
    raise AssertionError(f"no {status} notification for {ref} reached the inbox")


def _settle(lab: Lab, done: Callable[[], bool], what: str) -> None:
    assert lab.stack.settle(done, timeout=30), f"setup did not settle: {what}"


def _state(lab: Lab, no: str, refund: bool = False) -> str | None:
    with read(lab.rt.engine) as conn:
        record = find_refund(conn, no) if refund else find_order(conn, no)
    return record.state if record else None


def _number(prefix: str, shard: int | None) -> str:
    """A record number beginning with ``prefix`` whose notifications land in ``shard``."""
    for k in range(1000):
        candidate = f"{prefix}S{k:03d}"
        if shard is None or shard_of(candidate) == shard:
            return candidate
    raise AssertionError(f"no number for shard {shard}")


def prepare(lab: Lab) -> None:
    """Base states first (draining is allowed), then each cell's trigger (nothing may run after it)."""
    shards = iter(range(1, SHARDS))
    for i, cell in enumerate(CELLS):
        # apply_pending takes every due row of its shard: each such cell gets a shard of its own, and
        # the apply_notification cells share shard 0, so no crashing job can take another cell's row.
        shard = next(shards) if cell.job == "apply_pending" else 0 if cell.job == "apply_notification" else None
        notified_by_refund = cell.scenario in ("refund", "refunded", "new")
        prepared = Prepared(cell, order_no=_number(f"CM{i:02d}", None if notified_by_refund else shard))
        if notified_by_refund:
            prepared.refund_no = _number(f"CMR{i:02d}", shard)
        lab.cells[cell.name] = prepared
        if cell.scenario != "lost":
            _pay(lab, prepared.order_no)
        if cell.scenario in ("refund", "refunded", "new", "contradiction"):
            assert lab.sim.complete_order(prepared.order_no, "SUCCESS") == 200
    paid = [p for p in lab.cells.values() if p.cell.scenario in ("refund", "refunded", "new", "contradiction")]
    _settle(lab, lambda: all(_state(lab, p.order_no) == "SUCCESS" for p in paid), "orders paid")
    for p in paid:
        if p.cell.scenario in ("refund", "refunded"):
            assert p.refund_no is not None
            lab.stack.service.refund(p.order_no, Decimal("15.00"), out_refund_no=p.refund_no)
    refunding = [p for p in paid if p.cell.scenario in ("refund", "refunded")]
    _settle(lab, lambda: all(_state(lab, p.refund_no or "", refund=True) == "REFUND_PENDING" for p in refunding),
            "refunds accepted")
    _settle(lab, lab.stack.idle, "queue empty")
    for p in lab.cells.values():
        _trigger(lab, p)


def _trigger(lab: Lab, p: Prepared) -> None:
    scenario = p.cell.scenario
    if scenario in ("payment", "undelivered"):
        assert lab.sim.complete_order(p.order_no, "SUCCESS") == 200
        entry = _inbox_row(lab, p.order_no, "SUCCESS")
        if scenario == "undelivered":  # applied here: its event waits in the outbox for the crashing delivery
            assert notifications.apply_notification(lab.rt, entry) == "applied"
        p.args = _row_or_shard(p, entry, p.order_no) if scenario == "payment" else ()
    elif scenario == "contradiction":
        assert lab.sim.complete_order(p.order_no, "FAILED", force=True) == 200
        p.args = _row_or_shard(p, _inbox_row(lab, p.order_no, "FAILED"), p.order_no)
    elif scenario == "refund":
        assert p.refund_no is not None and lab.sim.complete_refund(p.refund_no, "REFUND_SUCCESS") == 200
        p.args = _row_or_shard(p, _inbox_row(lab, p.refund_no, "REFUND_SUCCESS"), p.refund_no)
    elif scenario == "paid":
        assert lab.sim.complete_order(p.order_no, "SUCCESS", notify=False) == 200
        p.args = (_order_id(lab, p.order_no),)
    elif scenario == "refunded":
        assert p.refund_no is not None and lab.sim.complete_refund(p.refund_no, "REFUND_SUCCESS", notify=False) == 200
        p.args = (_refund_id(lab, p.refund_no),)
    elif scenario == "new":
        assert p.refund_no is not None
        lab.stack.service.refund(p.order_no, Decimal("15.00"), out_refund_no=p.refund_no)
        p.args = (_refund_id(lab, p.refund_no),)
    elif scenario == "lost":
        _lose_the_create(lab, p)


def _row_or_shard(p: Prepared, entry: int, ref: str) -> tuple[int, ...]:
    return (shard_of(ref),) if p.cell.job == "apply_pending" else (entry,)


def _lose_the_create(lab: Lab, p: Prepared) -> None:
    """A create the gateway never received: UNKNOWN, then (past the grace) CREATED and owed a resubmit."""
    lab.sim.set_faults({"endpoints": {"orderAndPay": {"drop_rate": 1, "drop_applies_effect": False}}})
    try:
        result = lab.stack.service.create_card_payment(
            out_trade_no=p.order_no, amount=Decimal("40.00"), currency="USD", user_id="crash", subject="crash",
            front_callback_url="https://shop.test/return")
    finally:
        lab.sim.clear_faults()
    assert result.state == "UNKNOWN"
    order_id = _order_id(lab, p.order_no)
    time.sleep(lab.rt.timers.not_found_grace + 0.1)
    polls.poll_order(lab.rt, order_id)
    assert _state(lab, p.order_no) == "CREATED"
    p.args = (order_id,)


def forget_queued_jobs(lab: Lab) -> None:
    """The crashed worker took its job with it, and Redis forgot the rest: only the product's healing is left."""
    queue = make_queue(lab.rt.redis)
    queue.empty()  # type: ignore[no-untyped-call]
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    for job_id in scheduled.get_job_ids():
        scheduled.remove(job_id, delete_job=True)


def crash_all(lab: Lab) -> None:
    procs: list[tuple[Prepared, subprocess.Popen[bytes]]] = []
    for p in lab.cells.values():
        env = lab.env(CHECUS_CRASH_AT=p.cell.point if ":" in p.cell.point else f"{p.cell.point}:1")
        argv = [sys.executable, "-c", RUN_JOB, p.cell.job, *map(str, p.args)]
        procs.append((p, subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True)))
    for p, proc in procs:
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, _ = proc.communicate(timeout=10)
        p.exit_code, p.output = proc.returncode, out.decode(errors="replace")[-2000:]
        (lab.root / f"{p.cell.name}.log").write_text(p.output)


def converged(lab: Lab, p: Prepared) -> bool:
    order_state, refund_state, _ = EXPECTED[p.cell.scenario]
    if _state(lab, p.order_no) != order_state:
        return False
    return refund_state is None or _state(lab, p.refund_no or "", refund=True) == refund_state


def quiesce(lab: Lab, timeout: float = 90.0) -> None:
    """Wait out the dead processes' locks, then run the scheduler, the sweeper and the jobs until all is still."""
    redis = lab.rt.redis
    lapse = time.monotonic() + lab.rt.timers.lock_ttl + 2
    while redis.keys("checus:lock:order:*") and time.monotonic() < lapse:
        time.sleep(0.1)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        lab.stack.drain()
        if all(converged(lab, p) for p in lab.cells.values()) and lab.stack.idle() and _outbox_empty(lab):
            lab.quiesced_after = time.monotonic() - began
            return
        time.sleep(0.05)


def _outbox_empty(lab: Lab) -> bool:
    from worker.store.schema import outbox

    with read(lab.rt.engine) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(outbox)
                            .where(outbox.c.delivered_at.is_(None))).scalar_one() == 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("crash-matrix")
    redis = RedisServer(root / "redis").start()
    sink = FileSink(root / "events.jsonl")
    stack = EmbeddedStack(redis_url=redis.url, database_url=f"sqlite:///{root / 'store.db'}", time_scale=0.01,
                          event_sinks=(sink,))
    try:
        stack.start()
        lab = Lab(stack=stack, sim=SimControl(stack.sim.base_url), sink=sink, root=root)
        began = time.monotonic()
        prepare(lab)
        forget_queued_jobs(lab)
        crash_all(lab)
        quiesce(lab)
        note(f"crash matrix: {len(CELLS)} cells crashed concurrently, quiet {lab.quiesced_after} s after the "
             f"locks lapsed, {time.monotonic() - began:.0f} s in all; logs in {root}")
        yield lab
    finally:
        stack.stop()
        redis.kill9()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_crash_point_converges_without_double_effect(lab: Lab, cell: Cell) -> None:
    """Killed at this point, the job's work is finished by the system, once, as the gateway says."""
    p = lab.cells[cell.name]
    assert p.exit_code == 137, f"the job did not die at {cell.point} (exit {p.exit_code}): {p.output}"
    order_state, refund_state, anomalies = EXPECTED[cell.scenario]
    assert _state(lab, p.order_no) == order_state
    if refund_state is not None:
        assert _state(lab, p.refund_no or "", refund=True) == refund_state
    report = check(load_snapshot(lab.rt.engine, lab.sim, lab.sink.deliveries()), scope={p.order_no},
                   expected_anomalies=anomalies, expect_terminal=False)
    assert report.ok, report.summary()
    if cell.point == "after_event_delivery":  # delivered, died before marking it: delivered again, same id
        ids = Counter(d.event_id for d in lab.sink.deliveries() if p.order_no in d.event_id)
        assert ids and max(ids.values()) >= 2, ids


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_receiver_dies_before_the_ack_and_the_retry_applies_once(redis_url: str, tmp_path: Path) -> None:
    """The receiver keeps and enqueues a notification, then dies before answering: Checus retries
    on its ladder, the restarted receiver acknowledges the retry, and the fact is applied once."""
    sink = FileSink(tmp_path / "events.jsonl")
    stack = EmbeddedStack(redis_url=redis_url, database_url=f"sqlite:///{tmp_path / 'store.db'}", time_scale=0.01,
                          event_sinks=(sink,)).start()
    sup = Supervisor(tmp_path / "logs", cwd=REPO)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
        env.update(stack.environment(notify_base_url=url))
        argv = [sys.executable, "-m", "worker", "web", "--port", str(port)]
        sup.start("web", argv, {**env, "CHECUS_CRASH_AT": "before_ack"})
        assert sup.wait_until(lambda: _healthy(url), 30)
        rt = Runtime(settings=stack.settings.with_overrides(notify_base_url=url), engine=stack.rt.engine,
                     redis=stack.rt.redis, timers=stack.rt.timers)
        assert PaymentService(rt).create_card_payment(
            out_trade_no="CM_ACK", amount=Decimal("9.00"), currency="USD", user_id="crash", subject="ack",
            front_callback_url="https://shop.test/return").state == "PENDING"
        sim = SimControl(stack.sim.base_url)
        assert sim.complete_order("CM_ACK", "SUCCESS") == 200
        proc = sup.procs["web"].popen
        assert proc is not None and proc.wait(timeout=30) == 137, "the receiver did not die before the ack"
        sup.procs["web"].env = env  # the same receiver again, no crash armed (as a process manager restarts it)
        sup.procs["web"].expected_down = True
        sup.restart("web")
        assert sup.wait_until(lambda: _healthy(url), 30)
        assert stack.settle(lambda: _acked(sim, "CM_ACK"), timeout=60), "Checus's retry was never acknowledged"
        assert stack.settle(lambda: _state_of(stack, "CM_ACK") == "SUCCESS", timeout=30)
        stack.settle(lambda: False, timeout=1.0)
        attempts = [a for a in sim.notifications()["attempts"] if a["key"] == "CM_ACK"]
        with read(stack.rt.engine) as conn:
            rows = conn.execute(sa.select(inbox.c.processed_at).where(inbox.c.ref == "CM_ACK")).all()
        assert len(attempts) >= 2 and not attempts[0]["acked"] and attempts[-1]["acked"], attempts
        assert len(rows) == 1 and rows[0].processed_at is not None
        report = check(load_snapshot(stack.rt.engine, sim, sink.deliveries()), scope={"CM_ACK"})
        assert report.ok, report.summary()
    finally:
        sup.cleanup()
        stack.stop()


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _acked(sim: SimControl, key: str) -> bool:
    return any(a["acked"] for a in sim.notifications()["attempts"] if a["key"] == key)


def _state_of(stack: EmbeddedStack, no: str) -> str | None:
    with read(stack.rt.engine) as conn:
        order = find_order(conn, no)
    return order.state if order else None
