"""``checus-worker api-keys``: the secret printed once on stdout (alone), a digest stored, list and revoke."""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa

from worker.api.keys import authenticate
from worker.cli import main
from worker.devtools.demo.stack import EmbeddedStack
from worker.store.schema import api_keys


def test_create_prints_the_secret_alone_and_stores_only_its_digest(stack: EmbeddedStack,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api-keys", "create", "shop"]) == 0
    captured = capsys.readouterr()
    [secret] = captured.out.splitlines()
    assert secret.startswith("chk_") and len(secret) > 40 and "shown once" in captured.err
    with stack.rt.engine.connect() as conn:
        stored = conn.execute(sa.select(api_keys)).one()._mapping
    assert stored["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(dict(stored)) and stored["prefix"] == secret[:12]
    key = authenticate(stack.rt.engine, secret)
    assert key is not None and key.name == "shop" and not key.read_only


def test_list_and_revoke(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api-keys", "create", "a"]) == 0
    assert main(["api-keys", "create", "b", "--read-only", "--json"]) == 0
    secret_a = capsys.readouterr().out.splitlines()[0]
    assert main(["api-keys", "create", "a"]) == 1  # a name names one key
    assert "exists" in capsys.readouterr().err
    assert main(["api-keys", "revoke", "a"]) == 0
    assert authenticate(stack.rt.engine, secret_a) is None
    capsys.readouterr()
    assert main(["api-keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["name"], k["read_only"], k["revoked_at"] is not None) for k in listed] == [
        ("a", False, True), ("b", True, False)]
    assert "secret" not in json.dumps(listed) and "sha256" not in json.dumps(listed)
    assert main(["api-keys", "revoke", "nobody"]) == 1
