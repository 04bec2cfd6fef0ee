"""``checus-worker web`` and ``work`` started with an empty environment, as ``honcho start`` without a
``.env`` does: one line per setting the role lacks, exit 78, no traceback (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.role_settings import ROLE_NEEDS

SETTINGS_EXIT = 78


@pytest.mark.parametrize("role", ["web", "work", "api"])
def test_a_role_with_an_empty_environment_names_each_missing_setting_and_exits_78(role: str, tmp_path: Path) -> None:
    # Nothing but where this checkout's code is: no PATH, no HOME, no product setting.
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    run = subprocess.run([sys.executable, "-m", "worker", role], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == SETTINGS_EXIT, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == len(ROLE_NEEDS[role]), lines  # one line per setting, nothing else
    for line, variable in zip(lines, ROLE_NEEDS[role], strict=True):
        assert line.startswith(f"error: not_configured: {variable}: is required"), line
        assert " — " in line, f"no purpose given: {line}"
    assert not list(tmp_path.iterdir()), "the role created files before checking its settings"
