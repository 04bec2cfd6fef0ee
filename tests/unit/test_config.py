"""Settings are parsed once from a mapping; every error names the variable and never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import Settings, SettingsError
from worker.gateway.signing import PortalKeyPair


def test_defaults_and_built_in_gateway_urls() -> None:
    settings = Settings.from_env({})
    assert settings.gateway_url == "https://pay-gate-uat.checus.com"
    assert Settings.from_env({"CHECUS_ENV": "prod"}).gateway_url == "https://pay-gate-hk-prod.checus.com"
    assert Settings.from_env({"CHECUS_GATEWAY_URL": "http://127.0.0.1:8090/"}).gateway_url == "http://127.0.0.1:8090"
    assert settings.database_url.startswith("sqlite:///") and settings.redis_url.startswith("redis://")


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"CHECUS_ENV": "staging"}, "CHECUS_ENV"), ({"CHECUS_GATEWAY_URL": "ftp://x"}, "CHECUS_GATEWAY_URL"),
     ({"CHECUS_HTTP_READ_TIMEOUT": "soon"}, "CHECUS_HTTP_READ_TIMEOUT"),
     ({"CHECUS_HTTP_READ_TIMEOUT": "-1"}, "CHECUS_HTTP_READ_TIMEOUT"),
     ({"CHECUS_EVENT_WEBHOOK_URL": "https://m.test/e"}, "CHECUS_EVENT_WEBHOOK_SECRET"),
     ({"CHECUS_MERCHANT_PRIVATE_KEY": "a", "CHECUS_MERCHANT_PRIVATE_KEY_FILE": "/x"}, "CHECUS_MERCHANT_PRIVATE_KEY")],
)
def test_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable and str(info.value).startswith(variable)


def test_keys_load_lazily_and_fail_naming_the_setting() -> None:
    settings = Settings.from_env({"CHECUS_MERCHANT_PRIVATE_KEY": "bm90IGEga2V5", "CHECUS_PLATFORM_PUBLIC_KEYS": "x"})
    with pytest.raises(SettingsError, match=r"^CHECUS_MERCHANT_PRIVATE_KEY"):
        settings.signer()
    with pytest.raises(SettingsError, match=r"^CHECUS_PLATFORM_PUBLIC_KEYS\[0\]"):
        settings.verifier()
    with pytest.raises(SettingsError, match=r"^CHECUS_APP_ID: is required"):
        Settings.from_env({}).require("app_id")


def test_key_files_and_key_lists(tmp_path: Path, merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair,
                                 other_keys: PortalKeyPair) -> None:
    private = tmp_path / "merchant.key"
    private.write_text(merchant_keys.private_key)
    private.chmod(0o600)
    public = tmp_path / "platform.pub"
    public.write_text(f"{platform_keys.public_key}\n{other_keys.public_key}\n")
    settings = Settings.from_env({"CHECUS_MERCHANT_PRIVATE_KEY_FILE": str(private),
                                  "CHECUS_PLATFORM_PUBLIC_KEYS_FILE": str(public)})
    assert settings.verifier().key_count == 2
    assert settings.signer().sign(b"x")
    assert merchant_keys.private_key[:30] not in repr(settings)
    private.chmod(0o644)
    with pytest.raises(SettingsError, match=r"^CHECUS_MERCHANT_PRIVATE_KEY_FILE"):
        Settings.from_env({"CHECUS_MERCHANT_PRIVATE_KEY_FILE": str(private)})


def test_poll_ladder_is_configurable() -> None:
    assert Settings.from_env({"CHECUS_POLL_LADDER": "30, 60,600"}).poll_ladder == (30.0, 60.0, 600.0)
    assert Settings.from_env({}).poll_ladder is None
    for bad in ("x", "0,5", "-1"):
        with pytest.raises(SettingsError, match=r"^CHECUS_POLL_LADDER"):
            Settings.from_env({"CHECUS_POLL_LADDER": bad})


def test_stuck_limits_are_configurable() -> None:
    assert Settings.from_env({"CHECUS_STUCK_AFTER": "PENDING=60, REFUND_PENDING=120"}).stuck_after == {
        "PENDING": 60.0, "REFUND_PENDING": 120.0}
    for bad in ("PENDING", "pending=5", "PENDING=-1", "PENDING=soon"):
        with pytest.raises(SettingsError, match=r"^CHECUS_STUCK_AFTER"):
            Settings.from_env({"CHECUS_STUCK_AFTER": bad})


def test_redis_through_sentinel_needs_host_port_pairs_and_the_master_name() -> None:
    base = {"REDIS_URL": "redis://:pw@ignored:1/3"}
    settings = Settings.from_env({**base, "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
                                  "REDIS_SENTINEL_MASTER": "checus"})
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert settings.redis_sentinel_master == "checus"
    with pytest.raises(SettingsError, match="REDIS_SENTINEL_MASTER"):
        Settings.from_env({**base, "REDIS_SENTINELS": "10.0.0.1:26379"})
    with pytest.raises(SettingsError, match="REDIS_SENTINELS: 'nowhere' is not host:port"):
        Settings.from_env({**base, "REDIS_SENTINELS": "nowhere", "REDIS_SENTINEL_MASTER": "checus"})
    assert Settings.from_env(base).redis_sentinels == ()
