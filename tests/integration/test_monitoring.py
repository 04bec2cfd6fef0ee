"""The alerting rules and the dashboard in ``deploy/``: valid, unit-tested, and about metrics that exist.

``promtool`` (Debian's ``prometheus``, installed by ``.ci/system-deps``) checks the rules and runs
their unit tests; a missing promtool fails here with that reason rather than passing. Every
``checus_*`` series a rule or a panel names must be one the code exports: the counters and
histograms of ``worker.metrics`` and the gauges the store collector yields from a real store.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import prometheus_client
import yaml
from prometheus_client.registry import Collector
from redis import Redis

from worker import metrics
from worker.ops.gauges import StoreCollector
from worker.store.db import create_engine
from worker.store.migrate import upgrade

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "checus-payment-worker.json"
SERIES = re.compile(r"\bchecus_[a-z_]+\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: install Debian's prometheus package (.ci/system-deps does)"
    return subprocess.run([tool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60, check=False)


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_has_a_severity_a_runbook_link_and_a_unit_test() -> None:
    rules = [r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]]
    tests = yaml.safe_load((RULES.parent / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")}
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["runbook_url"].startswith("README.md#runbook"), rule["alert"]
    assert {r["alert"] for r in rules} == fired  # every rule is shown to fire


def _exported(redis_url: str, tmp_path: Path) -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, prometheus_client.Counter):
            names |= {f"{family.name}_total" for family in value.describe()}
        elif isinstance(value, prometheus_client.Histogram):
            suffixes = ("_bucket", "_sum", "_count")
            names |= {f"{family.name}{suffix}" for family in value.describe() for suffix in suffixes}
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    collector: Collector = StoreCollector(engine, Redis.from_url(redis_url), queue_key="rq:queue:checus",
                                          clock=lambda: datetime.now(UTC))
    names |= {family.name for family in collector.collect()}
    engine.dispose()
    return names


def test_every_series_a_rule_or_a_panel_names_is_exported(redis_url: str, tmp_path: Path) -> None:
    exported = _exported(redis_url, tmp_path)
    assert {"checus_workers", "checus_scheduler_lease_held", "checus_store_up"} <= exported
    exprs = [r["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]]
    board = json.loads(DASHBOARD.read_text())
    exprs += [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    named = {series for expr in exprs for series in SERIES.findall(expr)}
    assert named, "no series found"
    assert named <= exported, sorted(named - exported)
