"""Redis TLS settings: files checked when parsed (one line naming the setting), and the options
redis-py is handed for the sentinels and the data nodes (its own TLS: ``ssl=True`` and ``ssl_*``)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import MasterNotFoundError, SentinelManagedConnection, SentinelManagedSSLConnection

from worker.config import Settings, SettingsError
from worker.runtime.redis_clients import async_redis, sync_redis
from worker.runtime.startup import tls_refused

SENTINEL = {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "checus"}


def _pem_pair(root: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = root / f"{name}.crt", root / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca, _ = _pem_pair(tmp_path, "ca")
    cert, key = _pem_pair(tmp_path, "client")
    _, other_key = _pem_pair(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {"ca": ca, "cert": cert, "key": key, "other_key": other_key, "garbage": garbage,
            "missing": tmp_path / "nowhere.pem"}


def _error(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    return str(info.value)


def test_tls_settings_are_parsed_and_off_by_default(files: dict[str, Path]) -> None:
    assert not Settings.from_env(SENTINEL).redis_sentinel_tls
    settings = Settings.from_env({**SENTINEL, "REDIS_SENTINEL_TLS": "on", "REDIS_TLS_CA_FILE": str(files["ca"]),
                                  "REDIS_TLS_CERT_FILE": str(files["cert"]), "REDIS_TLS_KEY_FILE": str(files["key"])})
    assert settings.redis_sentinel_tls and settings.redis_tls_ca_file == str(files["ca"])
    assert (settings.redis_tls_cert_file, settings.redis_tls_key_file) == (str(files["cert"]), str(files["key"]))
    assert Settings.from_env({"REDIS_URL": "rediss://h/0", "REDIS_TLS_CA_FILE": str(files["ca"])}).redis_tls_ca_file


def test_a_tls_file_that_cannot_be_used_is_one_error_naming_the_setting(files: dict[str, Path]) -> None:
    tls = {**SENTINEL, "REDIS_SENTINEL_TLS": "on"}
    assert _error({**tls, "REDIS_TLS_CA_FILE": str(files["missing"])}) == (
        f"REDIS_TLS_CA_FILE: cannot read {files['missing']}: No such file or directory")
    assert _error({**tls, "REDIS_TLS_CA_FILE": str(files["garbage"])}) == (
        f"REDIS_TLS_CA_FILE: {files['garbage']} holds no PEM certificate")
    assert _error({**tls, "REDIS_TLS_CERT_FILE": str(files["cert"])}).startswith(
        "REDIS_TLS_KEY_FILE: is required with REDIS_TLS_CERT_FILE")
    assert _error({**tls, "REDIS_TLS_KEY_FILE": str(files["key"])}).startswith(
        "REDIS_TLS_CERT_FILE: is required with REDIS_TLS_KEY_FILE")
    assert _error({**tls, "REDIS_TLS_CERT_FILE": str(files["cert"]), "REDIS_TLS_KEY_FILE": str(files["other_key"])
                   }).startswith("REDIS_TLS_CERT_FILE: ")  # not its key
    assert _error({**tls, "REDIS_TLS_CERT_FILE": str(files["cert"]), "REDIS_TLS_KEY_FILE": str(files["missing"])
                   }).startswith("REDIS_TLS_KEY_FILE: cannot read")


def test_tls_settings_that_nothing_would_use_are_refused(files: dict[str, Path]) -> None:
    assert _error({"REDIS_SENTINEL_TLS": "on"}) == "REDIS_SENTINEL_TLS: is on but REDIS_SENTINELS is not set"
    assert _error({**SENTINEL, "REDIS_SENTINEL_TLS": "maybe"}) == "REDIS_SENTINEL_TLS: 'maybe' is not on or off"
    assert _error({**SENTINEL, "REDIS_TLS_CA_FILE": str(files["ca"])}).startswith(
        "REDIS_TLS_CA_FILE: is set but no Redis connection uses TLS")


def test_sentinel_and_data_node_clients_get_redis_py_tls_options(files: dict[str, Path]) -> None:
    env = {**SENTINEL, "REDIS_SENTINEL_TLS": "on", "REDIS_URL": "rediss://:pw@ignored/2",
           "REDIS_TLS_CA_FILE": str(files["ca"]), "REDIS_TLS_CERT_FILE": str(files["cert"]),
           "REDIS_TLS_KEY_FILE": str(files["key"])}
    tls = {"ssl_ca_certs": str(files["ca"]), "ssl_certfile": str(files["cert"]), "ssl_keyfile": str(files["key"]),
           "ssl_cert_reqs": "required"}
    for client in (sync_redis(Settings.from_env(env)), async_redis(Settings.from_env(env))):
        pool = client.connection_pool
        assert pool.connection_class.__name__ == SentinelManagedSSLConnection.__name__  # sync and async kinds
        assert tls.items() <= pool.connection_kwargs.items() and pool.connection_kwargs["db"] == 2
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool  # type: ignore[union-attr]
        assert sentinel.connection_class.__name__ == "SSLConnection"
        assert tls.items() <= sentinel.connection_kwargs.items()
    plain = sync_redis(Settings.from_env({**SENTINEL, "REDIS_URL": "redis://ignored/0"})).connection_pool
    assert plain.connection_class is SentinelManagedConnection and "ssl_ca_certs" not in plain.connection_kwargs
    assert plain.sentinel_manager.sentinels[0].connection_pool.connection_class.__name__ == "Connection"  # type: ignore[attr-defined]
    direct = sync_redis(Settings.from_env({"REDIS_URL": "rediss://h:6380/0", "REDIS_TLS_CA_FILE": str(files["ca"])}))
    assert direct.connection_pool.connection_class.__name__ == "SSLConnection"
    assert direct.connection_pool.connection_kwargs["ssl_ca_certs"] == str(files["ca"])


@pytest.mark.parametrize(("exc", "detail", "line"), [
    (MasterNotFoundError("No master found: ConnectionError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                         "failed: self-signed certificate in certificate chain"), "",
     "REDIS_TLS_CA_FILE: the TLS certificate of the sentinels is not signed by it"),
    # redis-py before 8.2 keeps only "network:ConnectionError": the reason is the sentinel's own answer
    (MasterNotFoundError("No master found for 'checus' : <Redis<…>> - network:ConnectionError"),
     "Error 1 connecting to 127.0.0.1:26379. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
     "REDIS_TLS_CA_FILE: the TLS certificate of the sentinels is not signed by it"),
    (RedisConnectionError("Error 1 connecting to 10.0.0.5:6379. [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                          "verify failed: IP address mismatch, certificate is not valid for '10.0.0.5'"), "",
     "REDIS_TLS_CA_FILE: the TLS certificate of the Redis primary does not name the address"),
    (MasterNotFoundError("No master found for 'checus' : <Redis<…>> - network:ConnectionError"),
     "Error while reading from 127.0.0.1:1 : (1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert "
     "certificate required')",
     "REDIS_TLS_CERT_FILE: the sentinels refused our client certificate"),
])
def test_a_failed_tls_handshake_names_the_setting(exc: Exception, detail: str, line: str) -> None:
    refused = tls_refused(exc, detail)  # type: ignore[arg-type]
    assert refused is not None and str(refused).startswith(line)


def test_an_outage_is_not_a_tls_setting() -> None:
    assert tls_refused(RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")) is None
    assert tls_refused(MasterNotFoundError("No master found: (104, 'Connection reset by peer')")) is None
