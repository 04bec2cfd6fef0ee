"""End to end: every seed flow through simulator → receiver → rq worker → store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from tests.e2e.conftest import Events, cashier, sim_control
from worker.devtools.demo.stack import EmbeddedStack
from worker.service import PaymentResult
from worker.service_errors import RefundRefused, TokenRefused


def state_of(stack: EmbeddedStack, out_trade_no: str) -> str | None:
    view = stack.service.get_order(out_trade_no)
    return view.order.state if view else None


def first_payment(stack: EmbeddedStack, no: str = "E2E_FIRST", amount: str = "100.00") -> PaymentResult:
    result = stack.service.create_card_payment(
        out_trade_no=no, amount=Decimal(amount), currency="USD", user_id="u1", subject="First",
        front_callback_url="https://shop.test/return", save_card=True, country="US")
    assert result.state == "PENDING" and result.redirect_url
    assert cashier(result.redirect_url, "success") == 200
    assert stack.settle(lambda: state_of(stack, no) == "SUCCESS")
    return result


def token_id_of(stack: EmbeddedStack, user: str = "u1") -> int:
    tokens = stack.service.list_tokens(user, sync=False)
    assert len(tokens) == 1
    return tokens[0].id


def test_first_payment_saves_the_card_and_emits_events(stack: EmbeddedStack, events: Events) -> None:
    """Hosted cashier payment with tokenForFutureUse: SUCCESS by notification, token saved, events once."""
    first_payment(stack)
    view = stack.service.get_order("E2E_FIRST")
    assert view is not None
    assert [(h.from_state, h.to_state, h.source) for h in view.history] == [
        ("CREATED", "UNKNOWN", "api"), ("UNKNOWN", "PENDING", "api"), ("PENDING", "SUCCESS", "notification")]
    token = stack.service.list_tokens("u1", sync=False)[0]
    assert token.status == "Activated" and token.token_hint
    assert stack.settle(lambda: len(events.of_type("payment.succeeded")) == 1)
    assert len(events.of_type("token.saved")) == 1


def test_token_payment_success_is_a_hint_until_confirmed(stack: EmbeddedStack) -> None:
    """A synchronous SUCCESS leaves the order PENDING; the notification makes it SUCCESS."""
    first_payment(stack)
    result = stack.service.pay_with_token(out_trade_no="E2E_TOKEN", user_id="u1", token=token_id_of(stack),
                                          amount=Decimal("25.00"), currency="USD", country="US", subject="Again",
                                          client_ip="127.0.0.1", user_agent="pytest")
    assert result.gateway_hint == "SUCCESS" and result.state == "PENDING" and result.redirect_url is None
    assert stack.settle(lambda: state_of(stack, "E2E_TOKEN") == "SUCCESS")


def test_token_payment_with_3ds(stack: EmbeddedStack) -> None:
    first_payment(stack)
    result = stack.service.pay_with_token(out_trade_no="E2E_3DS", user_id="u1", token=token_id_of(stack),
                                          amount=Decimal("25.00"), currency="USD", country="US", subject="3DS",
                                          client_ip="127.0.0.1", user_agent="pytest")
    assert result.state == "PENDING" and result.redirect_url
    assert cashier(result.redirect_url, "3ds_pass") == 200
    assert stack.settle(lambda: state_of(stack, "E2E_3DS") == "SUCCESS")


def test_lost_notification_is_recovered_by_polling(stack: EmbeddedStack) -> None:
    """The gateway never notifies; the scheduler's polls find the SUCCESS."""
    sim_control(stack, "PUT", "/faults", json={"notifications": {"drop_rate": 1}})
    result = stack.service.create_card_payment(
        out_trade_no="E2E_LOST", amount=Decimal("10.00"), currency="USD", user_id="u2", subject="Lost",
        front_callback_url="https://shop.test/return")
    assert result.redirect_url and cashier(result.redirect_url, "success") == 200
    assert stack.settle(lambda: state_of(stack, "E2E_LOST") == "SUCCESS", timeout=20)
    view = stack.service.get_order("E2E_LOST")
    assert view is not None and view.history[-1].source == "poll"


