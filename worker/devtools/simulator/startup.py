"""What the simulator says when it starts: one JSON line of settings, and a warning when no
notification would ever leave.

The simulator sends a notification to the request's own ``notifyUrl`` / ``refundNotifyUrl``,
else to ``CHECUS_SIM_DEFAULT_NOTIFY_URL`` / ``CHECUS_SIM_DEFAULT_REFUND_NOTIFY_URL``, else
nowhere. The worker builds its ``notifyUrl`` from ``CHECUS_NOTIFY_BASE_URL``; left unset, it
sends none, and a payment then waits for polls alone while the simulator stays silent. That is
the commonest "why did nothing arrive" of a local set-up, so it is said at start, once, plainly.

Only settings a developer needs are printed: ids, URLs, file paths. Never a key or a value read
from a key variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from worker.devtools.simulator.config import SimulatorConfig

log = structlog.get_logger("worker.devtools.simulator")
NOTIFY_BASE = "CHECUS_NOTIFY_BASE_URL"
_DEFAULT_VARIABLE = {"payment": "CHECUS_SIM_DEFAULT_NOTIFY_URL", "refund": "CHECUS_SIM_DEFAULT_REFUND_NOTIFY_URL"}


def client_settings(
    config: SimulatorConfig, *, host: str, port: int, environ: Mapping[str, str], keys_dir: Path | None
) -> dict[str, Any]:
    """The worker's settings that point it at this simulator (key *files* only, when generated here)."""
    settings: dict[str, Any] = {
        "CHECUS_GATEWAY_URL": f"http://{host}:{port}",
        "CHECUS_APP_ID": config.app_id,
        "CHECUS_MERCHANT_NO": config.merchant_no,
        NOTIFY_BASE: (environ.get(NOTIFY_BASE) or "").strip() or None,
    }
    if keys_dir is not None:
        settings["CHECUS_MERCHANT_PRIVATE_KEY_FILE"] = str(keys_dir / "merchant_private_key.txt")
        settings["CHECUS_PLATFORM_PUBLIC_KEYS_FILE"] = str(keys_dir / "platform_public_key.txt")
    return settings


def simulator_settings(config: SimulatorConfig) -> dict[str, Any]:
    return {
        "CHECUS_SIM_DEFAULT_NOTIFY_URL": config.default_notify_url,
        "CHECUS_SIM_DEFAULT_REFUND_NOTIFY_URL": config.default_refund_notify_url,
        "CHECUS_SIM_TIME_SCALE": config.time_scale,
        "CHECUS_SIM_SEED": config.seed,
        "CHECUS_SIM_PUBLIC_BASE_URL": config.public_base_url,
        "CHECUS_SIM_STRICT_ACK": config.strict_ack,
        "faults": config.faults.to_json(),
    }


def silent_kinds(config: SimulatorConfig, environ: Mapping[str, str]) -> list[str]:
    """The notification kinds nobody set a destination for (neither the worker's base nor our default)."""
    if (environ.get(NOTIFY_BASE) or "").strip():
        return []
    defaults = {"payment": config.default_notify_url, "refund": config.default_refund_notify_url}
    return [kind for kind, url in defaults.items() if not url]


def announce(
    config: SimulatorConfig, *, host: str, port: int, environ: Mapping[str, str], keys_dir: Path | None = None
) -> None:
    """Log ``sim.started`` with the settings, then ``sim.notifications.off`` if some kind has nowhere to go."""
    log.info(
        "sim.started",
        client_settings=client_settings(config, host=host, port=port, environ=environ, keys_dir=keys_dir),
        simulator_settings=simulator_settings(config),
    )
    silent = silent_kinds(config, environ)
    if silent:
        unset = [NOTIFY_BASE, *(_DEFAULT_VARIABLE[kind] for kind in silent)]
        log.warning(
            "sim.notifications.off",
            kinds=silent,
            unset=unset,
            message=f"{' and '.join(unset)} unset: no {' or '.join(silent)} notification will be sent, "
            "except for a request that names its own notifyUrl/refundNotifyUrl",
        )
