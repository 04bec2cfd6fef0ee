"""Settings, parsed once from an injectable mapping, with errors that name the variable.

Nothing else in the product reads ``os.environ``. Key material stays a string here and is
turned into key objects only by the process that needs it (``Settings.signer()`` for the
processes that call Checus, ``Settings.verifier()`` for those that receive from it), so a
receiver never holds the merchant private key.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from worker.gateway.client import base_url_for
from worker.gateway.signing import KeyLoadError, Signer, Verifier, load_public_keys, read_key_file


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem

    def each(self) -> tuple[SettingsError, ...]:
        """Every setting at fault (one here; several for ``SettingsErrors``)."""
        return (self,)


class SettingsErrors(SettingsError):
    """Several settings are missing or malformed at once: each is reported, not only the first."""

    def __init__(self, errors: tuple[SettingsError, ...]) -> None:
        super().__init__(errors[0].variable, errors[0].problem)
        self.args = ("; ".join(str(error) for error in errors),)
        self.errors = errors

    def each(self) -> tuple[SettingsError, ...]:
        return self.errors


def raise_all(errors: list[SettingsError]) -> None:
    """Raise nothing, the one error, or all of them together."""
    flat = tuple(one for error in errors for one in error.each())
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise SettingsErrors(flat)


def _secret(env: Mapping[str, str], name: str, *, private: bool) -> str | None:
    """A key given inline (``NAME``) or as a file (``NAME_FILE``), not both."""
    inline, path = env.get(name), env.get(f"{name}_FILE")
    if inline and path:
        raise SettingsError(name, f"set either {name} or {name}_FILE, not both")
    if path:
        try:
            return read_key_file(path, setting=f"{name}_FILE", private=private)
        except KeyLoadError as exc:
            raise SettingsError(f"{name}_FILE", exc.problem) from None
    return inline or None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"must be a number, got {raw[:20]!r}") from None
    if value <= 0:
        raise SettingsError(name, "must be positive")
    return value


def _header_bytes(env: Mapping[str, str], name: str) -> int:
    value = int(_float(env, name, 16 * 1024))
    if value < 1024:
        raise SettingsError(name, "must be at least 1024 (a request line and its headers)")
    return value


def _ladder(env: Mapping[str, str], name: str) -> tuple[float, ...] | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        steps = tuple(float(part) for part in raw.replace(" ", "").split(","))
    except ValueError:
        raise SettingsError(name, "must be comma-separated seconds, e.g. 60,300,900,3600") from None
    if not steps or any(step <= 0 for step in steps):
        raise SettingsError(name, "steps must be positive")
    return steps


def _ops_token(env: Mapping[str, str]) -> str | None:
    token = env.get("CHECUS_OPS_TOKEN") or None
    if token is not None and len(token) < 24:
        raise SettingsError("CHECUS_OPS_TOKEN", "must be at least 24 characters (e.g. `openssl rand -hex 16`)")
    return token


def _stuck_after(env: Mapping[str, str], name: str) -> dict[str, float] | None:
    """``STATE=seconds,...``: how long a payment or refund may stay in a state before it counts as stuck."""
    raw = env.get(name)
    if not raw:
        return None
    limits: dict[str, float] = {}
    for part in raw.replace(" ", "").split(","):
        state, _, seconds = part.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            raise SettingsError(name, "must be STATE=seconds pairs, e.g. PENDING=90000,UNKNOWN=900") from None
        if not state.replace("_", "").isalpha() or not state.isupper() or value <= 0:
            raise SettingsError(name, "must be STATE=seconds pairs, e.g. PENDING=90000,UNKNOWN=900")
        limits[state] = value
    return limits


def _webhook_secret(env: Mapping[str, str]) -> str | None:
    url, secret = env.get("CHECUS_EVENT_WEBHOOK_URL"), env.get("CHECUS_EVENT_WEBHOOK_SECRET")
    if url and not secret:
        raise SettingsError("CHECUS_EVENT_WEBHOOK_SECRET", "is required when CHECUS_EVENT_WEBHOOK_URL is set")
    return secret or None


def _gateway_url(env: Mapping[str, str]) -> str:
    explicit = env.get("CHECUS_GATEWAY_URL")
    if explicit:
        if not explicit.startswith(("https://", "http://")):
            raise SettingsError("CHECUS_GATEWAY_URL", "must be an http(s) URL")
        return explicit.rstrip("/")
    try:
        return base_url_for(env.get("CHECUS_ENV", "uat"))
    except ValueError as exc:
        raise SettingsError("CHECUS_ENV", str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    gateway_url: str
    app_id: str
    merchant_no: str
    merchant_private_key: str | None = field(repr=False)
    platform_public_keys: str | None = field(repr=False)
    notify_base_url: str | None
    redis_url: str
    redis_sentinels: tuple[tuple[str, int], ...] = ()  # REDIS_SENTINELS: reach the primary through these
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_sentinel_tls: bool = False  # REDIS_SENTINEL_TLS: TLS to the sentinels (the data nodes: rediss://)
    redis_tls_ca_file: str | None = None  # verifies every Redis TLS server (else the system's CAs)
    redis_tls_cert_file: str | None = None  # with the key: our client certificate, for mutual TLS
    redis_tls_key_file: str | None = None
    database_url: str
    database_prepared_statements: bool = True  # DATABASE_PREPARED_STATEMENTS=off behind PgBouncer < 1.21
    http_connect_timeout: float = 5.0
    http_read_timeout: float = 20.0
    log_level: str = "INFO"
    time_scale: float = 1.0
    event_handler: str | None = None
    event_webhook_url: str | None = None
    event_webhook_secret: str | None = field(default=None, repr=False)
    poll_ladder: tuple[float, ...] | None = None
    stuck_after: dict[str, float] | None = None
    ops_token: str | None = field(default=None, repr=False)
    metrics_port: int | None = None
    role_metrics_ports: dict[str, int] = field(default_factory=dict)  # CHECUS_METRICS_PORT_<ROLE>
    receiver_host: str = "127.0.0.1"
    receiver_port: int = 8080
    receiver_processes: int = 1
    receiver_header_timeout: float = 10.0
    receiver_body_timeout: float = 10.0
    receiver_max_header_bytes: int = 16 * 1024
    api_host: str = "127.0.0.1"
    api_port: int = 8081

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Every setting parsed; all the malformed ones reported together (``SettingsErrors``)."""
        parsers: dict[str, Callable[[], Any]] = {
            "gateway_url": lambda: _gateway_url(env),
            "app_id": lambda: env.get("CHECUS_APP_ID", ""),
            "merchant_no": lambda: env.get("CHECUS_MERCHANT_NO", ""),
            "merchant_private_key": lambda: _secret(env, "CHECUS_MERCHANT_PRIVATE_KEY", private=True),
            "platform_public_keys": lambda: _secret(env, "CHECUS_PLATFORM_PUBLIC_KEYS", private=False),
            "notify_base_url": lambda: (env.get("CHECUS_NOTIFY_BASE_URL") or "").rstrip("/") or None,
            "redis_url": lambda: env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "redis_sentinels": lambda: _sentinels(env),
            "redis_sentinel_master": lambda: _sentinel_master(env),
            "redis_sentinel_password": lambda: env.get("REDIS_SENTINEL_PASSWORD") or None,
            "redis_sentinel_tls": lambda: _sentinel_tls(env),
            "redis_tls_ca_file": lambda: _tls_ca_file(env),
            "redis_tls_cert_file": lambda: _tls_client_cert(env),
            "redis_tls_key_file": lambda: env.get("REDIS_TLS_KEY_FILE") or None,  # checked with the cert
            "database_url": lambda: env.get("DATABASE_URL", "sqlite:///checus-worker.db"),
            "database_prepared_statements": lambda: _on_off(env, "DATABASE_PREPARED_STATEMENTS", default=True),
            "http_connect_timeout": lambda: _float(env, "CHECUS_HTTP_CONNECT_TIMEOUT", 5.0),
            "http_read_timeout": lambda: _float(env, "CHECUS_HTTP_READ_TIMEOUT", 20.0),
            "log_level": lambda: env.get("LOG_LEVEL", "INFO"),
            "time_scale": lambda: _float(env, "CHECUS_TIME_SCALE", 1.0),
            "poll_ladder": lambda: _ladder(env, "CHECUS_POLL_LADDER"),
            "stuck_after": lambda: _stuck_after(env, "CHECUS_STUCK_AFTER"),
            "event_handler": lambda: env.get("CHECUS_EVENT_HANDLER") or None,
            "event_webhook_url": lambda: env.get("CHECUS_EVENT_WEBHOOK_URL") or None,
            "event_webhook_secret": lambda: _webhook_secret(env),
            "ops_token": lambda: _ops_token(env),
            "metrics_port": lambda: int(_float(env, "CHECUS_METRICS_PORT", 0)) or None,
            "role_metrics_ports": lambda: _role_ports(env),
            "receiver_host": lambda: env.get("CHECUS_RECEIVER_HOST", "127.0.0.1"),
            "receiver_port": lambda: int(_float(env, "CHECUS_RECEIVER_PORT", 8080)),
            "receiver_processes": lambda: max(1, int(_float(env, "CHECUS_RECEIVER_PROCESSES", 1))),
            "receiver_header_timeout": lambda: _float(env, "CHECUS_RECEIVER_HEADER_TIMEOUT", 10.0),
            "receiver_body_timeout": lambda: _float(env, "CHECUS_RECEIVER_BODY_TIMEOUT", 10.0),
            "receiver_max_header_bytes": lambda: _header_bytes(env, "CHECUS_RECEIVER_MAX_HEADER_BYTES"),
            "api_host": lambda: env.get("CHECUS_API_HOST", "127.0.0.1"),
            "api_port": lambda: int(_float(env, "CHECUS_API_PORT", 8081)),
        }
        values: dict[str, Any] = {}
        errors: list[SettingsError] = []
        for name, parse in parsers.items():
            try:
                values[name] = parse()
            except SettingsError as exc:
                errors.append(exc)
        raise_all(errors)
        return cls(**values)

    def require(self, *names: str) -> None:
        """Fail fast, naming the variable, when a process needs a setting that is empty."""
        variables = {"app_id": "CHECUS_APP_ID", "merchant_no": "CHECUS_MERCHANT_NO",
                     "merchant_private_key": "CHECUS_MERCHANT_PRIVATE_KEY",
                     "platform_public_keys": "CHECUS_PLATFORM_PUBLIC_KEYS",
                     "notify_base_url": "CHECUS_NOTIFY_BASE_URL"}
        for name in names:
            if not getattr(self, name):
                raise SettingsError(variables[name], "is required")

    def signer(self) -> Signer:
        self.require("merchant_private_key")
        try:
            return Signer.from_value(self.merchant_private_key or "", setting="CHECUS_MERCHANT_PRIVATE_KEY")
        except KeyLoadError as exc:
            raise SettingsError(exc.setting, exc.problem) from None

    def verifier(self) -> Verifier:
        self.require("platform_public_keys")
        try:
            keys = load_public_keys(self.platform_public_keys or "", setting="CHECUS_PLATFORM_PUBLIC_KEYS")
        except KeyLoadError as exc:
            raise SettingsError(exc.setting, exc.problem) from None
        return Verifier(keys)

    def with_overrides(self, **changes: Any) -> Settings:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return Settings(**values)


