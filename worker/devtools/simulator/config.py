"""The simulator's settings: one frozen value, parsed once, from keywords or the environment.

Where WIRE.md leaves the gateway's behaviour open (§25), the simulator picks the PayerMax
answer and exposes the choice here, so a test can ask for the other reading. Every
``CHECUS_SIM_*`` variable maps to the field of the same name; an error names the variable,
never the value (some of them are keys).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.devtools.simulator.faults import FaultPlan, FaultSpecError
from worker.gateway.signing import (
    KeyLoadError,
    load_private_key,
    load_public_key,
    read_key_file,
    split_public_keys,
)
from worker.gateway.wire import WireFormatError, loads_object

ENV_PREFIX = "CHECUS_SIM_"


class SimulatorConfigError(ValueError):
    """A setting could not be read. ``variable`` names the setting, never its value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """What the simulated gateway knows about its one merchant, and how it behaves."""

    app_id: str
    merchant_no: str
    merchant_public_keys: tuple[str, ...]
    platform_private_key: str = field(repr=False)
    time_scale: float = 1.0
    clock_tolerance_seconds: float = 120
    lenient_clock: bool = False
    clock_error_code: str = "PARAMS_INVALID"
    default_notify_url: str | None = None
    default_refund_notify_url: str | None = None
    notify_timeout_seconds: float = 10.0
    strict_ack: bool = False
    public_base_url: str | None = None
    refund_auto_complete_seconds: float | None = None
    amount_triggers: bool = False
    token_reject_code: str = "PARAMS_INVALID"
    token_hosted_checkout: bool = False
    idempotent_order_replay: bool = False
    direct_expire_seconds: int = 1800
    hosted_expire_seconds: int = 86400
    refund_window_days: int = 180
    refund_not_refundable_code: str = "PARAMS_INVALID"
    refund_in_progress_code: str = "REFUND_FAILED"
    refund_amount_code: str = "AMOUNT_INVALID"
    refund_duplicate_replay: bool = True
    seed: int | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise SimulatorConfigError("time_scale", "must be positive")
        if not self.merchant_public_keys:
            raise SimulatorConfigError("merchant_public_keys", "holds no key")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SimulatorConfig:
        """Build from ``CHECUS_SIM_*`` variables; keys may come from ``*_FILE`` paths."""
        values: dict[str, Any] = {
            "app_id": _required(environ, "APP_ID"),
            "merchant_no": _required(environ, "MERCHANT_NO"),
            "merchant_public_keys": _public_keys(environ),
            "platform_private_key": _private_key(environ),
        }
        for name, parse in _OPTIONAL.items():
            variable = ENV_PREFIX + name.upper()
            raw = environ.get(variable)
            if raw is not None and raw.strip():
                values[name] = _parse(variable, raw.strip(), parse)
        faults = _faults(environ)
        if faults is not None:
            values["faults"] = faults
        try:
            return cls(**values)
        except SimulatorConfigError as exc:
            raise SimulatorConfigError(ENV_PREFIX + exc.variable.upper(), exc.problem) from None

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A copy with some settings changed (tests build variants of one base config)."""
        return dataclasses.replace(self, **changes)


def _parse(variable: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(raw)
    except (ValueError, TypeError):
        raise SimulatorConfigError(variable, f"cannot be read as {_kind(parse)}") from None


def _kind(parse: Callable[[str], Any]) -> str:
    return getattr(parse, "__name__", "a value").strip("_")


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _number(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _text(raw: str) -> str:
    return raw


_OPTIONAL: dict[str, Callable[[str], Any]] = {
    "time_scale": _number,
    "clock_tolerance_seconds": _number,
    "lenient_clock": _boolean,
    "clock_error_code": _text,
    "default_notify_url": _text,
    "default_refund_notify_url": _text,
    "notify_timeout_seconds": _number,
    "strict_ack": _boolean,
    "public_base_url": _text,
    "refund_auto_complete_seconds": _number,
    "amount_triggers": _boolean,
    "token_reject_code": _text,
    "token_hosted_checkout": _boolean,
    "idempotent_order_replay": _boolean,
    "direct_expire_seconds": int,
    "hosted_expire_seconds": int,
    "refund_window_days": int,
    "refund_not_refundable_code": _text,
    "refund_in_progress_code": _text,
    "refund_amount_code": _text,
    "refund_duplicate_replay": _boolean,
    "seed": int,
}


def _required(environ: Mapping[str, str], name: str) -> str:
    variable = ENV_PREFIX + name
    value = environ.get(variable, "").strip()
    if not value:
        raise SimulatorConfigError(variable, "is required")
    return value


def _value_or_file(environ: Mapping[str, str], name: str, *, private: bool) -> tuple[str, str]:
    """(text, variable it came from): the value itself, or the contents of ``*_FILE``."""
    variable = ENV_PREFIX + name
    if environ.get(variable, "").strip():
        return environ[variable], variable
    path = environ.get(variable + "_FILE", "").strip()
    if not path:
        raise SimulatorConfigError(variable, f"is required (or {variable}_FILE)")
    try:
        return read_key_file(path, setting=variable + "_FILE", private=private), variable + "_FILE"
    except KeyLoadError as exc:
        raise SimulatorConfigError(exc.setting, exc.problem) from None


def _public_keys(environ: Mapping[str, str]) -> tuple[str, ...]:
    text, variable = _value_or_file(environ, "MERCHANT_PUBLIC_KEYS", private=False)
    keys = tuple(split_public_keys(text))
    if not keys:
        raise SimulatorConfigError(variable, "holds no key")
    for index, key in enumerate(keys):
        try:
            load_public_key(key, setting=f"{variable}[{index}]")
        except KeyLoadError as exc:
            raise SimulatorConfigError(exc.setting, exc.problem) from None
    return keys


def _private_key(environ: Mapping[str, str]) -> str:
    text, variable = _value_or_file(environ, "PLATFORM_PRIVATE_KEY", private=True)
    try:
        load_private_key(text, setting=variable)
    except KeyLoadError as exc:
        raise SimulatorConfigError(exc.setting, exc.problem) from None
    return text.strip()


def _faults(environ: Mapping[str, str]) -> FaultPlan | None:
    variable = ENV_PREFIX + "FAULTS"
    raw = environ.get(variable, "").strip()
    path = environ.get(variable + "_FILE", "").strip()
    if not raw and path:
        variable += "_FILE"
        try:
            with open(path, encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as exc:
            raise SimulatorConfigError(variable, f"cannot read {path}: {type(exc).__name__}") from None
    if not raw:
        return None
    try:
        return FaultPlan.from_json(loads_object(raw.encode("utf-8")))
    except (WireFormatError, FaultSpecError) as exc:
        raise SimulatorConfigError(variable, str(exc)) from None
