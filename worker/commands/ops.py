"""Operator commands: ``anomalies list|resolve``, ``replay``, ``reconcile``."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from worker.bootstrap import process_runtime


@click.group()
def anomalies() -> None:
    """Contradictions recorded instead of applied."""


@anomalies.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved anomalies.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
def anomalies_list(include_resolved: bool, as_json: bool) -> None:
    """List the open anomalies (contradictions recorded for an operator); --all adds resolved ones."""
    from worker.ops.queries import list_anomalies
    from worker.store.db import read

    with read(process_runtime().engine) as conn:
        found = list_anomalies(conn, include_resolved=include_resolved)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in found], indent=2))
        return
    table = Table(title="anomalies")
    for column in ("id", "kind", "entity", "ref", "detail", "since", "resolved"):
        table.add_column(column)
    for a in found:
        table.add_row(str(a.id), a.kind, a.entity, a.ref, a.detail, a.created_at.strftime("%Y-%m-%d %H:%M"),
                      a.resolution or "")
    Console().print(table)


@anomalies.command("resolve")
@click.argument("anomaly_id", type=int)
@click.option("--reason", required=True, help="Why, for the audit history.")
@click.option("--operator", required=True, help="Who resolves it.")
def anomalies_resolve(anomaly_id: int, reason: str, operator: str) -> None:
    """Resolve an anomaly; Checus is queried first and its answer recorded as evidence."""
    from worker.ops.actions import OperatorError, resolve_anomaly

    try:
        outcome = resolve_anomaly(process_runtime(), anomaly_id, operator=operator, reason=reason)
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"anomaly {anomaly_id} resolved: {outcome['resolution']} (Checus says {outcome['fresh_query']})")


@click.command()
@click.argument("inbox_id", type=int)
def replay(inbox_id: int) -> None:
    """Apply a kept notification again (re-verified; harmless if it was already applied)."""
    from worker.ops.actions import OperatorError
    from worker.ops.actions import replay as run_replay

    try:
        job = run_replay(process_runtime(), inbox_id)
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"inbox entry {inbox_id} queued as {job}")


@click.command()
@click.option("--rate", default=5.0, show_default=True, help="Gateway queries per second at most.")
def reconcile(rate: float) -> None:
    """Poll every open payment and refund now, rate-limited, and report what changed."""
    from worker.ops.actions import open_records
    from worker.ops.actions import reconcile as run_reconcile

    rt = process_runtime()
    records = open_records(rt)
    changed = 0
    with Progress() as progress:
        task = progress.add_task("reconciling", total=len(records))
        for _entity, _record_id, outcome in run_reconcile(rt, records, per_second=rate):
            changed += outcome == "applied"
            progress.advance(task)
    click.echo(f"{len(records)} open records polled, {changed} changed state")
