"""The tests' copy of the official OpenAPI subset is the shared one, byte for byte."""

from __future__ import annotations

from pathlib import Path

from tests.openapi import SPEC_PATH

SHARED = Path(__file__).resolve().parents[3] / "shared" / "checus" / "payermax-openapi-subset.json"


def test_copy_matches_the_shared_schema_when_present() -> None:
    assert SPEC_PATH.is_file()
    if SHARED.is_file():  # beside the repository in development and CI
        assert SPEC_PATH.read_bytes() == SHARED.read_bytes()
