"""``checus-worker demo``: the seed flows, end to end, against the bundled simulator.

Nothing needs configuring: keys are generated in memory, the simulator and a notification
sink run on loopback, and every step's expectation is checked. Exit status 0 means every
flow ended as expected.
"""

from __future__ import annotations

import click

from ..demo.gateway_flows import run_gateway_demo


@click.command()
@click.option("--time-scale", default=0.001, show_default=True, type=float,
              help="Simulator time scale (notification ladder and delays).")
def demo(time_scale: float) -> None:
    """Run the payment, token and refund flows against a local simulator and print their history."""
    ok = run_gateway_demo(time_scale=time_scale)
    if not ok:
        raise click.exceptions.Exit(1)