def test_duplicates_and_replays_change_nothing(stack: EmbeddedStack, events: Events) -> None:
    first_payment(stack)
    sim_control(stack, "POST", "/notifications/resend", json={"key": "E2E_FIRST", "copies": 5})
    stack.settle(lambda: False, timeout=1.0)
    view = stack.service.get_order("E2E_FIRST")
    assert view is not None and len(view.history) == 3  # claimed, accepted, settled
    assert len(events.of_type("payment.succeeded")) == 1


def test_partial_refunds_up_to_the_full_amount(stack: EmbeddedStack, events: Events) -> None:
    first_payment(stack)
    r1 = stack.service.refund("E2E_FIRST", Decimal("30.00"), out_refund_no="E2E_R1")
    assert stack.settle(lambda: stack.sim.state.refund("E2E_R1") is not None)
    sim_control(stack, "POST", "/refunds/E2E_R1/complete", json={"status": "REFUND_SUCCESS"})
    r2 = stack.service.refund("E2E_FIRST", Decimal("70.00"), out_refund_no="E2E_R2")
    assert r1.refund.state == "CREATED" and r2.refund.state == "CREATED"
    assert stack.settle(lambda: (stack.service.get_refund("E2E_R1") or r1).refund.state == "REFUND_SUCCESS")
    assert stack.settle(lambda: stack.sim.state.refund("E2E_R2") is not None)
    sim_control(stack, "POST", "/refunds/E2E_R2/complete", json={"status": "REFUND_SUCCESS"})
    assert stack.settle(lambda: (stack.service.get_refund("E2E_R2") or r2).refund.state == "REFUND_SUCCESS")
    with pytest.raises(RefundRefused, match="exceeds_refundable"):
        stack.service.refund("E2E_FIRST", Decimal("0.01"))
    view = stack.service.get_order("E2E_FIRST")
    assert view is not None and view.refunded == Decimal("100.00")
    assert stack.settle(lambda: len(events.of_type("refund.succeeded")) == 2)


def test_failed_refund_frees_the_amount(stack: EmbeddedStack) -> None:
    first_payment(stack)
    stack.service.refund("E2E_FIRST", Decimal("60.00"), out_refund_no="E2E_RF")
    assert stack.settle(lambda: stack.sim.state.refund("E2E_RF") is not None)
    sim_control(stack, "POST", "/refunds/E2E_RF/complete", json={"status": "REFUND_FAILED"})
    assert stack.settle(lambda: (stack.service.get_refund("E2E_RF")).refund.state == "REFUND_FAILED")  # type: ignore[union-attr]
    again = stack.service.refund("E2E_FIRST", Decimal("100.00"), out_refund_no="E2E_RF2")
    assert again.refund.state == "CREATED"


def test_concurrent_refunds_cannot_exceed_the_paid_amount(stack: EmbeddedStack) -> None:
    """Two requests of 60 against 100 paid, at the same time: exactly one is created."""
    first_payment(stack)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def ask(no: str) -> None:
        barrier.wait()
        try:
            stack.service.refund("E2E_FIRST", Decimal("60.00"), out_refund_no=no)
            outcomes.append("created")
        except RefundRefused as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=ask, args=(f"E2E_C{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created", "exceeds_refundable"]


def test_tokens_list_remove_and_refuse(stack: EmbeddedStack, events: Events) -> None:
    first_payment(stack)
    token = token_id_of(stack)
    listed = stack.service.list_tokens("u1", sync=True)
    assert [t.status for t in listed] == ["Activated"]
    removed = stack.service.remove_token("u1", token, reason="user asked")
    assert removed.status == "Deleted"
    with pytest.raises(TokenRefused, match="token_deleted"):
        stack.service.pay_with_token(out_trade_no="E2E_AFTER", user_id="u1", token=token, amount=Decimal("1.00"),
                                     currency="USD", country="US", subject="x", client_ip="127.0.0.1",
                                     user_agent="pytest")
    with pytest.raises(TokenRefused, match="token_not_found"):
        stack.service.pay_with_token(out_trade_no="E2E_OTHER", user_id="someone_else", token=token,
                                     amount=Decimal("1.00"), currency="USD", country="US", subject="x",
                                     client_ip="127.0.0.1", user_agent="pytest")
    assert stack.service.get_order("E2E_AFTER") is None
    assert stack.settle(lambda: len(events.of_type("token.removed")) == 1)
