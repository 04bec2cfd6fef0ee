"""``checus-worker status``: queue, workers, open payments and refunds by age, anomalies."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from worker.bootstrap import process_runtime
from worker.ops.status import snapshot


@click.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Show what the system is doing and what needs attention."""
    data = snapshot(process_runtime())
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console = Console()
    q = data["queue"]
    console.print(f"queue {q['name']}: {q['queued']} queued, {q['started']} started, {q['scheduled']} scheduled, "
                  f"{q['failed']} failed; workers: {len(data['workers'])}")
    for title, key in (("open payments", "open_orders"), ("open refunds", "open_refunds")):
        table = Table(title=title)
        table.add_column("state")
        table.add_column("by age (since last change)")
        for state, by_age in data[key].items():
            table.add_row(state, ", ".join(f"{k}: {v}" for k, v in by_age.items()))
        console.print(table)
    console.print(f"anomalies open: {data['anomalies'] or 'none'}; inbox unprocessed: {data['inbox_unprocessed']}; "
                  f"events undelivered: {data['events_undelivered']}")