METRICS_ROLES = ("web", "work", "scheduler", "api")


def _role_ports(env: Mapping[str, str]) -> dict[str, int]:
    """``CHECUS_METRICS_PORT_WEB`` … : a role's own port, when several roles share one host's settings."""
    ports: dict[str, int] = {}
    errors: list[SettingsError] = []
    for role in METRICS_ROLES:
        try:
            port = int(_float(env, f"CHECUS_METRICS_PORT_{role.upper()}", 0))
        except SettingsError as exc:
            errors.append(exc)
            continue
        if port:
            ports[role] = port
    raise_all(errors)
    return ports


def _sentinels(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """``REDIS_SENTINELS=host:port,host:port``: Redis through Sentinel (``REDIS_URL`` then gives
    the database number, the password and ``rediss://`` for TLS of the data nodes, not their address)."""
    found = []
    for item in (env.get("REDIS_SENTINELS") or "").split(","):
        if not item.strip():
            continue
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError("REDIS_SENTINELS", f"{item.strip()!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _sentinel_master(env: Mapping[str, str]) -> str | None:
    name = env.get("REDIS_SENTINEL_MASTER") or None
    if env.get("REDIS_SENTINELS", "").strip() and not name:
        raise SettingsError("REDIS_SENTINEL_MASTER", "is required with REDIS_SENTINELS (the monitored master's name)")
    return name


def _sentinel_tls(env: Mapping[str, str]) -> bool:
    on = _on_off(env, "REDIS_SENTINEL_TLS", default=False)
    if on and not env.get("REDIS_SENTINELS", "").strip():
        raise SettingsError("REDIS_SENTINEL_TLS", "is on but REDIS_SENTINELS is not set")
    return on


def _uses_tls(env: Mapping[str, str]) -> bool:
    """Whether any Redis connection is TLS: the data nodes (``rediss://``) or the sentinels."""
    if urlsplit(env.get("REDIS_URL", "")).scheme == "rediss":
        return True
    try:
        return _on_off(env, "REDIS_SENTINEL_TLS", default=False)
    except SettingsError:
        return True  # said once, by REDIS_SENTINEL_TLS itself


def _readable(env: Mapping[str, str], name: str) -> str | None:
    """A file setting of Redis TLS: readable now, and only where some connection uses TLS."""
    path = env.get(name) or None
    if path is None:
        return None
    if not _uses_tls(env):
        raise SettingsError(name, "is set but no Redis connection uses TLS (REDIS_URL is not rediss:// "
                                  "and REDIS_SENTINEL_TLS is off)")
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise SettingsError(name, f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _tls_ca_file(env: Mapping[str, str]) -> str | None:
    """``REDIS_TLS_CA_FILE``: PEM certificates that sign the Redis servers' (sentinels and data nodes)."""
    path = _readable(env, "REDIS_TLS_CA_FILE")
    if path is not None:
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, ValueError):
            raise SettingsError("REDIS_TLS_CA_FILE", f"{path} holds no PEM certificate") from None
    return path


def _tls_client_cert(env: Mapping[str, str]) -> str | None:
    """``REDIS_TLS_CERT_FILE`` and ``REDIS_TLS_KEY_FILE``: both or neither, and the key the certificate's."""
    if bool(env.get("REDIS_TLS_CERT_FILE")) != bool(env.get("REDIS_TLS_KEY_FILE")):
        given, lacking = (("REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE") if env.get("REDIS_TLS_CERT_FILE")
                          else ("REDIS_TLS_KEY_FILE", "REDIS_TLS_CERT_FILE"))
        raise SettingsError(lacking, f"is required with {given} (a client certificate and its key)")
    cert, key = _readable(env, "REDIS_TLS_CERT_FILE"), _readable(env, "REDIS_TLS_KEY_FILE")
    if cert is not None and key is not None:
        try:  # (an encrypted key is refused, not prompted for)
            ssl.create_default_context().load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, ValueError):
            raise SettingsError("REDIS_TLS_CERT_FILE", f"{cert} and REDIS_TLS_KEY_FILE are not a PEM "
                                                       "certificate and its unencrypted key") from None
    return cert


def _on_off(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise SettingsError(name, f"{value!r} is not on or off")
