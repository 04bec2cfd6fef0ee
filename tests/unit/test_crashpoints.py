"""Crash points are inert unless armed; armed, the process dies on the n-th pass, like kill -9."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.runtime import crashpoints


def test_unarmed_points_do_nothing() -> None:
    for name in crashpoints.POINTS:
        crashpoints.crash_point(name)


@pytest.mark.parametrize(("spec", "survived"), [("after_commit", 0), ("after_commit:3", 2), ("after_lock", 5)])
def test_armed_point_exits_137_on_the_nth_pass(spec: str, survived: int) -> None:
    code = "from worker.runtime.crashpoints import crash_point\nfor _ in range(5):\n    crash_point('after_commit')\n" \
           "    print('alive', flush=True)\n"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "CHECUS_CRASH_AT": spec},
                            capture_output=True, text=True, check=False, timeout=30)
    assert result.stdout.count("alive") == survived
    assert result.returncode == (0 if spec == "after_lock" else 137)


def test_unknown_points_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown crash point"):
        crashpoints._armed("after_lunch")
