"""``checus-worker sim``: the local Checus gateway, for development, demos and tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click

from ..gateway.signing import PortalKeyPair, generate_portal_key_pair


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
    --keys-dir and the settings a client needs are printed.
    """
    from ..simulator.config import SimulatorConfig
    from ..simulator.server import serve

    env = dict(os.environ)
    env.setdefault("CHECUS_SIM_APP_ID", "SIM_APP")
    env.setdefault("CHECUS_SIM_MERCHANT_NO", "SIM_MERCHANT")
    if not env.get("CHECUS_SIM_MERCHANT_PUBLIC_KEYS") and not env.get("CHECUS_SIM_MERCHANT_PUBLIC_KEYS_FILE"):
        merchant, platform = dev_keys(keys_dir)
        env["CHECUS_SIM_MERCHANT_PUBLIC_KEYS"] = merchant.public_key
        env["CHECUS_SIM_PLATFORM_PRIVATE_KEY"] = platform.private_key
        click.echo(f"development keys in {keys_dir}/; point a client at them with:")
        click.echo(f"  CHECUS_GATEWAY_URL=http://{host}:{port}")
        click.echo(f"  CHECUS_MERCHANT_PRIVATE_KEY_FILE={keys_dir}/merchant_private_key.txt")
        click.echo(f"  CHECUS_PLATFORM_PUBLIC_KEYS_FILE={keys_dir}/platform_public_key.txt")
    config = SimulatorConfig.from_env(env)
    if app_id is not None:
        config = dataclasses.replace(config, app_id=app_id)
    if merchant_no is not None:
        config = dataclasses.replace(config, merchant_no=merchant_no)
    if time_scale is not None:
        config = dataclasses.replace(config, time_scale=time_scale)
    click.echo(f"  CHECUS_APP_ID={config.app_id}  CHECUS_MERCHANT_NO={config.merchant_no}")
    serve(config, host=host, port=port)
