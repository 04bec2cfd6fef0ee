"""Simulator settings from the environment: names in errors, keys from files, key rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.simkit import caller_for
from worker.devtools.simulator.config import SimulatorConfig, SimulatorConfigError
from worker.devtools.simulator.server import start_background
from worker.gateway.signing import PortalKeyPair, load_public_key


@pytest.fixture
def env(merchant_keys: PortalKeyPair, platform_keys: PortalKeyPair) -> dict[str, str]:
    return {
        "CHECUS_SIM_APP_ID": "APP_ENV",
        "CHECUS_SIM_MERCHANT_NO": "M_ENV",
        "CHECUS_SIM_MERCHANT_PUBLIC_KEYS": merchant_keys.public_key,
        "CHECUS_SIM_PLATFORM_PRIVATE_KEY": platform_keys.private_key,
    }


def error_for(environ: dict[str, str]) -> SimulatorConfigError:
    with pytest.raises(SimulatorConfigError) as caught:
        SimulatorConfig.from_env(environ)
    return caught.value


def test_minimal_environment(env: dict[str, str], merchant_keys: PortalKeyPair) -> None:
    config = SimulatorConfig.from_env(env)
    assert (config.app_id, config.merchant_no, config.time_scale) == ("APP_ENV", "M_ENV", 1.0)
    assert config.merchant_public_keys == (merchant_keys.public_key,)
    assert config.refund_auto_complete_seconds is None
    assert config.lenient_clock is False


def test_optional_settings_are_parsed(env: dict[str, str]) -> None:
    config = SimulatorConfig.from_env(
        {
            **env,
            "CHECUS_SIM_TIME_SCALE": "0.001",
            "CHECUS_SIM_LENIENT_CLOCK": "yes",
            "CHECUS_SIM_STRICT_ACK": "true",
            "CHECUS_SIM_REFUND_AUTO_COMPLETE_SECONDS": "30",
            "CHECUS_SIM_SEED": "42",
            "CHECUS_SIM_DEFAULT_NOTIFY_URL": "http://127.0.0.1:9000/notify",
            "CHECUS_SIM_TOKEN_REJECT_CODE": "AUTH_FAILED",
            "CHECUS_SIM_FAULTS": '{"endpoints": {"orderQuery": {"error_rate": 0.5}}}',
        }
    )
    assert (config.time_scale, config.lenient_clock, config.strict_ack, config.seed) == (0.001, True, True, 42)
    assert config.refund_auto_complete_seconds == 30
    assert config.default_notify_url == "http://127.0.0.1:9000/notify"
    assert config.token_reject_code == "AUTH_FAILED"
    assert config.faults.endpoint("orderQuery").error_rate == 0.5


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"CHECUS_SIM_APP_ID": ""}, "CHECUS_SIM_APP_ID"),
        ({"CHECUS_SIM_MERCHANT_NO": " "}, "CHECUS_SIM_MERCHANT_NO"),
        ({"CHECUS_SIM_TIME_SCALE": "fast"}, "CHECUS_SIM_TIME_SCALE"),
        ({"CHECUS_SIM_TIME_SCALE": "0"}, "CHECUS_SIM_TIME_SCALE"),
        ({"CHECUS_SIM_TIME_SCALE": "nan"}, "CHECUS_SIM_TIME_SCALE"),
        ({"CHECUS_SIM_LENIENT_CLOCK": "maybe"}, "CHECUS_SIM_LENIENT_CLOCK"),
        ({"CHECUS_SIM_SEED": "1.5"}, "CHECUS_SIM_SEED"),
        ({"CHECUS_SIM_FAULTS": "{nope"}, "CHECUS_SIM_FAULTS"),
        ({"CHECUS_SIM_FAULTS": '{"endpoints": {"x": {}}}'}, "CHECUS_SIM_FAULTS"),
        ({"CHECUS_SIM_MERCHANT_PUBLIC_KEYS": ""}, "CHECUS_SIM_MERCHANT_PUBLIC_KEYS"),
        ({"CHECUS_SIM_MERCHANT_PUBLIC_KEYS": "bm90IGEga2V5"}, "CHECUS_SIM_MERCHANT_PUBLIC_KEYS[0]"),
        ({"CHECUS_SIM_PLATFORM_PRIVATE_KEY": "bm90IGEga2V5"}, "CHECUS_SIM_PLATFORM_PRIVATE_KEY"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], change: dict[str, str], variable: str) -> None:
    error = error_for({**env, **change})
    assert error.variable == variable
    assert str(error).startswith(variable + ":")


def test_errors_never_echo_key_material(env: dict[str, str], platform_keys: PortalKeyPair) -> None:
    broken = platform_keys.private_key[:-20] + "A" * 20
    error = error_for({**env, "CHECUS_SIM_PLATFORM_PRIVATE_KEY": broken})
    assert platform_keys.private_key[:40] not in str(error)


def test_keys_can_come_from_files(env: dict[str, str], tmp_path: Path, platform_keys: PortalKeyPair) -> None:
    private_file = tmp_path / "platform.key"
    private_file.write_text(platform_keys.private_key, "ascii")
    os.chmod(private_file, 0o600)
    public_file = tmp_path / "merchant.pub"
    public_file.write_text(env["CHECUS_SIM_MERCHANT_PUBLIC_KEYS"], "ascii")
    environ = {
        "CHECUS_SIM_APP_ID": "APP_ENV",
        "CHECUS_SIM_MERCHANT_NO": "M_ENV",
        "CHECUS_SIM_MERCHANT_PUBLIC_KEYS_FILE": str(public_file),
        "CHECUS_SIM_PLATFORM_PRIVATE_KEY_FILE": str(private_file),
    }
    assert SimulatorConfig.from_env(environ).platform_private_key == platform_keys.private_key


def test_a_private_key_file_readable_by_others_is_refused(
    env: dict[str, str], tmp_path: Path, platform_keys: PortalKeyPair
) -> None:
    private_file = tmp_path / "platform.key"
    private_file.write_text(platform_keys.private_key, "ascii")
    os.chmod(private_file, 0o644)
    environ = {k: v for k, v in env.items() if k != "CHECUS_SIM_PLATFORM_PRIVATE_KEY"}
    error = error_for({**environ, "CHECUS_SIM_PLATFORM_PRIVATE_KEY_FILE": str(private_file)})
    assert error.variable == "CHECUS_SIM_PLATFORM_PRIVATE_KEY_FILE"


def test_the_private_key_is_not_in_the_repr(env: dict[str, str], platform_keys: PortalKeyPair) -> None:
    assert platform_keys.private_key[:40] not in repr(SimulatorConfig.from_env(env))


def test_several_merchant_keys_are_trusted_during_rotation(
    merchant_keys: PortalKeyPair, other_keys: PortalKeyPair, platform_keys: PortalKeyPair
) -> None:
    """Keys may be portal Base64 or PEM; a request signed by any of them verifies."""
    pem = load_public_key(other_keys.public_key, setting="t").public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = SimulatorConfig.from_env(
        {
            "CHECUS_SIM_APP_ID": "APP_ENV",
            "CHECUS_SIM_MERCHANT_NO": "M_ENV",
            "CHECUS_SIM_MERCHANT_PUBLIC_KEYS": f"{merchant_keys.public_key},{other_keys.public_key}",
            "CHECUS_SIM_PLATFORM_PRIVATE_KEY": platform_keys.private_key,
        }
    )
    assert len(config.merchant_public_keys) == 2
    running = start_background(config.replace(merchant_public_keys=(merchant_keys.public_key, pem.decode())))
    try:
        for keys in (merchant_keys, other_keys):
            caller = caller_for(running, keys.private_key, platform_keys.public_key)
            assert caller.call("orderQuery", {"outTradeNo": "X"}).code == "ORDER_NOT_EXIST"
            caller.close()
    finally:
        running.stop()
