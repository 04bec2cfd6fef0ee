"""Schema migrations (Alembic), run programmatically: ``upgrade(engine)`` brings any store to head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

SCRIPT_LOCATION = "worker.store:migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_state(engine: Engine) -> str:
    """``ready`` (at this code's head), ``missing`` (no schema), ``behind`` (an older revision: run
    ``db upgrade``), or ``ahead`` (a revision this code does not know: a newer version migrated it)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    found = current(engine)
    if found is None:
        return "missing"
    if found == scripts.get_current_head():
        return "ready"
    return "behind" if found in {r.revision for r in scripts.walk_revisions()} else "ahead"
