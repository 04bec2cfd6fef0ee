"""A role checks its settings before it waits for anything: every missing or malformed setting at
once, one line each naming the setting and what it is for, exit 78."""

from __future__ import annotations

import os

import pytest

from worker.cli import main
from worker.config import Settings, SettingsError, SettingsErrors
from worker.gateway.signing import PortalKeyPair
from worker.role_settings import PURPOSES, ROLE_NEEDS, purpose, role_settings


def _variables(error: SettingsError) -> list[str]:
    return [one.variable for one in error.each()]


def test_from_env_reports_every_malformed_setting_not_only_the_first() -> None:
    with pytest.raises(SettingsErrors) as info:
        Settings.from_env({"CHECUS_TIME_SCALE": "fast", "CHECUS_ENV": "staging", "CHECUS_METRICS_PORT_WORK": "x",
                           "CHECUS_METRICS_PORT_API": "y", "REDIS_SENTINELS": "a:1"})
    assert _variables(info.value) == ["CHECUS_ENV", "REDIS_SENTINEL_MASTER", "CHECUS_TIME_SCALE",
                                      "CHECUS_METRICS_PORT_WORK", "CHECUS_METRICS_PORT_API"]
    with pytest.raises(SettingsError) as single:  # one fault is still a plain SettingsError, as before
        Settings.from_env({"CHECUS_TIME_SCALE": "fast"})
    assert type(single.value) is SettingsError
    assert str(single.value) == "CHECUS_TIME_SCALE: must be a number, got 'fast'"


@pytest.mark.parametrize("role", sorted(ROLE_NEEDS))
def test_an_empty_environment_names_every_setting_the_role_needs(role: str) -> None:
    if not ROLE_NEEDS[role]:
        assert role_settings({}, role).app_id == ""  # the scheduler needs no key and no id
        return
    with pytest.raises(SettingsError) as info:
        role_settings({}, role)
    assert _variables(info.value) == list(ROLE_NEEDS[role])
    assert all(purpose(variable) for variable in ROLE_NEEDS[role])


def test_malformed_and_missing_settings_and_bad_keys_are_reported_together(platform_keys: PortalKeyPair) -> None:
    env = {"CHECUS_TIME_SCALE": "0", "CHECUS_APP_ID": "A", "CHECUS_MERCHANT_PRIVATE_KEY": "bm90IGEga2V5",
           "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key}
    with pytest.raises(SettingsError) as info:
        role_settings(env, "work")
    assert _variables(info.value) == ["CHECUS_TIME_SCALE", "CHECUS_MERCHANT_NO"]
    env.pop("CHECUS_TIME_SCALE")
    with pytest.raises(SettingsError) as keys:  # parsed: the key given is loaded, and its fault said too
        role_settings(env, "work")
    assert _variables(keys.value) == ["CHECUS_MERCHANT_NO", "CHECUS_MERCHANT_PRIVATE_KEY"]


def test_a_role_with_what_it_needs_gets_its_settings(merchant_keys: PortalKeyPair,
                                                     platform_keys: PortalKeyPair) -> None:
    env = {"CHECUS_APP_ID": "A", "CHECUS_MERCHANT_NO": "M", "CHECUS_MERCHANT_PRIVATE_KEY": merchant_keys.private_key,
           "CHECUS_PLATFORM_PUBLIC_KEYS": platform_keys.public_key}
    assert role_settings(env, "work").merchant_no == "M"
    assert role_settings({k: v for k, v in env.items() if k != "CHECUS_MERCHANT_PRIVATE_KEY"}, "web").app_id == "A"


def test_purpose_of_a_key_file_or_a_listed_key_is_the_setting_s() -> None:
    assert purpose("CHECUS_MERCHANT_PRIVATE_KEY_FILE") == PURPOSES["CHECUS_MERCHANT_PRIVATE_KEY"]
    assert purpose("CHECUS_PLATFORM_PUBLIC_KEYS[1]") == PURPOSES["CHECUS_PLATFORM_PUBLIC_KEYS"]
    assert purpose("NOT_A_SETTING") is None


def test_the_cli_prints_one_line_per_setting_with_its_purpose_and_exits_78(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in [n for n in os.environ if n.startswith(("CHECUS_", "REDIS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHECUS_HTTP_READ_TIMEOUT", "soon")
    assert main(["work"]) == 78
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "error: not_configured: CHECUS_HTTP_READ_TIMEOUT: must be a number, got 'soon' — "
        + PURPOSES["CHECUS_HTTP_READ_TIMEOUT"],
        *(f"error: not_configured: {v}: is required{' (or ' + v + '_FILE)' if 'KEY' in v else ''} — {PURPOSES[v]}"
          for v in ROLE_NEEDS["work"]),
    ]
