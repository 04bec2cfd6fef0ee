"""``checus-worker bench``: the real stack on loopback, driven with signed notifications, against floors."""

from __future__ import annotations

from pathlib import Path

import click


def _counts(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        counts = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of worker counts, e.g. 1,2,4") from None
    return counts


@click.command()
@click.option("--db", type=click.Choice(["sqlite", "postgresql"]), default="sqlite", show_default=True)
@click.option("--database-url", help="PostgreSQL to use as is (default: a scratch database on --postgres-admin-url).")
@click.option("--postgres-admin-url", help="Server where scratch databases are created and dropped "
                                           "[default: postgresql://postgres@127.0.0.1:5432/postgres].")
@click.option("--workers", type=int, help="Worker processes for every phase but scale-out [1 on SQLite, whose "
                                         "single writer a second worker only contends for; 2 on PostgreSQL].")
@click.option("--web-processes", type=int, help="The receiver's processes (CHECUS_RECEIVER_PROCESSES), and the "
                                                "hello-world floor's [2].")
@click.option("--worker-class", type=click.Choice(["simple", "fork"]), help="rq SimpleWorker or forking Worker.")
@click.option("--notifications", type=int, help="Distinct notifications in the main phase [20000; short 1000].")
@click.option("--duplicates", type=float, help="Share of requests that repeat an earlier notification [0.2].")
@click.option("--concurrency", type=int, help="Connections, one per wrk thread [50; short 20].")
@click.option("--rate", type=float, help="Main phase arrival rate in notifications/s; 0 = as fast as possible [0].")
@click.option("--latency-rate", type=float, help="Fixed-rate phase, notifications/s; 0 skips it [200].")
@click.option("--latency-seconds", type=float, help="Length of the fixed-rate phase [15; short 3].")
@click.option("--duplicate-requests", type=int, help="Acknowledged notifications re-sent to cost a duplicate.")
@click.option("--scale-out", "scale_out", callback=_counts, help="Worker counts to repeat the applied phase with "
                                                                "[1,2,4; short 1,2]; empty skips it.")
@click.option("--scale-out-notifications", type=int, help="Notifications per scale-out step [6000; short 400].")
@click.option("--scheduler-pending", type=int, help="Pending orders seeded in PostgreSQL to time Scheduler.tick() "
                                                    "[1000000; short 10000]; 0 skips it.")
@click.option("--memory-soak", type=int, help="Notifications between the two RSS readings [100000; short 1000]; "
                                              "0 skips it.")
@click.option("--log-level", help="LOG_LEVEL of the stack's processes [INFO, as in production].")
@click.option("--json", "json_path", help="Write every figure as JSON to this file, or '-' for stdout.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="Where the run directory goes.")
@click.option("--keep", is_flag=True, help="Keep the run directory (logs, wrk plans and acks, SQLite file).")
@click.option("--short", is_flag=True, help="CI size: every phase with small counts, about a minute.")
def bench(short: bool, keep: bool, **given: object) -> None:
    """Start the real stack on loopback and measure it against floors taken in the same run.

    Simulator, receiver (uvicorn, uvloop + httptools), N rq workers, the scheduler, a private
    redis-server and SQLite or PostgreSQL, driven by wrk with pre-signed notifications. Prints
    ingest and applied rates with latency percentiles, the cost of a duplicate, peak RSS, the
    scheduler's tick with many pending orders, scale-out, and each figure's ratio to its floor
    (hello-world on the same server, rq no-op jobs, RSA-2048 verifies/s). Needs `wrk` and
    `redis-server` (.ci/system-deps installs them); PostgreSQL for the scheduler phase.
    """
    from worker.devtools.bench.options import build_options
    from worker.devtools.bench.runner import run_bench

    try:
        options = build_options(short=short, keep=keep or None, **given)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    run_bench(options)
