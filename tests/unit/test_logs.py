"""One redaction processor: sensitive keys and secret-looking values never reach a log line."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from worker import logs
from worker.gateway.signing import PortalKeyPair
from worker.logs import configure_logging, redact, scrub_text

CARD = "4111111111111111"  # Luhn-valid test number


def test_sensitive_keys_are_replaced_whatever_they_hold() -> None:
    event = redact(None, "info", {"event": "x", "sign": "abc", "payment_token_id": "PMTOKEN1",
                                  "nested": {"cvv": "123", "ok": "fine"}, "order": "O1"})
    assert event["sign"] == "[REDACTED:sign]" and event["payment_token_id"].startswith("[REDACTED")
    assert event["nested"] == {"cvv": "[REDACTED:cvv]", "ok": "fine"} and event["order"] == "O1"


def test_values_are_scanned(merchant_keys: PortalKeyPair) -> None:
    text = f"key={merchant_keys.private_key} card {CARD} token PMTOKEN20250626121135955 order 12345678"
    scrubbed = scrub_text(text)
    assert merchant_keys.private_key[:40] not in scrubbed and CARD not in scrubbed
    assert "PMTOKEN2025" not in scrubbed and "order 12345678" in scrubbed
    assert scrub_text("4111 1111 1111 1112") == "4111 1111 1111 1112"  # not Luhn-valid: left alone


def test_pem_blocks_are_removed() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----"
    assert scrub_text(f"before {pem} after") == "before [REDACTED:pem] after"


def test_redaction_fails_closed() -> None:
    class Weird(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("boom")

    event = redact(None, "info", Weird(event="x", body="raw"))
    assert event == {"event": "log.redaction_failed", "level": "error"}


def test_configured_pipeline_emits_json_without_secrets(capsys: pytest.CaptureFixture[str],
                                                        merchant_keys: PortalKeyPair) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(level="INFO", json=True)
    try:
        structlog.get_logger("t").info("gateway.call", endpoint="refund", sign="SECRETSIGN", note=f"card {CARD}")
        logging.getLogger("rq.worker").warning("job failed with key %s", merchant_keys.private_key)
        try:
            raise ValueError(f"bad key {merchant_keys.private_key}")
        except ValueError:
            structlog.get_logger("t").exception("job.failed")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers  # later tests must not write to this test's capture
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [line["event"].split(" ")[0] for line in lines][:2] == ["gateway.call", "job"]
    blob = json.dumps(lines)
    assert "SECRETSIGN" not in blob and CARD not in blob and merchant_keys.private_key[:40] not in blob
    assert any("exception" in line for line in lines)


def _scrub_every_pattern(text: str) -> str:
    """``scrub_text`` as it was before its guards: every pattern over every text."""
    text = logs._PEM.sub("[REDACTED:pem]", text)
    text = logs._TOKEN.sub("[REDACTED:token]", text)
    text = logs._B64_RUN.sub("[REDACTED:b64]", text)
    return logs._DIGIT_RUN.sub(logs._mask_card, text)


_PIECES = st.sampled_from(["-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", "PMTOKEN", "4111111111111111",
                           "4111 1111 1111 1111", "A" * 79, "b", "=", "7", " ", "-", "\n", "PMTOKEN2025"])


@given(st.lists(st.one_of(_PIECES, st.text(max_size=20)), max_size=12).map("".join))
def test_the_guards_skip_only_patterns_that_cannot_match(text: str) -> None:
    assert scrub_text(text) == _scrub_every_pattern(text)
