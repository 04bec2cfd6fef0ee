"""Operations: metrics, the ops page (token, overview, timeline), anomaly resolution, replay, reconcile."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from tests.e2e.conftest import cashier, sim_control
from tests.e2e.test_payment_flows import first_payment, state_of
from worker.cli import main
from worker.devtools.demo.stack import EmbeddedStack
from worker.devtools.serving import serve_in_thread
from worker.ops.actions import OperatorError, open_records, reconcile, replay, resolve_anomaly
from worker.ops.gauges import StoreCollector
from worker.receiver.web import receiver_app
from worker.runtime.queueing import make_queue
from worker.store.db import read
from worker.store.schema import anomalies, inbox

TOKEN = "ops-token-for-tests-0123456789abcdef"


def late_success(stack: EmbeddedStack, no: str = "OPS_LATE") -> int:
    """An order CLOSED here while Checus later says SUCCESS: an open LATE_SUCCESS anomaly; returns its id."""
    result = stack.service.create_card_payment(out_trade_no=no, amount=Decimal("9.00"), currency="USD", user_id="u6",
                                               subject="late", front_callback_url="https://s.test/r")
    assert result.redirect_url
    sim_control(stack, "POST", f"/orders/{no}/complete", json={"status": "CLOSED"})
    assert stack.settle(lambda: state_of(stack, no) == "CLOSED")
    sim_control(stack, "POST", f"/orders/{no}/complete", json={"status": "SUCCESS", "force": True})
    assert stack.settle(lambda: _open_anomalies(stack) != [])
    return _open_anomalies(stack)[0]


def _open_anomalies(stack: EmbeddedStack) -> list[int]:
    with read(stack.rt.engine) as conn:
        return list(conn.execute(sa.select(anomalies.c.id).where(anomalies.c.resolved_at.is_(None))).scalars())


def test_resolving_a_confirmed_late_success_moves_the_order_with_operator_evidence(stack: EmbeddedStack) -> None:
    anomaly_id = late_success(stack)
    with pytest.raises(OperatorError, match="reason"):
        resolve_anomaly(stack.rt, anomaly_id, operator="alice", reason=" ")
    outcome = resolve_anomaly(stack.rt, anomaly_id, operator="alice", reason="buyer was charged; fulfil")
    assert outcome["fresh_query"]["status"] == "SUCCESS"
    view = stack.service.get_order("OPS_LATE")
    assert view is not None and view.order.state == "SUCCESS"
    last = view.history[-1]
    assert (last.from_state, last.to_state, last.source) == ("CLOSED", "SUCCESS", "operator")
    assert "alice" in last.evidence and "fresh_query" in last.evidence
    assert _open_anomalies(stack) == []
    with pytest.raises(OperatorError, match="resolved by alice"):
        resolve_anomaly(stack.rt, anomaly_id, operator="bob", reason="again")


def test_a_late_success_checus_no_longer_confirms_is_not_applied(stack: EmbeddedStack) -> None:
    anomaly_id = late_success(stack, "OPS_LATE2")
    sim_control(stack, "POST", "/orders/OPS_LATE2/complete", json={"status": "CLOSED", "force": True})
    with pytest.raises(OperatorError, match="Checus now says CLOSED"):
        resolve_anomaly(stack.rt, anomaly_id, operator="alice", reason="fulfil")
    assert state_of(stack, "OPS_LATE2") == "CLOSED" and _open_anomalies(stack) == [anomaly_id]


def test_cli_lists_and_resolves_anomalies(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    anomaly_id = late_success(stack, "OPS_CLI")
    capsys.readouterr()
    assert main(["anomalies", "list", "--json"]) == 0
    assert '"late_success"' in capsys.readouterr().out
    assert main(["anomalies", "resolve", str(anomaly_id), "--operator", "carol", "--reason", "checked"]) == 0
    assert "order set to SUCCESS" in capsys.readouterr().out


def test_replay_reapplies_harmlessly(stack: EmbeddedStack) -> None:
    first_payment(stack, "OPS_REPLAY")
    with read(stack.rt.engine) as conn:
        entry_id = conn.execute(sa.select(inbox.c.id)).scalars().first()
    assert entry_id is not None
    assert replay(stack.rt, entry_id) == f"apply-inbox-{entry_id}"
    stack.drain()
    view = stack.service.get_order("OPS_REPLAY")
    assert view is not None and len(view.history) == 3  # claimed, accepted, settled
    with pytest.raises(OperatorError):
        replay(stack.rt, 999999)


def test_reconcile_polls_every_open_record_within_the_rate(stack: EmbeddedStack) -> None:
    sim_control(stack, "PUT", "/faults", json={"notifications": {"drop_rate": 1}})
    for i in range(3):
        result = stack.service.create_card_payment(out_trade_no=f"OPS_REC{i}", amount=Decimal("1.00"),
                                                   currency="USD", user_id="u1", subject="r",
                                                   front_callback_url="https://s.test/r")
        assert result.redirect_url and cashier(result.redirect_url, "success") == 200
    records = open_records(stack.rt)
    assert len(records) == 3
    slept: list[float] = []
    outcomes = [o for _e, _i, o in reconcile(stack.rt, records, per_second=50, sleep=slept.append)]
    assert outcomes == ["applied"] * 3 and all(s <= 0.02 for s in slept) and len(slept) == 3
    assert open_records(stack.rt) == []


def test_metrics_count_what_happened(stack: EmbeddedStack) -> None:
    first_payment(stack, "OPS_METRICS")
    registry = CollectorRegistry()
    registry.register(StoreCollector(stack.rt.engine, stack.rt.redis, queue_key=make_queue(stack.rt.redis).key,
                                     clock=stack.rt.clock))
    store_text = generate_latest(registry).decode()
    assert 'checus_store_up 1.0' in store_text and 'checus_redis_up 1.0' in store_text
    assert 'checus_inbox_unprocessed 0.0' in store_text
    process_text = generate_latest().decode()
    assert 'checus_transitions_total{entity="order",from_state="PENDING",source="notification",to_state="SUCCESS"}' \
        in process_text
    assert 'checus_gateway_calls_total{code="APPLY_SUCCESS",endpoint="orderAndPay"}' in process_text
    assert 'checus_notifications_received_total{kind="payment",outcome="accepted"}' in process_text


def test_ops_page_needs_its_token_and_shows_the_timeline(stack: EmbeddedStack) -> None:
    first_payment(stack, "OPS_PAGE")
    rt = stack.rt
    rt.settings = rt.settings.with_overrides(ops_token=TOKEN)
    served = serve_in_thread(receiver_app(rt), name="ops")
    try:
        base = served.base_url
        assert httpx.get(f"{base}/ops").status_code == 401
        assert httpx.get(f"{base}/ops", headers={"authorization": "Bearer wrong-token-0123456789abcdef"}
                         ).status_code == 401
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            page = browser.get("/ops", params={"token": TOKEN})
            assert page.status_code == 200 and "Payments by state" in page.text
            assert page.url.params.get("token") is None  # the token leaves the URL for a cookie
            timeline = browser.get("/ops/orders/OPS_PAGE")
            assert timeline.status_code == 200
            assert "report_success" in timeline.text and "notification" in timeline.text
            assert browser.get("/ops/orders/NOPE").status_code == 404
        bearer = httpx.get(f"{base}/ops", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200 and "SUCCESS" in bearer.text
    finally:
        served.stop()


def test_resolving_an_anomaly_about_a_kept_notification_asks_checus_nothing(stack: EmbeddedStack) -> None:
    """An inbox anomaly (an orphan, an unverified row) names no order or refund of Checus: it was once
    resolved by a refund query with the notification's outTradeNo. It is closed with the note alone."""
    from worker.store import anomalies as anomaly_store
    from worker.store.db import write

    with write(stack.rt.engine) as conn:
        assert anomaly_store.record(conn, entity="inbox", entity_id=7, ref="NEVER_OURS", kind="unknown_order",
                                    detail="no such order", evidence={}, now=stack.rt.clock())
    with read(stack.rt.engine) as conn:
        anomaly_id = conn.execute(sa.select(anomalies.c.id).where(anomalies.c.ref == "NEVER_OURS")).scalar_one()
    queries = sim_control(stack, "GET", "/ledger")["calls"]
    outcome = resolve_anomaly(stack.rt, anomaly_id, operator="alice", reason="a portal test order")
    assert outcome["fresh_query"] == {} and outcome["resolution"] == "a portal test order"
    assert sim_control(stack, "GET", "/ledger")["calls"] == queries
    with read(stack.rt.engine) as conn:
        assert conn.execute(sa.select(anomalies.c.resolved_by).where(anomalies.c.id == anomaly_id)).scalar_one() \
            == "alice"
