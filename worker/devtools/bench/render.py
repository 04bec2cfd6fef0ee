"""The end-of-run tables: figures with floors and ratios, targets, scale-out, memory, and what limits what.

Why a separate view of the JSON document: the document is the comparable artifact; the tables are
for a person reading one run, so they are built from the document alone (a saved ``--json`` file
could be rendered the same way).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def render(doc: dict[str, Any], console: Console) -> None:
    machine = doc.get("machine", {})
    console.print(f"\n[bold]checus-worker bench[/bold] — {doc['options']['db']}, {doc['options']['workers']} "
                  f"{doc['options']['worker_class']} workers, {machine.get('cpu_count')} CPUs, "
                  f"commit {str(doc.get('git_commit') or '?')[:10]}, load generator: {doc.get('load_generator')}")
    figures = Table(title="Figures (floors measured in this run)", title_justify="left")
    for column in ("figure", "value", "unit", "floor", "ratio"):
        figures.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for name, f in doc["figures"].items():
        floor = f"{f['floor']} = {_number(f['floor_value'])}" if "floor" in f else ""
        figures.add_row(name, _number(f["value"]), f["unit"], floor, _number(f.get("ratio")))
    console.print(figures)

    targets = Table(title="Targets (printed, never asserted)", title_justify="left")
    for column in ("target", "measured", "met"):
        targets.add_column(column)
    for t in doc["targets"]:
        met = "[green]yes[/green]" if t["met"] else "[red]no[/red]"
        targets.add_row(t["target"], _number(t["measured"]), met)
    console.print(targets)

    scale = doc["scale_out"]
    if scale["steps"]:
        table = Table(title="Scale-out (applied rate per worker count)", title_justify="left")
        for column in ("workers", "applied/s (backlog)", "rq no-op/s", "limited by"):
            table.add_column(column)
        for step in scale["steps"]:
            table.add_row(str(step["workers"]), _number(step["applied_rate"]), _number(step["rq_noop_rate"]),
                          step["limit"])
        console.print(table)
        where = f"stops growing at {scale['stops_growing_at']} workers" if scale["stops_growing_at"] else "see last row"
        console.print(f"Scale-out: {where}: {scale['limit']}")

    rss = Table(title="Peak RSS (MiB) and memory soak growth (%)", title_justify="left")
    rss.add_column("process")
    rss.add_column("peak MiB", justify="right")
    rss.add_column("soak growth %", justify="right")
    growth = doc.get("memory_soak", {}).get("growth_pct", {})
    for name, size in doc["peak_rss_mib"].items():
        rss.add_row(name, _number(size), _number(growth.get(name)))
    console.print(rss)

    dup = doc["duplicate"]
    commands = ", ".join(f"{k} {v}" for k, v in dup["redis_commands_per_duplicate"].items()) or "none"
    sql = dup["receiver_sql_statements"]
    console.print(f"Duplicate: Redis commands per request: {commands}; receiver SQL statements: "
                  f"{'not observable on SQLite' if sql is None else sql}; inbox rows added: {dup['inbox_rows_added']}")
    for label, phase in doc["phases"].items():
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in phase["cpu_cores"].items() if v >= 0.05)
        console.print(f"'{label}': CPU (cores of {machine.get('cpu_count')}): {cpu}. Limit: {phase['limit']}")
        per = ", ".join(f"{k} {v:.3f}" for k, v in phase.get("cpu_ms_per_applied", {}).items())
        if per:
            console.print(f"'{label}': CPU ms per applied notification: {per}; {phase.get('jobs')} rq jobs, "
                          f"{phase.get('notifications_per_job')} notifications per job")
    if "scheduler" in doc:
        s = doc["scheduler"]
        console.print(f"Scheduler: {s['pending']:,} pending seeded in {s['seed_seconds']} s; ticks with "
                      f"{s['due_per_tick']} due: {s['ticks_ms']} ms")
