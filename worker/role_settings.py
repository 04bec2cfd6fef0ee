"""What each process role needs of its settings, and what every setting is for.

A role checks its settings before it waits for anything: every missing or malformed setting is
reported at once (``SettingsErrors``), and the CLI prints one line per setting with what it is
for, then exits 78. ``Settings.from_env`` alone requires nothing (a merchant command or a test may
need no key at all); a role that cannot do its work without a setting requires it here.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.config import Settings, SettingsError, raise_all

#: the settings a role cannot run without (a key may come as ``NAME`` or ``NAME_FILE``)
_GATEWAY = ("CHECUS_APP_ID", "CHECUS_MERCHANT_NO", "CHECUS_MERCHANT_PRIVATE_KEY", "CHECUS_PLATFORM_PUBLIC_KEYS")
ROLE_NEEDS: dict[str, tuple[str, ...]] = {
    "web": ("CHECUS_APP_ID", "CHECUS_MERCHANT_NO", "CHECUS_PLATFORM_PUBLIC_KEYS"),
    "work": _GATEWAY,
    "api": _GATEWAY,
    "scheduler": (),
}
_KEYS = ("CHECUS_MERCHANT_PRIVATE_KEY", "CHECUS_PLATFORM_PUBLIC_KEYS")

PURPOSES: dict[str, str] = {
    "CHECUS_APP_ID": "the app id from the Checus portal, sent with every call and checked on every notification",
    "CHECUS_MERCHANT_NO": "the merchant number from the Checus portal, sent with every call and checked on "
                          "every notification",
    "CHECUS_MERCHANT_PRIVATE_KEY": "our merchant private key, Base64 PKCS#8 or PEM, or a mode-0600 file of it: "
                                   "signs every call to Checus",
    "CHECUS_PLATFORM_PUBLIC_KEYS": "Checus's platform public keys, or a file of them: verify every "
                                   "notification and answer",
    "CHECUS_GATEWAY_URL": "the gateway's base URL, e.g. the simulator's http://127.0.0.1:8090",
    "CHECUS_ENV": "which Checus gateway, uat or prod, when CHECUS_GATEWAY_URL is not set",
    "CHECUS_NOTIFY_BASE_URL": "the receiver's public base URL, from which Checus is sent where to notify",
    "CHECUS_HTTP_CONNECT_TIMEOUT": "seconds to connect to the gateway",
    "CHECUS_HTTP_READ_TIMEOUT": "seconds to wait for the gateway's answer",
    "CHECUS_TIME_SCALE": "multiplies every timer: polls, grace periods, retries",
    "CHECUS_POLL_LADDER": "seconds between status polls of an open payment or refund",
    "CHECUS_STUCK_AFTER": "how long a record may stay in a state before it counts as stuck",
    "CHECUS_EVENT_WEBHOOK_URL": "where merchant events are posted",
    "CHECUS_EVENT_WEBHOOK_SECRET": "the whsec_ secret that signs merchant events",
    "CHECUS_OPS_TOKEN": "the token of the read-only ops page",
    "CHECUS_METRICS_PORT": "the first port from which each process serves its Prometheus metrics",
    "CHECUS_METRICS_PORT_WEB": "the receiver's own metrics port",
    "CHECUS_METRICS_PORT_WORK": "a worker's own metrics port",
    "CHECUS_METRICS_PORT_SCHEDULER": "the scheduler's own metrics port",
    "CHECUS_METRICS_PORT_API": "the merchant API's own metrics port",
    "CHECUS_RECEIVER_PORT": "the port the receiver listens on",
    "CHECUS_RECEIVER_PROCESSES": "how many processes serve the receiver's port",
    "CHECUS_RECEIVER_HEADER_TIMEOUT": "seconds a client has to send a request's headers",
    "CHECUS_RECEIVER_BODY_TIMEOUT": "seconds a client has to send a request's body",
    "CHECUS_RECEIVER_MAX_HEADER_BYTES": "the largest request line and headers the receiver reads",
    "CHECUS_API_PORT": "the port the merchant API listens on",
    "REDIS_URL": "Redis for rq, locks, the scheduler lease and seen-keys: its address, or with Sentinel "
                 "the database number, the data nodes' password and rediss:// for TLS",
    "REDIS_SENTINEL_PASSWORD": "the password of the Redis Sentinels themselves",
    "REDIS_SENTINELS": "host:port of each Redis Sentinel, to reach the current Redis primary",
    "REDIS_SENTINEL_MASTER": "the name the sentinels monitor the Redis primary under",
    "REDIS_SENTINEL_TLS": "on or off: TLS to the Redis Sentinels (the data nodes use TLS when REDIS_URL is rediss://)",
    "REDIS_TLS_CA_FILE": "a PEM file of the CA certificates that sign the Redis servers' TLS certificates "
                         "(sentinels and data nodes)",
    "REDIS_TLS_CERT_FILE": "our PEM client certificate for Redis mutual TLS (with REDIS_TLS_KEY_FILE)",
    "REDIS_TLS_KEY_FILE": "the unencrypted PEM key of REDIS_TLS_CERT_FILE",
    "DATABASE_PREPARED_STATEMENTS": "on or off: server-side prepared statements, off behind PgBouncer before 1.21",
}


def purpose(variable: str) -> str | None:
    """What a setting is for (``NAME_FILE`` and ``NAME[i]`` are the setting ``NAME``)."""
    base = variable.partition("[")[0]
    return PURPOSES.get(base) or PURPOSES.get(base.removesuffix("_FILE"))


def role_settings(env: Mapping[str, str], role: str) -> Settings:
    """The settings of ``role``, or ``SettingsErrors`` naming every setting missing or malformed."""
    errors: list[SettingsError] = []
    settings: Settings | None = None
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        errors.extend(exc.each())
    faulty = {error.variable.partition("[")[0].removesuffix("_FILE") for error in errors}
    needed = ROLE_NEEDS[role]
    missing = [variable for variable in needed
               if variable not in faulty and not (env.get(variable) or env.get(f"{variable}_FILE"))]
    for variable in missing:
        hint = f" (or {variable}_FILE)" if variable in _KEYS else ""
        errors.append(SettingsError(variable, f"is required{hint}"))
    if settings is not None:  # the keys given are loaded now: a bad one is said at start, not on first use
        for variable, load in (("CHECUS_MERCHANT_PRIVATE_KEY", settings.signer),
                               ("CHECUS_PLATFORM_PUBLIC_KEYS", settings.verifier)):
            if variable in needed and variable not in missing:
                try:
                    load()
                except SettingsError as exc:
                    errors.append(exc)
    raise_all(errors)
    assert settings is not None  # no error was raised: every setting parsed
    return settings
