"""``checus-worker sim``: the local Checus gateway, for development, demos and tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click

from worker.gateway.signing import PortalKeyPair, generate_portal_key_pair


def dev_keys(keys_dir: Path) -> tuple[PortalKeyPair, PortalKeyPair]:
    """Merchant and platform pairs for local use, created once in ``keys_dir`` (mode 0700)."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pairs = []
    for role in ("merchant", "platform"):
        private_path, public_path = keys_dir / f"{role}_private_key.txt", keys_dir / f"{role}_public_key.txt"
        if not private_path.exists():
            pair = generate_portal_key_pair()
            fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(pair.private_key)
            public_path.write_text(pair.public_key)
        pairs.append(PortalKeyPair(private_key=private_path.read_text().strip(),
                                   public_key=public_path.read_text().strip()))
    return pairs[0], pairs[1]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--app-id", help="Overrides CHECUS_SIM_APP_ID.")
@click.option("--merchant-no", help="Overrides CHECUS_SIM_MERCHANT_NO.")
@click.option("--time-scale", type=float, help="Multiplies the notification ladder (0.01 = 100x faster).")
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".checus-sim"),
              show_default=True, help="Where development keys are created when none are configured.")
def sim(host: str, port: int, app_id: str | None, merchant_no: str | None, time_scale: float | None,
        keys_dir: Path) -> None:
    """Run the Checus simulator at http://HOST:PORT/aggregate-pay/api/gateway/...

    Keys come from CHECUS_SIM_MERCHANT_PUBLIC_KEYS / CHECUS_SIM_PLATFORM_PRIVATE_KEY (or
    their _FILE forms). With none set, a development pair for each side is kept in
    --keys-dir. Logs are JSON lines on stderr (as every role's): the first, ``sim.started``,
    holds the settings a client needs, then ``sim.notifications.off`` if CHECUS_NOTIFY_BASE_URL
    and the simulator's default notify URLs are all unset (no notification would be sent).
    """
    from worker.devtools.simulator.config import SimulatorConfig
    from worker.devtools.simulator.server import serve
    from worker.devtools.simulator.startup import announce
    from worker.logs import configure_logging

    configure_logging(level="INFO")
    env = dict(os.environ)
    generated: Path | None = None
    env.setdefault("CHECUS_SIM_APP_ID", "SIM_APP")
    env.setdefault("CHECUS_SIM_MERCHANT_NO", "SIM_MERCHANT")
    if not env.get("CHECUS_SIM_MERCHANT_PUBLIC_KEYS") and not env.get("CHECUS_SIM_MERCHANT_PUBLIC_KEYS_FILE"):
        merchant, platform = dev_keys(keys_dir)
        env["CHECUS_SIM_MERCHANT_PUBLIC_KEYS"] = merchant.public_key
        env["CHECUS_SIM_PLATFORM_PRIVATE_KEY"] = platform.private_key
        generated = keys_dir
    config = SimulatorConfig.from_env(env)
    if app_id is not None:
        config = dataclasses.replace(config, app_id=app_id)
    if merchant_no is not None:
        config = dataclasses.replace(config, merchant_no=merchant_no)
    if time_scale is not None:
        config = dataclasses.replace(config, time_scale=time_scale)
    announce(config, host=host, port=port, environ=env, keys_dir=generated)
    serve(config, host=host, port=port)
