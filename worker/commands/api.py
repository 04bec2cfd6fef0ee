"""``checus-worker api`` (the merchant HTTP API, a process role) and ``api-keys create|list|revoke``."""

from __future__ import annotations

import json

import click

from worker.bootstrap import process_runtime, role_runtime
from worker.logs import configure_logging


@click.command()
@click.option("--host", help="Overrides CHECUS_API_HOST (default 127.0.0.1: the API is internal).")
@click.option("--port", type=int, help="Overrides CHECUS_API_PORT (default 8081).")
def api(host: str | None, port: int | None) -> None:
    """Serve the merchant HTTP API (/v1: payments, refunds, cards, events; reference at /v1/docs)."""
    from worker.api.app import serve_api

    rt = role_runtime("api")
    configure_logging(level=rt.settings.log_level)
    serve_api(rt, host=host or rt.settings.api_host, port=port or rt.settings.api_port)


@click.group("api-keys")
def api_keys() -> None:
    """Make, list and revoke the merchant API's keys (only a SHA-256 of each secret is stored)."""


@api_keys.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="The key may read (GET) but not create or remove anything.")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON on stdout.")
def create(name: str, read_only: bool, as_json: bool) -> None:
    """Make a key named NAME and print its secret, once: it cannot be shown again."""
    from worker.api.keys import ApiKeyError, create_key

    rt = process_runtime()
    try:
        key, secret = create_key(rt.engine, name, read_only=read_only, now=rt.clock())
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"name": key.name, "read_only": key.read_only, "secret": secret}))
        return
    click.echo(secret)
    click.echo(f"key {key.name!r} ({'read-only' if read_only else 'read-write'}): the secret above is shown "
               "once; send it as Authorization: Bearer <secret>", err=True)


@api_keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON on stdout.")
def list_(as_json: bool) -> None:
    """List the keys (name, prefix, access, created, revoked); never their secrets."""
    from worker.api.keys import list_keys

    keys = list_keys(process_runtime().engine)
    rows = [{"name": k.name, "prefix": k.prefix, "read_only": k.read_only, "created_at": k.created_at.isoformat(),
             "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None} for k in keys]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        access = "read-only" if row["read_only"] else "read-write"
        click.echo(f"{row['name']}\t{row['prefix']}…\t{access}\t{state}")


@api_keys.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the key named NAME: it is refused from its next request on."""
    from worker.api.keys import ApiKeyError, revoke_key

    rt = process_runtime()
    try:
        key = revoke_key(rt.engine, name, now=rt.clock())
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"key {key.name!r} revoked at {key.revoked_at.isoformat() if key.revoked_at else '?'}")
