"""The harness's own knobs, read from the environment in one place (documented in README.md)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def artifacts_root() -> Path | None:
    """``CHECUS_RELIABILITY_ARTIFACTS``: keep every run's logs and reports there (else pytest's tmp dir)."""
    raw = os.environ.get("CHECUS_RELIABILITY_ARTIFACTS", "").strip()
    return Path(raw).resolve() if raw else None


def storm_seed() -> int:
    """``CHECUS_STORM_SEED`` replays a run; otherwise a fresh seed, printed with the results."""
    raw = os.environ.get("CHECUS_STORM_SEED", "").strip()
    return int(raw) if raw else secrets.randbelow(2**31)


def storm_scale() -> float:
    """``CHECUS_STORM_SCALE``: 1 is the CI size (600 orders, 150 refunds); 10 is the long storm."""
    raw = os.environ.get("CHECUS_STORM_SCALE", "").strip()
    scale = float(raw) if raw else 1.0
    if not 0 < scale <= 100:
        raise ValueError("CHECUS_STORM_SCALE must be in (0, 100]")
    return scale


def storm_receiver_processes() -> int:
    """``CHECUS_STORM_RECEIVER_PROCESSES``: the storm's ``web`` as that many processes (CI: 1)."""
    raw = os.environ.get("CHECUS_STORM_RECEIVER_PROCESSES", "").strip()
    count = int(raw) if raw else 1
    if count < 1:
        raise ValueError("CHECUS_STORM_RECEIVER_PROCESSES must be at least 1")
    return count


def model_budget() -> tuple[int, int]:
    """``CHECUS_MODEL_EXAMPLES`` / ``CHECUS_MODEL_STEPS`` for the Hypothesis model (CI: 80 x 30)."""
    examples = int(os.environ.get("CHECUS_MODEL_EXAMPLES", "").strip() or 80)
    steps = int(os.environ.get("CHECUS_MODEL_STEPS", "").strip() or 30)
    return examples, steps
