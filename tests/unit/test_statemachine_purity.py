"""The functional core imports only the standard library and ``transitions``, and does no I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import statemachine

PACKAGE = Path(statemachine.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
ALLOWED_THIRD_PARTY = {"transitions"}
# Standard-library modules that mean I/O, a clock, randomness or logging: not in the core.
FORBIDDEN_STDLIB = {
    "asyncio", "http", "io", "logging", "os", "pathlib", "random", "secrets", "shutil", "socket",
    "sqlite3", "subprocess", "sys", "tempfile", "threading", "time", "urllib",
}  # fmt: skip
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def top_level_imports(path: Path) -> list[str]:
    """The top-level package of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def test_the_package_is_this_repository() -> None:
    """``statemachine`` resolves here, not to PyPI's python-statemachine."""
    assert (PACKAGE / "orders.py").is_file()
    assert len(MODULES) >= 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_stdlib_or_transitions(path: Path) -> None:
    """Anything but the standard library, ``transitions`` and relative imports fails."""
    for name in top_level_imports(path):
        allowed = name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY or name == "__future__"
        assert allowed, f"{path.name} imports {name}"
        assert name not in FORBIDDEN_STDLIB, f"{path.name} imports {name} (I/O, clock or logging)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_reads_prints_or_floats(path: Path) -> None:
    """No ``.now()``-style clock reads, no print(), no float() and no float literals."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in CLOCK_CALLS | {"print", "float", "open"}, (
                f"{path.name}:{node.lineno} calls {name}"
            )
        if isinstance(node, ast.Constant):
            assert not isinstance(node.value, float), f"{path.name}:{node.lineno} has a float literal"


def test_the_checker_catches_a_foreign_import(tmp_path: Path) -> None:
    """The checker itself sees third-party imports and lets relative ones pass."""
    bad = tmp_path / "bad.py"
    bad.write_text("import httpx\nfrom redis.client import Redis\nfrom . import common\n", encoding="utf-8")
    assert top_level_imports(bad) == ["httpx", "redis"]
