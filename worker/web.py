"""The receiver's ASGI application, built from a runtime (``checus-worker web`` serves it)."""

from __future__ import annotations

from redis.asyncio import Redis as AsyncRedis
from starlette.applications import Starlette

from .bootstrap import Runtime, process_runtime
from .ingest import Ingestor
from .receiver import create_receiver


def receiver_app(rt: Runtime) -> Starlette:
    ingestor = Ingestor(
        verifier=rt.verifier, engine=rt.engine, aredis=AsyncRedis.from_url(rt.settings.redis_url), enqueuer=rt.enqueuer,
        app_ids=frozenset({rt.settings.app_id}), merchant_nos=frozenset({rt.settings.merchant_no}), clock=rt.clock,
    )
    routes = []
    if rt.settings.ops_token:
        from .ops.page import ops_routes

        routes = ops_routes(rt, rt.settings.ops_token)
    return create_receiver(ingestor, engine=rt.engine, redis=rt.redis, extra_routes=routes)


def app_factory() -> Starlette:
    """For ``uvicorn --factory worker.web:app_factory``."""
    return receiver_app(process_runtime())
