"""Every figure of a run, with its unit, its floor and the ratio to it, as one JSON document.

Why flat named figures with units: runs are compared between commits (``--json``), so a figure
keeps its name and unit from run to run, and each figure measured against a floor carries that
floor's value from the same run and the ratio, which is the number that travels between machines.
``REQUIRED_FIGURES`` is the contract the CI test checks (present, finite, positive unless signed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from worker.devtools.bench.duplicates import DuplicateCost
from worker.devtools.bench.loadgen import LoadResult
from worker.devtools.bench.options import BenchOptions
from worker.devtools.bench.phases import NotificationPhase
from worker.devtools.bench.scaling import ScaleStep, Soak, limiter, stops_growing
from worker.devtools.bench.schedtick import TickResult

MB = 1024 * 1024
REQUIRED_FIGURES = (
    "ingest_rate", "ingest_latency_p50", "ingest_latency_p99", "ingest_latency_p999", "applied_rate",
    "commit_latency_p50", "commit_latency_p99", "fixed_rate", "fixed_rate_ingest_latency_p50",
    "fixed_rate_ingest_latency_p99", "fixed_rate_commit_latency_p50", "fixed_rate_commit_latency_p99",
    "duplicate_redis_commands", "duplicate_latency_p50", "duplicate_latency_p99", "duplicate_rate",
    "cpu_per_applied", "hello_rate", "rq_noop_rate", "rsa_verify_rate", "peak_rss_max", "memory_growth",
    "scheduler_tick_p50", "scheduler_tick_max",
)
SIGNED_FIGURES = frozenset({"memory_growth"})  # RSS may shrink


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


@dataclass(kw_only=True)
class Results:
    options: BenchOptions
    rsa_rate: float
    hello: LoadResult
    main: NotificationPhase
    duplicate: DuplicateCost
    fixed: NotificationPhase | None
    noop_rate: float
    soak: Soak | None
    scale: list[ScaleStep]
    tick: TickResult | None
    peak_rss: dict[str, int]


def _figure(value: float, unit: str, floor: tuple[str, float] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": round(value, 3), "unit": unit}
    if floor is not None:
        name, floor_value = floor
        entry.update(floor=name, floor_value=round(floor_value, 3),
                     ratio=round(value / floor_value, 4) if floor_value else None)
    return entry


def _rate(load: LoadResult) -> float:
    return len(load.ok) / load.span_seconds if load.span_seconds else 0.0


def figures(r: Results) -> dict[str, dict[str, Any]]:
    hello = _rate(r.hello)
    ingest, commit = r.main.ingest_latencies_ms, r.main.commit_latencies_ms
    dup = sorted(a.latency_ms for a in r.duplicate.load.ok)
    ingest_rate = _figure(r.main.ingest_rate, "notifications/s", ("hello_rate", hello))
    ingest_rate["ratio_to_rsa_verify_rate"] = round(r.main.ingest_rate / r.rsa_rate, 4) if r.rsa_rate else None
    applied_rate = _figure(r.main.applied_rate, "notifications/s", ("rq_noop_rate", r.noop_rate))
    applied_rate["ratio_to_hello_rate"] = round(r.main.applied_rate / hello, 4) if hello else None
    per_role = r.main.cpu_ms_per_applied
    cpu_per_applied = _figure(per_role.get("product", 0.0), "ms CPU per applied notification (product processes)")
    cpu_per_applied["by_role"] = {k: v for k, v in per_role.items() if k != "product"}
    out = {
        "ingest_rate": ingest_rate,
        "ingest_latency_p50": _figure(percentile(ingest, 0.5), "ms"),
        "ingest_latency_p99": _figure(percentile(ingest, 0.99), "ms"),
        "ingest_latency_p999": _figure(percentile(ingest, 0.999), "ms"),
        "applied_rate": applied_rate,
        "cpu_per_applied": cpu_per_applied,
        "commit_latency_p50": _figure(percentile(commit, 0.5), "ms"),
        "commit_latency_p99": _figure(percentile(commit, 0.99), "ms"),
        "duplicate_redis_commands": _figure(r.duplicate.redis_commands, "commands/duplicate"),
        "duplicate_latency_p50": _figure(percentile(dup, 0.5), "ms"),
        "duplicate_latency_p99": _figure(percentile(dup, 0.99), "ms"),
        "duplicate_rate": _figure(r.duplicate.rate, "duplicates/s", ("hello_rate", hello)),
        "hello_rate": _figure(hello, "requests/s"),
        "rq_noop_rate": _figure(r.noop_rate, "jobs/s"),
        "rsa_verify_rate": _figure(r.rsa_rate, "verifies/s"),
        "peak_rss_max": _figure(max(r.peak_rss.values(), default=0) / MB, "MiB"),
    }
    if r.fixed is not None:
        fixed_ingest, fixed_commit = r.fixed.scheduled_latencies_ms, r.fixed.commit_latencies_ms
        out.update({
            "fixed_rate": _figure(r.fixed.ingest_rate, "notifications/s"),
            "fixed_rate_ingest_latency_p50": _figure(percentile(fixed_ingest, 0.5), "ms from scheduled send"),
            "fixed_rate_ingest_latency_p99": _figure(percentile(fixed_ingest, 0.99), "ms from scheduled send"),
            "fixed_rate_service_latency_p99": _figure(percentile(r.fixed.ingest_latencies_ms, 0.99), "ms"),
            "fixed_rate_commit_latency_p50": _figure(percentile(fixed_commit, 0.5), "ms"),
            "fixed_rate_commit_latency_p99": _figure(percentile(fixed_commit, 0.99), "ms"),
        })
    if r.soak is not None:
        out["memory_growth"] = _figure(r.soak.worst_python_growth, "% RSS (worst Python process)")
    if r.tick is not None:
        out["scheduler_tick_p50"] = _figure(r.tick.median_ms, "ms")
        out["scheduler_tick_max"] = _figure(r.tick.max_ms, "ms")
    for step in r.scale:
        out[f"applied_rate_x{step.workers}"] = _figure(step.phase.applied_rate, "notifications/s (backlog)",
                                                        ("rq_noop_rate", step.noop_rate))
    return out


def _phase(p: NotificationPhase, db: str) -> dict[str, Any]:
    whole = p.cpu_drain if p.backlog else p.cpu_total  # backlog: the workers only ran during the drain
    statuses: dict[str, int] = {}
    for ack in p.load.acks:
        statuses[str(ack.status)] = statuses.get(str(ack.status), 0) + 1
    return {"workers": p.workers, "requests_planned": len(p.plan), "responses": statuses,
            "socket_errors": p.load.socket_errors, "notifications": p.expected, "applied": p.applied,
            "duplicates_sent": sum(1 for x in p.plan if x.duplicate), "ingest_seconds": round(p.load.span_seconds, 3),
            "applied_rate": round(p.applied_rate, 1), "applied_from": "first commit" if p.backlog else "first request",
            "distinct_ingest_rate": round(p.expected / p.load.span_seconds, 1) if p.load.span_seconds else None,
            "jobs": p.jobs, "notifications_per_job": round(p.applied / p.jobs, 1) if p.jobs else None,
            "limit": limiter(whole, db=db), "cpu_cores": whole, "cpu_ms_per_applied": p.cpu_ms_per_applied,
            "cpu_cores_during_load": p.cpu_load,
            "cpu_cores_during_drain": p.cpu_drain}


def targets(r: Results, fig: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def value(name: str) -> float | None:
        return fig[name]["value"] if name in fig else None

    def row(text: str, measured: float | None, met: bool | None) -> dict[str, Any]:
        return {"target": text, "measured": measured, "met": met}

    ratio = fig["ingest_rate"].get("ratio")
    applied_ratio = fig["applied_rate"].get("ratio_to_hello_rate")
    cpu = value("cpu_per_applied")
    rows = [
        row(f"applied ≥ 1,000 notifications/s ({r.options.db})", value("applied_rate"),
            (value("applied_rate") or 0) >= 1000),
        row(f"applied ≥ 0.08 × hello-world rate ({r.options.db})", applied_ratio,
            applied_ratio is not None and applied_ratio >= 0.08),
        row(f"CPU per applied notification ≤ 1.0 ms, all product processes ({r.options.db})", cpu,
            cpu is not None and 0 < cpu <= 1.0),
        row("ingest ≥ 0.5 × hello-world rate", ratio, ratio is not None and ratio >= 0.5),
        row("a duplicate costs ≤ 1 Redis round trip", value("duplicate_redis_commands"),
            (value("duplicate_redis_commands") or 0) <= 1.05 and not r.duplicate.sql_statements),
    ]
    if r.fixed is not None:
        for name, what in (("fixed_rate_ingest_latency_p99", "ingest"), ("fixed_rate_commit_latency_p99", "commit")):
            rows.append(row(f"{what} p99 ≤ 100 ms at {r.options.latency_rate:g}/s", value(name),
                            (value(name) or 0) <= 100))
    if r.tick is not None:
        rows.append(row(f"scheduler tick ≤ 50 ms with {r.tick.pending:,} pending (PostgreSQL)",
                        value("scheduler_tick_max"), (value("scheduler_tick_max") or 0) <= 50))
    if r.soak is not None:
        rows.append(row(f"RSS grows < 10 % over {r.soak.phase.expected:,} notifications", value("memory_growth"),
                        (value("memory_growth") or 0) < 10))
    return rows


def document(r: Results, *, meta: dict[str, Any]) -> dict[str, Any]:
    fig = figures(r)
    at, limit = stops_growing(r.scale)
    doc: dict[str, Any] = {
        **meta, "options": r.options.as_json(), "figures": fig, "targets": targets(r, fig),
        "peak_rss_mib": {name: round(size / MB, 1) for name, size in sorted(r.peak_rss.items())},
        "duplicate": {"redis_commands_per_duplicate": r.duplicate.commands_per_request,
                      "inbox_rows_added": r.duplicate.inbox_rows_added,
                      "receiver_sql_statements": r.duplicate.sql_statements},
        "scale_out": {"steps": [{"workers": s.workers, "applied_rate": round(s.phase.applied_rate, 1),
                                 "rq_noop_rate": round(s.noop_rate, 1), "limit": s.limit,
                                 "ingest_rate_without_workers": round(s.phase.ingest_rate, 1),
                                 "cpu_cores_during_drain": s.phase.cpu_drain} for s in r.scale],
                      "stops_growing_at": at, "limit": limit},
        "phases": {p.label: _phase(p, r.options.db) for p in (r.main, r.fixed, *(s.phase for s in r.scale),
                                                 r.soak.phase if r.soak else None) if p is not None},
    }
    if r.soak is not None:
        doc["memory_soak"] = {"notifications": r.soak.phase.expected, "growth_pct": r.soak.growth_pct,
                              "before_mib": {k: round(v / MB, 1) for k, v in r.soak.before.items()},
                              "after_mib": {k: round(v / MB, 1) for k, v in r.soak.after.items()}}
    if r.tick is not None:
        doc["scheduler"] = {"pending": r.tick.pending, "due_per_tick": r.tick.due,
                            "ticks_ms": [round(t, 2) for t in r.tick.ticks_ms], "enqueued": r.tick.enqueued,
                            "seed_seconds": round(r.tick.seed_seconds, 2), "seed_rows_per_s": round(r.tick.seed_rate)}
    return doc
