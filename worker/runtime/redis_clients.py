"""The Redis clients of a process: a plain URL, or the primary found through Sentinel.

Every Redis user (rq queues and workers, locks, the scheduler lease, the receiver's seen-keys and
wake flags, and ``async_redis`` for asyncio code) gets its client here, so with ``REDIS_SENTINELS``
set all of them follow a failover without a restart: redis-py's Sentinel-managed connections ask
the sentinels for the current primary on every new connection, and a connection to a demoted
primary fails (READONLY / refused) and is replaced. ``REDIS_URL`` keeps giving the database
number, the data nodes' password and TLS.

TLS is redis-py's own (``ssl=True`` and its ``ssl_*`` options; through Sentinel, ``ssl=True`` makes
the pool's connections ``SentinelManagedSSLConnection``): to the data nodes when ``REDIS_URL`` is
``rediss://``, to the sentinels with ``REDIS_SENTINEL_TLS=on``. Both verify the server's certificate
and its address (``REDIS_TLS_CA_FILE``, else the system's CAs) and present ours when
``REDIS_TLS_CERT_FILE``/``REDIS_TLS_KEY_FILE`` are set.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from worker.config import Settings

SOCKET_TIMEOUT = 5.0  # a sentinel or primary that hangs is given up on, and the next one asked
# Typed from redis 8.2 on, untyped before: called through Any so either type-checks the same.
_SENTINEL: Any = Sentinel
_ASYNC_SENTINEL: Any = AsyncSentinel


def _tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options of one connection, from the settings (certificates always verified)."""
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file and settings.redis_tls_key_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


def _data_node_options(settings: Settings) -> dict[str, Any]:
    url = urlsplit(settings.redis_url)
    options: dict[str, Any] = {"db": int((url.path or "/0").lstrip("/") or 0), "socket_timeout": SOCKET_TIMEOUT,
                               "socket_connect_timeout": SOCKET_TIMEOUT}
    if url.password:
        options["password"] = unquote(url.password)
    if url.username:
        options["username"] = unquote(url.username)
    if url.scheme == "rediss":
        options.update(ssl=True, **_tls_options(settings))
    return options


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT}
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password
    if settings.redis_sentinel_tls:
        options.update(ssl=True, **_tls_options(settings))
    return options


def _url_options(settings: Settings) -> dict[str, Any]:
    """Without Sentinel: the TLS files for a ``rediss://`` URL (options in its query win)."""
    return _tls_options(settings) if urlsplit(settings.redis_url).scheme == "rediss" else {}


def sync_redis(settings: Settings) -> Redis:
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url, **_url_options(settings))
    sentinel = _SENTINEL(list(settings.redis_sentinels),
                        sentinel_kwargs=_sentinel_options(settings))
    master: Redis = sentinel.master_for(settings.redis_sentinel_master or "",
                                        **_data_node_options(settings))
    return master


def async_redis(settings: Settings) -> AsyncRedis:
    if not settings.redis_sentinels:
        return AsyncRedis.from_url(settings.redis_url, **_url_options(settings))
    sentinel = _ASYNC_SENTINEL(list(settings.redis_sentinels),
                             sentinel_kwargs=_sentinel_options(settings))
    master: AsyncRedis = sentinel.master_for(settings.redis_sentinel_master or "", **_data_node_options(settings))
    return master
