"""The CLI is a function: main(argv) -> int, with --json on every read command."""

from __future__ import annotations

import json
import stat
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.test_payment_flows import first_payment
from worker.cli import main
from worker.devtools.demo.stack import EmbeddedStack


def test_keys_generate_writes_a_portal_pair(tmp_path: Path) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 0
    private = tmp_path / "merchant_private_key.txt"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert len(private.read_text().strip()) > 1500 and "\n" not in private.read_text().strip()
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 1  # refuses to overwrite


def test_order_refund_and_token_commands(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    first_payment(stack, "CLI_ORDER")
    capsys.readouterr()
    assert main(["order", "show", "CLI_ORDER", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "SUCCESS"
    assert [h["to_state"] for h in shown["history"]] == ["UNKNOWN", "PENDING", "SUCCESS"]
    assert "request_json" not in shown
    assert main(["refund", "create", "CLI_ORDER", "10.00", "--out-refund-no", "CLI_R1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "CREATED"
    assert main(["refund", "create", "CLI_ORDER", "95.00"]) == 3  # refused: nothing will happen
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: exceeds_refundable: ")
    assert main(["tokens", "list", "u1", "--json", "--no-sync"]) == 0
    tokens = json.loads(capsys.readouterr().out)
    assert len(tokens) == 1 and "token_id" not in tokens[0] and len(tokens[0]["token_hint"]) == 4
    assert main(["order", "show", "NOPE"]) == 4
    assert capsys.readouterr().err.splitlines() == ["error: not_found: no order NOPE"]


def test_a_malformed_setting_is_one_line_and_its_own_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from worker import bootstrap

    monkeypatch.setattr(bootstrap, "_process_runtime", None)
    monkeypatch.setenv("CHECUS_HTTP_READ_TIMEOUT", "soon")
    assert main(["order", "show", "ANY"]) == 78
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: not_configured: CHECUS_HTTP_READ_TIMEOUT")


def test_pay_without_the_merchant_key_is_one_line_refusal_and_stores_nothing(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Tried as a new user would: this printed a traceback after storing the order, which was charged later."""
    from worker import bootstrap

    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setattr(bootstrap, "_process_runtime", None)
    for name in ("CHECUS_MERCHANT_PRIVATE_KEY", "CHECUS_MERCHANT_PRIVATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CHECUS_APP_ID", "APP")
    monkeypatch.setenv("CHECUS_MERCHANT_NO", "MERCHANT")
    assert main(["db", "upgrade"]) == 0
    monkeypatch.setattr(bootstrap, "_process_runtime", None)
    assert main(["pay", "CLI_NOKEY", "9.00", "--user", "u"]) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: not_configured: ") and "CHECUS_MERCHANT_PRIVATE_KEY" in line
    assert main(["pay", "CLI_NOKEY", "9.00", "--user", "u", "--token", "4"]) == 3
    assert capsys.readouterr().err.splitlines() == ["error: token_not_found"]
    assert main(["order", "show", "CLI_NOKEY"]) == 4


def test_status_reports_open_records(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.service.create_card_payment(out_trade_no="CLI_OPEN", amount=Decimal("1.00"), currency="USD",
                                      user_id="u9", subject="open", front_callback_url="https://shop.test/r")
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["open_orders"] == {"PENDING": {"<1m": 1}} and data["queue"]["name"] == "checus"
