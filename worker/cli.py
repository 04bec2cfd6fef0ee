"""``checus-worker``: one click group; each subcommand lives in ``worker.commands``.

``main(argv) -> int`` is what tests call; ``entrypoint`` is the console script.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from .commands.bench import bench
from .commands.demo import demo
from .commands.keys import keys
from .commands.merchant import order, pay, refund, tokens
from .commands.ops import anomalies, reconcile, replay
from .commands.roles import db, scheduler, web, work
from .commands.sim import sim
from .commands.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Checus payment worker: gateway client, simulator, receiver, workers and tools."""


for command in (web, work, scheduler, sim, demo, bench, pay, order, refund, tokens, status, anomalies, replay,
                reconcile, keys, db):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="checus-worker", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    return 0


def entrypoint() -> None:
    sys.exit(main())
