"""``checus-worker keys generate``: a merchant key pair in the portal's format; ``keys dev``: the
simulator's development pairs, made before anything runs (``.env.example``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from worker.gateway.signing import generate_portal_key_pair


@click.group()
def keys() -> None:
    """Manage merchant signing keys."""


@keys.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory for merchant_private_key.txt and merchant_public_key.txt.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate(out_dir: Path, force: bool) -> None:
    """Write a new RSA-2048 pair: private key (PKCS#8, mode 0600) and public key (X.509), one Base64 line each.

    Upload the public key in the Checus portal; keep the private key where only the
    worker can read it and point CHECUS_MERCHANT_PRIVATE_KEY_FILE at it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / "merchant_private_key.txt"
    public_path = out_dir / "merchant_public_key.txt"
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise click.ClickException(f"{path} exists; pass --force to overwrite")
    pair = generate_portal_key_pair()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pair.private_key + "\n")
    os.chmod(private_path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    public_path.write_text(pair.public_key + "\n")
    click.echo(f"private key: {private_path} (mode 0600)")
    click.echo(f"public key:  {public_path} (upload this one in the Checus portal)")


@keys.command()
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".checus-sim"),
              show_default=True, help="The directory `checus-worker sim --keys-dir` reads (its default too).")
def dev(keys_dir: Path) -> None:
    """Make the simulator's development key pairs now, if missing (`checus-worker sim` makes the same at start).

    For `honcho start` with `.env.example` copied to `.env`: the worker and the receiver read these
    files at start, so they must exist before the simulator runs. Never for production.
    """
    from worker.commands.sim import dev_keys

    dev_keys(keys_dir)
    for name in ("merchant_private_key.txt", "platform_public_key.txt", "merchant_public_key.txt",
                 "platform_private_key.txt"):
        click.echo(str(keys_dir / name))
