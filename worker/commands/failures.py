"""The CLI's one line for a store or Redis it cannot use: what is wrong and what to do, never a traceback.

A store without tables (``db upgrade`` not run yet) and an unreachable store or Redis are the
first things a new install meets; each gets its own line and exit code (BSD sysexits: 78
EX_CONFIG for the missing schema, 69 EX_UNAVAILABLE for a service that does not answer). The
driver's own message is cut to its first line: it names the problem, never a password.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError

MISSING_TABLE = ("no such table", "does not exist", "undefinedtable")
INFRASTRUCTURE: tuple[type[Exception], ...] = (DBAPIError, RedisConnectionError, RedisTimeoutError)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def one_line(exc: Exception) -> tuple[str, int]:
    """The line to print and the exit code for a store or Redis failure."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"error: redis_unavailable: Redis does not answer ({_first_line(exc)}); start it or fix REDIS_URL", 69
    message = _first_line(exc)
    if any(marker in message.lower() for marker in MISSING_TABLE):
        return "error: store_not_ready: the store has no schema yet; run `checus-worker db upgrade`", 78
    return f"error: store_unavailable: the store refused or does not answer ({message}); check DATABASE_URL", 69
