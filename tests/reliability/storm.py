"""The storm: many payments and refunds through a real deployment while a nemesis breaks it.

Theory of operation. ``StormPlan.build(seed, scale)`` draws everything random up front from
one seed (orders, amounts, outcomes, refunds, the fault schedule); the simulator gets the same
seed for its fault draws, so a seed replays the same storm up to thread timing. ``Storm.run``
then drives four things at once against a ``Cluster``:

- the **merchant** creates the orders through ``PaymentService`` (in the test process, with the
  deployment's settings) and refunds them once they are paid, including refunds that must be
  refused (above what is left) and pairs of refunds racing for the same money;
- the **gateway's customers** settle each order through the simulator's control API a little
  after it is created (some notifications are dropped, duplicated or reordered by the
  simulator's fault plan; the query API answers 5xx, times out and lags; some create answers
  carry no code; a resent create or refund meets a repeat answer drawn at random: replayed,
  ORDER_REPEAT with or without data, or refused);
- a **replayer** asks the simulator to redeliver acknowledged notifications until the number
  of deliveries reaches the plan's floor (duplicates after an ack, as Checus does);
- the **nemesis** runs the fault schedule: kill -9 of work horses, worker parents and both
  (rq's 60 s heartbeat floor makes "both" the slowest to heal, so those go first, together),
  SIGSTOP pauses of twice the lock TTL, kill -9 and restart of Redis (AOF), a SIGSTOP pause of
  Redis, and kill -9 of the receiver and the scheduler. Killed processes are restarted a second later, as a process
  manager would.

Then the run waits (bounded) for quiet and the checker compares the store with the gateway.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from worker.runtime import Timers
from worker.service_errors import RefundRefused
from worker.store.db import read
from worker.store.schema import orders

from .cluster import Cluster, ClusterSpec
from .procs import Pid
from .settings import storm_receiver_processes

LOCK_TTL = Timers().lock_ttl
TIME_SCALE = 0.01


@dataclass(frozen=True, slots=True)
class OrderPlan:
    no: str
    amount: Decimal
    outcome: str  # SUCCESS | FAILED | CLOSED
    settle_after: float  # seconds after creation


@dataclass(frozen=True, slots=True)
class RefundPlan:
    no: str
    order: str
    amount: Decimal
    group: str  # single | double | race | overask
    fails: bool = False  # the gateway fails it (comments trigger)


@dataclass(frozen=True, slots=True)
class FaultEvent:
    at: float  # seconds after the storm starts
    kind: str  # both | horse | parent | pause | redis | receiver | scheduler
    target: str


@dataclass(frozen=True)
class StormPlan:
    seed: int
    scale: float
    orders: tuple[OrderPlan, ...]
    refunds: tuple[RefundPlan, ...]
    faults: tuple[FaultEvent, ...]
    deliveries_floor: int
    create_window: float
    pause_seconds: float = 2 * LOCK_TTL
    redis_outage_seconds: float = 3.0
    redis_pause_seconds: float = 3.0
    restart_after: float = 1.0

    @property
    def accepted_refunds(self) -> int:
        """Refunds that must be accepted: every planned one but the over-asks and one of each racing pair."""
        races = sum(1 for r in self.refunds if r.group == "race") // 2
        return sum(1 for r in self.refunds if r.group in ("single", "double")) + races

    def sim_faults(self) -> dict[str, Any]:
        query = {"error_rate": 0.2, "timeout_rate": 0.1, "timeout_seconds": 3}
        return {
            "endpoints": {
                "orderQuery": {**query, "error_code": "http_500"},
                "refundQuery": {**query, "error_code": "http_502"},
                # no_code_rate: Checus created the order but its answer has no code (OutcomeUnknown)
                "orderAndPay": {"timeout_rate": 0.03, "timeout_seconds": 3, "drop_rate": 0.02,
                                "drop_applies_effect": False, "no_code_rate": 0.03},
                "refund": {"timeout_rate": 0.05, "timeout_seconds": 3, "drop_rate": 0.03},
            },
            "notifications": {"duplicate_rate": 0.3, "max_copies": 3, "reorder_window_seconds": 2.0,
                              "drop_rate": 0.05},
            # a resent create or refund meets every reading of a repeat (WIRE.md §25 q. 5-6): the first
            # send's answer replayed, ORDER_REPEAT with or without the record, or another refusal
            "repeat_answer": "random",
            # ...which only happens if a create that took effect is resent: the query lags 6 s behind each
            # order (past the worker's not-found grace and its first poll at this time scale), so an order
            # whose answer had no code is sent again unless its notification came first. (Refunds: their
            # query never lags, so a lost refund answer is settled by query and not resent.)
            "hide_from_query": {"*": 6.0},
        }

    def cluster_spec(self) -> ClusterSpec:
        return ClusterSpec(time_scale=TIME_SCALE, fork_workers=3, simple_workers=2, schedulers=1,
                           sim_seed=self.seed, sim_faults=self.sim_faults(), refund_auto_complete_seconds=100.0,
                           http_read_timeout=1.0, notify_timeout_seconds=5.0, sink_failure_rate=0.05,
                           receiver_processes=storm_receiver_processes())

    @classmethod
    def build(cls, seed: int, scale: float = 1.0) -> StormPlan:
        rng = random.Random(seed)  # noqa: S311 - a replayable plan, not a secret
        n_orders, n_refunds = round(600 * scale), round(150 * scale)
        create_window = 20.0 * scale
        plans = []
        for i in range(n_orders):
            outcome = rng.choices(["SUCCESS", "FAILED", "CLOSED"], weights=[75, 15, 10])[0]
            amount = Decimal(rng.randint(500, 50000)) / 100
            plans.append(OrderPlan(f"ST{seed % 100000:05d}O{i:06d}", amount, outcome, rng.uniform(0.2, 4.0)))
        refunds = cls._refunds(rng, seed, [p for p in plans if p.outcome == "SUCCESS"], n_refunds, scale)
        return cls(seed=seed, scale=scale, orders=tuple(plans), refunds=tuple(refunds),
                   faults=tuple(cls._faults(rng, scale, create_window)), deliveries_floor=round(3000 * scale),
                   create_window=create_window)

    @staticmethod
    def _refunds(rng: random.Random, seed: int, paid: list[OrderPlan], total: int, scale: float) -> list[RefundPlan]:
        rng.shuffle(paid)
        races, doubles = round(10 * scale), round(35 * scale)
        singles = total - races - 2 * doubles
        overasks = round(10 * scale)
        if singles + doubles + races > len(paid):
            raise ValueError("not enough paid orders for the refund plan")
        out: list[RefundPlan] = []
        counter = iter(range(10**7))

        def no() -> str:
            return f"SR{seed % 100000:05d}R{next(counter):06d}"

        for order in paid[:singles]:
            cents = int(order.amount * 100)
            out.append(RefundPlan(no(), order.no, Decimal(rng.randint(1, cents)) / 100, "single",
                                  fails=rng.random() < 0.1))
        for order in paid[singles:singles + doubles]:
            cents = int(order.amount * 100)
            first = rng.randint(1, max(cents // 2, 1))
            second = rng.randint(1, max(cents - first, 1))
            out.append(RefundPlan(no(), order.no, Decimal(first) / 100, "double", fails=rng.random() < 0.1))
            out.append(RefundPlan(no(), order.no, Decimal(second) / 100, "double"))
        for order in paid[singles + doubles:singles + doubles + races]:
            share = (order.amount * Decimal("0.6")).quantize(Decimal("0.01"))
            out.extend(RefundPlan(no(), order.no, share, "race") for _ in range(2))
        singles_ok = [r for r in out if r.group == "single" and not r.fails]
        for refund in rng.sample(singles_ok, min(overasks, len(singles_ok))):
            order = next(p for p in paid if p.no == refund.order)
            out.append(RefundPlan(no(), order.no, order.amount - refund.amount + Decimal("0.01"), "overask"))
        return out

    @staticmethod
    def _faults(rng: random.Random, scale: float, window: float) -> list[FaultEvent]:
        rounds = max(1, round(scale))
        period = window / rounds
        events: list[FaultEvent] = []
        for k in range(rounds):
            base = 4.0 + k * period
            events += [FaultEvent(base, "both", target) for target in ("fork-0", "fork-1", "simple-0", "simple-1")]
            for i in range(4):
                events.append(FaultEvent(base + 2 + i * period / 5 + rng.uniform(0, 1), "horse", f"fork-{i % 2}"))
                events.append(FaultEvent(base + 4 + i * period / 5 + rng.uniform(0, 1), "parent",
                                         f"fork-{(i + 1) % 2}"))
            first, second = ("fork-2", "simple-1") if k % 2 == 0 else ("simple-1", "fork-2")
            events.append(FaultEvent(base + 6, "pause", first))
            events.append(FaultEvent(base + 6 + 2 * LOCK_TTL + 1, "pause", second))
            events.append(FaultEvent(base + 0.5 * period + 4, "redis", "redis"))
            events.append(FaultEvent(base + 0.5 * period + 12, "redis_pause", "redis"))
            events.append(FaultEvent(base + 0.3 * period + 4, "receiver", "web"))
            events.append(FaultEvent(base + 0.7 * period + 4, "scheduler", "scheduler-0"))
        return sorted(events, key=lambda e: e.at)


# -- observing jobs across kills ---------------------------------------------------------------

@dataclass
class JobWatch:
    """How long a killed job took to come back: status left STARTED, then the job finished (deleted)."""

    kind: str
    job_id: str | None
    killed_at: float
    left_started_s: float | None = None
    done_s: float | None = None


def watch_job(cluster: Cluster, watch: JobWatch, limit: float = 240.0) -> None:
    if watch.job_id is None:
        return
    deadline = watch.killed_at + limit
    while time.monotonic() < deadline:
        try:
            status = Job.fetch(watch.job_id, connection=cluster.redis, serializer=JSONSerializer).get_status()
        except NoSuchJobError:
            status = None
        except Exception:  # noqa: BLE001 - Redis down or a job hash half-written: look again shortly
            time.sleep(0.25)
            continue
        elapsed = time.monotonic() - watch.killed_at
        if watch.left_started_s is None and status != JobStatus.STARTED:
            watch.left_started_s = elapsed
        if status in (None, JobStatus.FINISHED):
            watch.done_s = elapsed
            return
        time.sleep(0.1)


# -- the run ------------------------------------------------------------------------------------

@dataclass
class StormRun:
    plan: StormPlan
    started: float = field(default_factory=time.monotonic)
    created_at: dict[str, float] = field(default_factory=dict)
    settled_at: dict[str, float] = field(default_factory=dict)
    driver_errors: Counter[str] = field(default_factory=Counter)
    refund_results: dict[str, str] = field(default_factory=dict)  # no -> accepted | refused:<reason>
    watches: list[JobWatch] = field(default_factory=list)
    redis_outages: list[tuple[float, float]] = field(default_factory=list)  # wall-clock (down, up)
    resends: int = 0
    nemesis_errors: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)  # seconds each driver thread ran
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, where: str, exc: BaseException) -> None:
        with self.lock:
            self.driver_errors[f"{where}:{type(exc).__name__}"] += 1


class Storm:
    def __init__(self, cluster: Cluster, plan: StormPlan) -> None:
        self.cluster = cluster
        self.plan = plan
        self.run = StormRun(plan)
        self.stop = threading.Event()
        self.rng = random.Random(f"{plan.seed}:replayer")  # noqa: S311 - replayable choices

    # -- the merchant ----------------------------------------------------------------------------

    def create_orders(self) -> None:
        interval = self.plan.create_window / max(len(self.plan.orders), 1)
        with ThreadPoolExecutor(max_workers=6, thread_name_prefix="merchant") as pool:
            for i, order in enumerate(self.plan.orders):
                due = self.run.started + 1.0 + i * interval
                time.sleep(max(0.0, due - time.monotonic()))
                pool.submit(self._create, order)

    def _create(self, order: OrderPlan) -> None:
        self.run.created_at[order.no] = time.monotonic()
        try:
            self.cluster.service.create_card_payment(
                out_trade_no=order.no, amount=order.amount, currency="USD", user_id=f"user{int(order.no[-4:]) % 97}",
                subject="storm", front_callback_url="https://shop.test/return")
        except Exception as exc:  # noqa: BLE001 - the merchant app crashing mid-call is part of the storm
            self.run.error("create", exc)

    def settle_orders(self, deadline: float) -> None:
        """Settle every order at the gateway after its delay; retry while the gateway does not know it yet."""
        due: list[tuple[float, int, OrderPlan]] = []
        pending = {o.no: o for o in self.plan.orders}
        while pending and time.monotonic() < deadline:
            for no in [n for n in pending if n in self.run.created_at]:
                order = pending.pop(no)
                heapq.heappush(due, (self.run.created_at[no] + order.settle_after, id(order), order))
            while due and due[0][0] <= time.monotonic():
                _, _, order = heapq.heappop(due)
                if not self._settle(order):
                    heapq.heappush(due, (time.monotonic() + 1.0, id(order), order))
            time.sleep(0.01)
        while due and time.monotonic() < deadline:
            at, _, order = heapq.heappop(due)
            time.sleep(max(0.0, at - time.monotonic()))
            if not self._settle(order):
                heapq.heappush(due, (time.monotonic() + 1.0, id(order), order))

    def _settle(self, order: OrderPlan) -> bool:
        try:
            status = self.cluster.sim.complete_order(order.no, order.outcome)
        except httpx.HTTPError as exc:
            self.run.error("settle", exc)
            return False
        if status in (200, 409):
            self.run.settled_at[order.no] = time.time()
            return True
        return False

    def refund_paid_orders(self, deadline: float) -> None:
        """Issue each order's planned refunds once the store says the order is paid."""
        by_order: dict[str, list[RefundPlan]] = {}
        for refund in self.plan.refunds:
            by_order.setdefault(refund.order, []).append(refund)
        with ThreadPoolExecutor(max_workers=6, thread_name_prefix="refunds") as pool:
            while by_order and time.monotonic() < deadline:
                for no in self._paid(set(by_order)):
                    pool.submit(self._refund_order, by_order.pop(no))
                time.sleep(0.5)

    def _paid(self, numbers: set[str]) -> list[str]:
        try:
            with read(self.cluster.rt.engine) as conn:
                rows = conn.execute(sa.select(orders.c.out_trade_no).where(
                    orders.c.out_trade_no.in_(numbers), orders.c.state == "SUCCESS")).scalars().all()
        except sa.exc.SQLAlchemyError as exc:
            self.run.error("refund-read", exc)
            return []
        return list(rows)

    def _refund_order(self, refunds: list[RefundPlan]) -> None:
        racers = [r for r in refunds if r.group == "race"]
        if racers:
            barrier = threading.Barrier(len(racers))
            threads = [threading.Thread(target=self._refund, args=(r, barrier)) for r in racers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        for refund in [r for r in refunds if r.group != "race"]:
            self._refund(refund, None)

    def _refund(self, refund: RefundPlan, barrier: threading.Barrier | None) -> None:
        if barrier is not None:
            barrier.wait(timeout=30)
        comments = "REFUND_FAILED" if refund.fails else "storm"
        for _attempt in range(8):  # same outRefundNo each time: the request is idempotent
            try:
                self.cluster.service.refund(refund.order, refund.amount, out_refund_no=refund.no, comments=comments)
                self.run.refund_results[refund.no] = "accepted"
                return
            except RefundRefused as refused:
                self.run.refund_results[refund.no] = f"refused:{refused.reason}"
                return
            except Exception as exc:  # noqa: BLE001 - Redis or the store down mid-call: ask again
                self.run.error("refund", exc)
                time.sleep(1.0)
        self.run.refund_results[refund.no] = "unanswered"

    # -- the replayer ----------------------------------------------------------------------------

    def replay(self, deadline: float) -> None:
        """Redeliver acknowledged notifications until the deliveries reach the plan's floor."""
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                notes = self.cluster.sim.notifications()
            except httpx.HTTPError as exc:
                self.run.error("replay", exc)
                time.sleep(1.0)
                continue
            attempts = notes["attempts"]
            missing = self.plan.deliveries_floor - len(attempts)
            if missing <= 0:
                return
            keys = sorted({a["key"] for a in attempts if a["acked"]})
            if not keys:
                time.sleep(0.5)
                continue
            batch_end = time.monotonic() + 2.0
            while missing > 0 and time.monotonic() < batch_end:
                copies = self.rng.randint(1, 4)
                try:
                    if self.cluster.sim.resend(self.rng.choice(keys), copies):
                        self.run.resends += copies
                        missing -= copies
                except httpx.HTTPError as exc:
                    self.run.error("replay", exc)
                time.sleep(0.02)

    # -- the nemesis -----------------------------------------------------------------------------

    def nemesis(self) -> None:
        threads = []
        for event in self.plan.faults:
            time.sleep(max(0.0, self.run.started + event.at - time.monotonic()))
            if self.stop.is_set():
                return
            thread = threading.Thread(target=self._fault, args=(event,), name=f"nemesis-{event.kind}", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=120)

    def _fault(self, event: FaultEvent) -> None:
        actions: dict[str, Callable[[str], None]] = {
            "both": self._kill_both, "horse": self._kill_horse, "parent": self._kill_parent,
            "pause": self._pause, "redis": self._redis, "receiver": self._kill_role, "scheduler": self._kill_role,
            "redis_pause": lambda _target: self.cluster.pause_redis(self.plan.redis_pause_seconds),
        }
        try:
            actions[event.kind](event.target)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be injected is reported, not raised
            with self.run.lock:
                self.run.nemesis_errors.append(f"{event.kind}@{event.target}: {type(exc).__name__}: {exc}")

    def _watch(self, kind: str, job_id: str | None) -> None:
        watch = JobWatch(kind, job_id, time.monotonic())
        with self.run.lock:
            self.run.watches.append(watch)
        threading.Thread(target=watch_job, args=(self.cluster, watch), daemon=True).start()

    def _busy_job(self, name: str, timeout: float = 15.0) -> tuple[Pid | None, str | None]:
        """Wait (bounded) until the worker is in a job: (its horse, if it forks; the job id, best effort)."""
        sup = self.cluster.sup
        fork = name.startswith("fork")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sup.running(name):
                time.sleep(0.05)
                continue
            if fork:
                horse = sup.horse(name)
                if horse is not None:
                    return horse, self.cluster.job_of(sup.pid(name))
                time.sleep(0.002)
                continue
            job_id = self.cluster.job_of(sup.pid(name))
            if job_id is not None:
                return None, job_id
            time.sleep(0.01)
        return None, None

    def _kill_both(self, name: str) -> None:
        horse, job_id = self._busy_job(name)
        if name.startswith("fork"):
            self.cluster.sup.kill_both(name, horse, job_id=job_id)
        else:
            self.cluster.sup.kill9(name, kind="both", job_id=job_id)
        self._watch("both", job_id)
        self.cluster.sup.restart_later(name, self.plan.restart_after)

    def _kill_horse(self, name: str) -> None:
        horse, job_id = self._busy_job(name)
        if horse is None:
            raise RuntimeError(f"{name} had no work horse to kill")
        self.cluster.sup.kill_horse(name, horse, job_id=job_id)
        self._watch("horse", job_id)

    def _kill_parent(self, name: str) -> None:
        _horse, job_id = self._busy_job(name)
        self.cluster.sup.kill_parent(name, job_id=job_id)
        self._watch("parent", job_id)
        self.cluster.sup.restart_later(name, self.plan.restart_after)

    def _pause(self, name: str) -> None:
        _horse, job_id = self._busy_job(name)
        self.cluster.sup.pause(name, self.plan.pause_seconds, job_id=job_id)

    def _kill_role(self, name: str) -> None:
        self.cluster.sup.kill9(name)
        self.cluster.sup.restart_later(name, self.plan.restart_after)

    def _redis(self, _name: str) -> None:
        down = time.time()
        self.cluster.redis_server.kill9()
        self.cluster.sup.record("redis", "redis", (), None, detail=f"{self.plan.redis_outage_seconds}s")
        time.sleep(self.plan.redis_outage_seconds)
        self.cluster.redis_server.restart()
        with self.run.lock:
            self.run.redis_outages.append((down, time.time()))

    # -- everything at once ----------------------------------------------------------------------

    def drive(self) -> None:
        """Run the merchant, the customers, the replayer and the nemesis until each is done (bounded)."""
        deadline = self.run.started + 120.0 + 30.0 * self.plan.create_window
        def timed(name: str, target: Callable[[], None]) -> threading.Thread:
            def run() -> None:
                try:
                    target()
                finally:
                    self.run.durations[name] = round(time.monotonic() - self.run.started, 1)
            return threading.Thread(target=run, name=name, daemon=True)

        jobs = [
            timed("create", self.create_orders),
            timed("settle", lambda: self.settle_orders(deadline)),
            timed("refunds", lambda: self.refund_paid_orders(deadline)),
            timed("replay", lambda: self.replay(deadline)),
            timed("nemesis", self.nemesis),
        ]
        for thread in jobs:
            thread.start()
        for thread in jobs:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.stop.set()


# -- figures ------------------------------------------------------------------------------------

def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def delivery_figures(attempts: list[dict[str, Any]], dropped: list[dict[str, Any]], settled_at: dict[str, float],
                     outages: list[tuple[float, float]]) -> dict[str, Any]:
    by_source = Counter(a["source"] for a in attempts)
    first: dict[str, float] = {}
    for a in attempts:
        if a["kind"] == "payment" and a["source"] == "ladder" and a["attempt"] == 1:
            first.setdefault(str(a["key"]).upper(), parse_time(a["sentAt"]))
    # A notification is reordered when one settled later was delivered before it.
    ordered = sorted((settled_at[no], at) for no, at in first.items() if no in settled_at)
    reordered, earliest_later = 0, float("inf")
    for _settled, delivered in reversed(ordered):
        if delivered > earliest_later:
            reordered += 1
        earliest_later = min(earliest_later, delivered)
    duplicated_keys = {a["key"] for a in attempts if a["source"] in ("duplicate", "resend")}
    notified_keys = {a["key"] for a in attempts}
    in_outage = [a for a in attempts for down, up in outages if down <= parse_time(a["sentAt"]) <= up]
    back = [min((parse_time(a["sentAt"]) - up for a in attempts if a["acked"] and parse_time(a["sentAt"]) >= up),
                default=None) for _down, up in outages]
    return {
        "deliveries": len(attempts),
        "deliveries_by_source": dict(by_source),
        "acked": sum(1 for a in attempts if a["acked"]),
        "duplicate_deliveries_pct": round(100.0 * (by_source["duplicate"] + by_source["resend"])
                                          / max(len(attempts), 1), 1),
        "notifications_duplicated_pct": round(100.0 * len(duplicated_keys) / max(len(notified_keys), 1), 1),
        "notifications_reordered_pct": round(100.0 * reordered / max(len(ordered), 1), 1),
        "notifications_dropped": dict(Counter(d["kind"] for d in dropped)),
        "orders_never_notified_pct": round(100.0 * sum(1 for d in dropped if d["kind"] == "payment")
                                           / max(len(settled_at), 1), 1),
        "deliveries_during_redis_outage": len(in_outage),
        # Acked while Redis was down: only repeats of facts already processed may be (no enqueue needed).
        "acked_during_redis_outage": sum(1 for a in in_outage if a["acked"]),
        "http_status_during_redis_outage": dict(Counter(str(a["httpStatus"] or a["error"]) for a in in_outage)),
        "first_ack_after_redis_back_s": [None if b is None else round(b, 2) for b in back],
    }


LOG_EVENTS = ("lock.lost", "worker.resumed", "job.failed", "poll.unanswered", "notification.enqueue_failed",
              "notification.persist_failed", "scheduler.redis_unavailable", "event.delivery_failed")


def log_figures(log_dir: Path) -> dict[str, int]:
    """How often the processes said the things a storm should make them say (e.g. a lock lost in a pause)."""
    counts = dict.fromkeys(LOG_EVENTS, 0)
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            for name in LOG_EVENTS:
                if f'"event":"{name}"' in line or f'"event": "{name}"' in line:  # orjson writes it compact
                    counts[name] += 1
    return counts


def recovery_figures(watches: list[JobWatch]) -> dict[str, Any]:
    out: dict[str, Any] = {"jobs": [(w.kind, w.job_id, w.left_started_s and round(w.left_started_s, 1),
                                     w.done_s and round(w.done_s, 1)) for w in watches]}
    for kind in ("horse", "parent", "both"):
        mine = [w for w in watches if w.kind == kind]
        done = sorted(w.done_s for w in mine if w.done_s is not None)
        out[kind] = {
            "kills": len(mine), "with_job_in_flight": sum(1 for w in mine if w.job_id),
            "jobs_finished": len(done), "seconds_to_finish_max": round(max(done), 1) if done else None,
            # the storm can be quiet before rq lets go of a dead worker's job (its work was done another way)
            "still_held_by_rq_at_the_end": sum(1 for w in mine if w.job_id and w.done_s is None),
            "seconds_to_finish_median": round(done[len(done) // 2], 1) if done else None,
        }
    return out
