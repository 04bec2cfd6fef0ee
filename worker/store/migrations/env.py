"""Alembic environment: runs on the connection ``store.migrate`` hands it (or on DATABASE_URL)."""

from __future__ import annotations

from alembic import context

from worker.store.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from worker.store.db import create_engine

        url = config.get_main_option("sqlalchemy.url") or "sqlite:///checus-worker.db"
        with create_engine(url).begin() as conn:
            context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
