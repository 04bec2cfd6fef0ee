"""Every anomaly is written by ``store.anomalies.record`` (row, ``anomaly.detected`` event and metric together)."""

from __future__ import annotations

import re
from pathlib import Path

import worker

WRITES = re.compile(r"anomalies\.insert\(|insert\(\s*anomalies\b")


def test_no_module_but_store_anomalies_inserts_anomaly_rows() -> None:
    """A direct INSERT elsewhere would store an anomaly without its event or metric (orphans once did)."""
    root = Path(worker.__file__).parent
    writers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if WRITES.search(p.read_text()))
    assert writers == ["store/anomalies.py"]
