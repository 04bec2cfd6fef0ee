"""The receiver's ASGI application, built from a runtime (``checus-worker web`` serves it)."""

from __future__ import annotations

from starlette.applications import Starlette

from .bootstrap import Runtime, process_runtime
from .ingest import Ingestor
from .receiver import create_receiver


def receiver_app(rt: Runtime) -> Starlette:
    ingestor = Ingestor(
        verifier=rt.verifier, engine=rt.engine, redis=rt.redis, enqueuer=rt.enqueuer,
        app_ids=frozenset({rt.settings.app_id}), merchant_nos=frozenset({rt.settings.merchant_no}), clock=rt.clock,
    )
    return create_receiver(ingestor, engine=rt.engine, redis=rt.redis)


def app_factory() -> Starlette:
    """For ``uvicorn --factory worker.web:app_factory``."""
    return receiver_app(process_runtime())
