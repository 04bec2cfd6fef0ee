"""End to end, the hard cases: reordering, late and contradicting notifications, unknown create outcomes."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from tests.e2e.conftest import Events, cashier, sim_control
from tests.e2e.test_payment_flows import first_payment, state_of
from worker.devtools.demo.stack import APP_ID, MERCHANT_NO, EmbeddedStack
from worker.gateway.signing import Signer
from worker.gateway.wire import dumps, format_time
from worker.store.db import read
from worker.store.schema import anomalies


def signed_notification(stack: EmbeddedStack, data: dict[str, object], *, kind: str = "PAYMENT",
                        code: str = "APPLY_SUCCESS") -> tuple[bytes, str]:
    body = dumps({"code": code, "msg": "", "keyVersion": "1", "appId": APP_ID, "merchantNo": MERCHANT_NO,
                  "notifyTime": format_time(stack.rt.clock()), "notifyType": kind, "data": data})
    return body, Signer.from_value(stack.platform.private_key, setting="platform").sign(body)


def post(stack: EmbeddedStack, path: str, body: bytes, sign: str) -> int:
    import httpx

    return httpx.post(stack.receiver.base_url + path, content=body,
                      headers={"sign": sign, "content-type": "application/json"}, timeout=10).status_code


def test_reordered_duplicates_apply_once(stack: EmbeddedStack, events: Events) -> None:
    """Deliveries duplicated up to 4 times and reordered within a window still apply each fact once."""
    sim_control(stack, "PUT", "/faults", json={"notifications": {"duplicate_rate": 1, "max_copies": 4,
                                                                 "reorder_window_seconds": 0.3}})
    numbers = [f"E2E_RE{i}" for i in range(4)]
    for no in numbers:
        result = stack.service.create_card_payment(out_trade_no=no, amount=Decimal("3.00"), currency="USD",
                                                   user_id="u5", subject="r", front_callback_url="https://s.test/r")
        assert result.redirect_url and cashier(result.redirect_url, "fail" if no.endswith("1") else "success") == 200
    assert stack.settle(lambda: all(state_of(stack, no) in ("SUCCESS", "FAILED") for no in numbers), timeout=20)
    stack.settle(lambda: False, timeout=1.5)  # let the late copies arrive
    for no in numbers:
        view = stack.service.get_order(no)
        assert view is not None and len(view.history) == 3  # claimed, accepted, settled
    assert len(events.of_type("payment.succeeded")) == 3 and len(events.of_type("payment.failed")) == 1


def test_contradicting_notification_is_confirmed_and_ignored(stack: EmbeddedStack) -> None:
    """A signed FAILED after SUCCESS is checked by /orderQuery; the gateway says SUCCESS, so nothing moves."""
    first_payment(stack, "E2E_CONTRA")
    body, sign = signed_notification(stack, {"outTradeNo": "E2E_CONTRA", "tradeToken": "T1", "totalAmount": 100,
                                             "currency": "USD", "status": "FAILED", "paymentDetails": []},
                                     code="PAYMENT_FAILED")
    assert post(stack, "/checus/notify/payment", body, sign) == 200
    stack.settle(lambda: False, timeout=1.5)
    view = stack.service.get_order("E2E_CONTRA")
    assert view is not None and view.order.state == "SUCCESS"
    assert [h.to_state for h in view.history] == ["UNKNOWN", "PENDING", "SUCCESS"]


def test_late_success_after_close_is_an_anomaly_not_a_state(stack: EmbeddedStack) -> None:
    """The gateway closes an order, then reports SUCCESS for it: recorded for an operator, never applied blindly."""
    result = stack.service.create_card_payment(out_trade_no="E2E_LATE", amount=Decimal("9.00"), currency="USD",
                                               user_id="u6", subject="late", front_callback_url="https://s.test/r")
    assert result.redirect_url
    sim_control(stack, "POST", "/orders/E2E_LATE/complete", json={"status": "CLOSED"})
    assert stack.settle(lambda: state_of(stack, "E2E_LATE") == "CLOSED")
    sim_control(stack, "POST", "/orders/E2E_LATE/complete", json={"status": "SUCCESS", "force": True})
    stack.settle(lambda: _anomaly_kinds(stack) != [], timeout=10)
    assert state_of(stack, "E2E_LATE") == "CLOSED"
    assert _anomaly_kinds(stack) == ["late_success"]


def _anomaly_kinds(stack: EmbeddedStack) -> list[str]:
    with read(stack.rt.engine) as conn:
        return list(conn.execute(sa.select(anomalies.c.kind)).scalars())


def test_unknown_create_outcome_is_resolved_by_query(stack: EmbeddedStack) -> None:
    """/orderAndPay times out after the gateway created the order: UNKNOWN, then the query adopts PENDING."""
    sim_control(stack, "PUT", "/faults", json={"endpoints": {"orderAndPay": {"drop_rate": 1}}})
    result = stack.service.create_card_payment(out_trade_no="E2E_UNKNOWN", amount=Decimal("4.00"), currency="USD",
                                               user_id="u7", subject="u", front_callback_url="https://s.test/r")
    assert result.state == "UNKNOWN" and result.redirect_url is None
    sim_control(stack, "DELETE", "/faults")
    assert stack.settle(lambda: state_of(stack, "E2E_UNKNOWN") == "PENDING")
    sim_control(stack, "POST", "/orders/E2E_UNKNOWN/complete", json={"status": "SUCCESS"})
    assert stack.settle(lambda: state_of(stack, "E2E_UNKNOWN") == "SUCCESS")
    assert sim_control(stack, "GET", "/ledger")["orders"]["E2E_UNKNOWN"] == 1


def test_unknown_create_never_reached_the_gateway_is_resubmitted(stack: EmbeddedStack) -> None:
    """The create was lost before Checus saw it: after the grace period it is sent again with the same number."""
    sim_control(stack, "PUT", "/faults", json={"endpoints": {"orderAndPay": {"drop_rate": 1,
                                                                             "drop_applies_effect": False}}})
    result = stack.service.create_card_payment(out_trade_no="E2E_RESEND", amount=Decimal("4.00"), currency="USD",
                                               user_id="u8", subject="u", front_callback_url="https://s.test/r")
    assert result.state == "UNKNOWN"
    sim_control(stack, "DELETE", "/faults")
    assert stack.settle(lambda: state_of(stack, "E2E_RESEND") == "PENDING", timeout=90)
    assert sim_control(stack, "GET", "/ledger")["orders"]["E2E_RESEND"] == 1


def test_notification_before_the_order_is_known_is_kept(stack: EmbeddedStack) -> None:
    """A refund notification for an unknown outRefundNo is acknowledged, deferred, and not lost."""
    body, sign = signed_notification(stack, {"outRefundNo": "E2E_GHOST", "outTradeNo": "X", "refundAmount": 1,
                                             "refundCurrency": "USD", "status": "REFUND_SUCCESS"}, kind="REFUND")
    assert post(stack, "/checus/notify/refund", body, sign) == 200
    stack.drain()
    from worker.store.schema import inbox

    with read(stack.rt.engine) as conn:
        row = conn.execute(sa.select(inbox.c.processed_at, inbox.c.outcome)).one()
    assert row.processed_at is None and row.outcome == "unknown_refund"


def test_refund_made_elsewhere_is_adopted_when_it_fits(stack: EmbeddedStack, events: Events) -> None:
    """A refund notification for an outRefundNo we never sent (a portal refund) is recorded if it fits."""
    first_payment(stack, "E2E_PORTAL")
    body, sign = signed_notification(stack, {"outRefundNo": "PORTAL_R1", "outTradeNo": "E2E_PORTAL",
                                             "refundAmount": 40, "refundCurrency": "USD",
                                             "status": "REFUND_SUCCESS"}, kind="REFUND")
    assert post(stack, "/checus/notify/refund", body, sign) == 200
    assert stack.settle(lambda: (v := stack.service.get_refund("PORTAL_R1")) is not None
                        and v.refund.state == "REFUND_SUCCESS")
    view = stack.service.get_order("E2E_PORTAL")
    assert view is not None and view.refunded == Decimal("40.00")
    assert stack.settle(lambda: len(events.of_type("refund.succeeded")) == 1)
    over, over_sign = signed_notification(stack, {"outRefundNo": "PORTAL_R2", "outTradeNo": "E2E_PORTAL",
                                                  "refundAmount": 61, "refundCurrency": "USD",
                                                  "status": "REFUND_SUCCESS"}, kind="REFUND")
    assert post(stack, "/checus/notify/refund", over, over_sign) == 200
    assert stack.settle(lambda: _anomaly_kinds(stack) == ["unknown_refund"])
    assert stack.service.get_refund("PORTAL_R2") is None


def test_a_stale_notification_is_refused_but_prompts_a_poll(stack: EmbeddedStack) -> None:
    """A signed notification older than the freshness window is 400, and the order is polled instead."""
    from datetime import timedelta

    sim_control(stack, "PUT", "/faults", json={"notifications": {"drop_rate": 1}})
    result = stack.service.create_card_payment(out_trade_no="E2E_STALE", amount=Decimal("2.00"), currency="USD",
                                               user_id="u9", subject="s", front_callback_url="https://s.test/r")
    assert result.redirect_url and cashier(result.redirect_url, "success") == 200
    old = stack.rt.clock() - timedelta(hours=49)
    body = dumps({"code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": APP_ID, "merchantNo": MERCHANT_NO,
                  "notifyTime": format_time(old), "notifyType": "PAYMENT",
                  "data": {"outTradeNo": "E2E_STALE", "tradeToken": "T1", "totalAmount": 2, "currency": "USD",
                           "status": "SUCCESS", "paymentDetails": []}})
    sign = Signer.from_value(stack.platform.private_key, setting="platform").sign(body)
    assert post(stack, "/checus/notify/payment", body, sign) == 400
    stack.drain()
    view = stack.service.get_order("E2E_STALE")
    assert view is not None and view.order.state == "SUCCESS" and view.history[-1].source == "poll"
