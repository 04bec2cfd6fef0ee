"""Waiting for what a role needs at start, with one clear line instead of a crash loop.

A process started before its dependencies (honcho starts everything at once; a deploy may start
workers before ``db upgrade`` has run) says what it waits for and where, every few seconds, and
goes on as soon as it is there: Redis answering, and the store at the schema this code expects.
Never a traceback, never silence. Where a URL is logged, its password is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from redis import Redis
from redis.exceptions import AuthenticationError, RedisError
from redis.sentinel import MasterNotFoundError
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from worker.config import SettingsError
from worker.store.migrate import schema_state

log = structlog.get_logger("worker.startup")
EVERY = 5.0


def password_refused(exc: RedisError) -> SettingsError | None:
    """The setting at fault when Redis or its sentinels refused our password (or wanted one), else None.

    A sentinel's refusal reaches us inside ``MasterNotFoundError`` (redis-py tried each sentinel);
    the data node's is an ``AuthenticationError`` of its own. Never the password in the message."""
    if isinstance(exc, MasterNotFoundError) and "AuthenticationError" in str(exc):
        return SettingsError("REDIS_SENTINEL_PASSWORD", "the sentinels refused it, or want one and it is unset")
    if isinstance(exc, AuthenticationError) or "NOAUTH" in str(exc):
        return SettingsError("REDIS_URL", "Redis refused its password, or wants one and the URL has none")
    return None


#: what OpenSSL says when a server refused our client certificate, or wanted one and got none
_CLIENT_CERT_REFUSED = ("ALERT_CERTIFICATE_REQUIRED", "ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA",
                        "ALERT_CERTIFICATE_UNKNOWN", "ALERT_HANDSHAKE_FAILURE")


def tls_refused(exc: RedisError, detail: str = "") -> SettingsError | None:
    """The setting at fault when a TLS handshake with the sentinels or the primary failed, else None.

    A certificate we cannot verify (not signed by ``REDIS_TLS_CA_FILE``, or not naming the address
    it was reached at) and a client certificate the server refused are settings, not outages: no
    wait makes them work. ``MasterNotFoundError`` means the sentinels' handshake failed; ``detail``
    is what a sentinel itself answered (``sentinel_detail``)."""
    text = f"{exc} {detail}"
    server = "the sentinels" if isinstance(exc, MasterNotFoundError) else "the Redis primary"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        if "mismatch" in text:
            return SettingsError("REDIS_TLS_CA_FILE", f"the TLS certificate of {server} does not name the "
                                                      "address it was reached at")
        return SettingsError("REDIS_TLS_CA_FILE", f"the TLS certificate of {server} is not signed by it "
                                                  "(or it is unset and the system's CAs do not sign it)")
    if any(alert in text for alert in _CLIENT_CERT_REFUSED):
        return SettingsError("REDIS_TLS_CERT_FILE", f"{server} refused our client certificate (or wanted "
                                                    "one and it is unset)")
    return None


def sentinel_detail(redis: Redis, exc: RedisError) -> str:
    """When no sentinel named a primary, the first sentinel's own error, asked again: redis-py before
    8.2 keeps only the class names of the sentinels' errors in ``MasterNotFoundError``."""
    if not isinstance(exc, MasterNotFoundError):
        return ""
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        try:
            sentinel.ping()
        except RedisError as answer:
            return str(answer)
    return ""


def wait_for_redis(redis: Redis, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once Redis answers PING; log where it is connecting while it does not. A refused password
    or a failed TLS handshake is a ``SettingsError`` at once (one line, exit 78), not a wait."""
    kwargs = redis.connection_pool.connection_kwargs
    where = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"
    waited = False
    while True:
        try:
            redis.ping()
        except RedisError as exc:
            refused = password_refused(exc) or tls_refused(exc, sentinel_detail(redis, exc))
            if refused is not None:  # waiting will not help: the setting is wrong
                raise refused from None
            log.warning("startup.waiting_for_redis", redis=where, error=type(exc).__name__)
            waited = True
            sleep(EVERY)
            continue
        if waited:
            log.info("startup.redis_ready", redis=where)
        return


def wait_for_schema(engine: Engine, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once the store has this code's schema; until then, say to run ``db upgrade``.

    A store *ahead* of this code (a newer version migrated it during a rolling deploy) is used as
    it is, with a warning: migrations are additive, and stopping old workers mid-deploy would help
    nobody.
    """
    where = make_url(str(engine.url)).render_as_string(hide_password=True)
    waited = False
    while True:
        try:
            state = schema_state(engine)
        except SQLAlchemyError as exc:
            state = f"unreachable ({type(exc).__name__})"
        if state in ("ready", "ahead"):
            if state == "ahead":
                log.warning("startup.schema_ahead", store=where)
            elif waited:
                log.info("startup.schema_ready", store=where)
            return
        log.warning("startup.waiting_for_schema", store=where, schema=state, action="run `checus-worker db upgrade`")
        waited = True
        sleep(EVERY)
