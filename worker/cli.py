"""``checus-worker``: one click group; each subcommand lives in ``worker.commands``.

``main(argv) -> int`` is what tests call; ``entrypoint`` is the console script.

A refusal of the merchant API or a bad setting is one line on stderr and an exit code a script can
act on, never a traceback (see ``EXIT_CODES``): 3 means nothing was stored or sent and nothing will
happen; 75 means Checus may have acted and the named record is being resolved, so the caller must
read it later and never retry under a new number.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
import structlog

from worker.commands.api import api, api_keys
from worker.commands.bench import bench
from worker.commands.demo import demo
from worker.commands.failures import INFRASTRUCTURE
from worker.commands.failures import one_line as infrastructure_line
from worker.commands.keys import keys
from worker.commands.merchant import order, pay, refund, tokens
from worker.commands.ops import anomalies, reconcile, replay
from worker.commands.roles import db, scheduler, web, work
from worker.commands.sim import sim
from worker.commands.status import status
from worker.config import SettingsError
from worker.role_settings import purpose
from worker.service_errors import Busy, Conflict, NotFound, OutcomeUnknown, Refused, ServiceError

#: exit code per merchant API error (BSD sysexits where one fits: 75 EX_TEMPFAIL, 78 EX_CONFIG)
EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (OutcomeUnknown, 75), (Busy, 6), (Conflict, 5), (NotFound, 4), (Refused, 3), (SettingsError, 78),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="checus-payment-worker", prog_name="checus-worker", message="%(prog)s %(version)s")
def cli() -> None:
    """Checus payment worker: gateway client, simulator, receiver, workers and tools."""
    factory = structlog.get_config()["logger_factory"]
    if isinstance(factory, structlog.PrintLoggerFactory) and getattr(factory, "_file", None) in (None, sys.stdout):
        # structlog's default prints to stdout: logs go to stderr, so --json output is JSON only (the
        # roles configure their own logging, to stderr too: logs.configure_logging)
        structlog.configure(logger_factory=_stderr_logger)


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on the current ``sys.stderr`` (looked up per logger, so a replaced stream is followed)."""
    return structlog.PrintLogger(sys.stderr)


for command in (web, work, scheduler, sim, demo, bench, pay, order, refund, tokens, status, anomalies, replay,
                reconcile, keys, db, api, api_keys):
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
    except (ServiceError, SettingsError) as exc:
        # one line per setting at fault, every one of them; one line for a refusal
        for one in exc.each() if isinstance(exc, SettingsError) else (exc,):
            click.echo(_one_line(one), err=True)
        return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
    except INFRASTRUCTURE as exc:
        line, code = infrastructure_line(exc)
        click.echo(line, err=True)
        return code
    return 0


def _one_line(exc: ServiceError | SettingsError) -> str:
    """``error: <reason>: <message>``, and for an unknown outcome the record being resolved."""
    message = " ".join(str(exc).split())
    if isinstance(exc, OutcomeUnknown):
        tail = f" (redirect the buyer to {exc.redirect_url})" if exc.redirect_url else ""
        return f"error: outcome_unknown: {message}; record {exc.ref} is being resolved by query, " \
               f"read it later and never retry it under a new number{tail}"
    if isinstance(exc, SettingsError):
        what = purpose(exc.variable)
        return f"error: not_configured: {message}" + (f" — {what}" if what else "")
    return f"error: {exc.reason}" + ("" if message == exc.reason else f": {message}")


def entrypoint() -> None:
    sys.exit(main())
