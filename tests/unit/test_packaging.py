"""Both import packages resolve to this repository, not to PyPI's python-statemachine."""

from __future__ import annotations

import tomllib
from pathlib import Path

import statemachine
import worker

ROOT = Path(__file__).resolve().parents[2]


def test_import_packages_come_from_this_repository() -> None:
    assert Path(statemachine.__file__).resolve().parent == ROOT / "statemachine"
    assert Path(worker.__file__).resolve().parent == ROOT / "worker"


def test_distribution_is_private_and_lists_packages_explicitly() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "checus-payment-worker"
    assert "Private :: Do Not Upload" in project["project"]["classifiers"]
    packages = set(project["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("worker", "statemachine")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= packages, f"packages missing from pyproject: {on_disk - packages}"
    assert project["project"]["scripts"]["checus-worker"] == "worker.cli:entrypoint"
