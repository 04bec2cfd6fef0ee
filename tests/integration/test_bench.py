"""``checus-worker bench --short``: the whole stack measured, every figure reported.

CI runs this so each commit prints its figures next to the floors of the same run; nothing here
asserts a performance threshold (the machine is shared and figures move), only that every figure
was produced with its unit and is a finite number, positive where it must be.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from worker.commands.bench import bench
from worker.devtools.bench.report import REQUIRED_FIGURES, SIGNED_FIGURES

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_short_bench_reports_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    with capsys.disabled():  # the figures table is the point of running this in CI: show it
        bench.main(["--short", "--json", str(out), "--workdir", str(tmp_path)], standalone_mode=False)
    doc = json.loads(out.read_text())

    figures = doc["figures"]
    assert set(REQUIRED_FIGURES) <= set(figures), set(REQUIRED_FIGURES) - set(figures)
    for name, figure in figures.items():
        assert figure["unit"], name
        assert isinstance(figure["value"], int | float) and math.isfinite(figure["value"]), name
        if name not in SIGNED_FIGURES:
            assert figure["value"] > 0, (name, figure)
        if "floor" in figure:
            assert figure["floor_value"] > 0 and figure["ratio"] > 0, (name, figure)
    assert {"hello_rate", "rq_noop_rate"} <= {f.get("floor") for f in figures.values()}
    cpu = figures["cpu_per_applied"]
    assert {"web", "work", "redis"} <= set(cpu["by_role"]), cpu  # every product process is counted
    assert abs(cpu["value"] - sum(cpu["by_role"].values())) < 0.01, cpu  # and the whole is their sum
    assert figures["applied_rate"]["ratio_to_hello_rate"] > 0

    assert doc["machine"]["cpu_count"] >= 1 and doc["versions"]["rq"] and doc["options"]["short"] is True
    assert {"web", "scheduler", "sim", "redis", "work-0"} <= set(doc["peak_rss_mib"])
    assert all(size > 0 for size in doc["peak_rss_mib"].values())
    steps = doc["scale_out"]["steps"]
    assert [s["workers"] for s in steps] == doc["options"]["scale_out"]
    assert all(s["applied_rate"] > 0 and s["rq_noop_rate"] > 0 and s["limit"] for s in steps)
    assert doc["scheduler"]["pending"] == doc["options"]["scheduler_pending"]
    assert doc["duplicate"]["inbox_rows_added"] == 0  # a duplicate of an acknowledged notification writes nothing
    for label, phase in doc["phases"].items():
        assert phase["applied"] == phase["notifications"], label  # every notification was applied
        assert phase["socket_errors"] in ({}, {"connect": 0, "read": 0, "write": 0, "timeout": 0}), label
    assert doc["targets"] and all(isinstance(t["met"], bool) for t in doc["targets"])
    assert not list(tmp_path.glob("checus-bench-*")), "the run directory is removed"
