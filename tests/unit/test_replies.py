"""The tolerant reader: strings for numbers, unknown fields, aliases; strict where money moves."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from worker.gateway.enums import PaymentStatus, RefundStatus, TokenStatus
from worker.gateway.notifications import PaymentNotification, RefundNotification
from worker.gateway.replies import OrderStatusReply, RefundStatusReply, ReplyInvalid, read_token_list

QUERY_EXAMPLE: dict[str, Any] = {  # WIRE.md §9, first token payment
    "country": "SA", "outTradeNo": "orderAndPayOutTradeNo1750939895336PuVDesFayU", "currency": "SAR",
    "tradeToken": "T2025062612724647000120", "totalAmount": 100, "status": "SUCCESS", "resultMsg": "",
    "completeTime": "2025-06-26T12:11:36.142Z", "someNewField": {"x": 1},
    "paymentDetails": [{"paymentMethodType": "CARD", "payAmount": 100, "payCurrency": "SAR",
                        "paymentTokenID": "PMTOKEN20250626121135955468420000003",
                        "cardInfo": {"cardOrg": "MADA", "country": "SA", "cardIdentifierNo": "455036******5105",
                                     "paymentTokenID": "PMTOKEN20250626121135955468420000003"}}],
}


def test_query_example_reads_with_token() -> None:
    order = OrderStatusReply.read(QUERY_EXAMPLE)
    assert order.status is PaymentStatus.SUCCESS and order.amount == Decimal("100.00")
    assert order.payment_token_id == "PMTOKEN20250626121135955468420000003"
    assert order.payment_details[0].masked_card == "455036******5105"
    assert "PMTOKEN2025062612113595546842" not in repr(order)
    assert order.payment_details[0].token_hint == "…0003"


def test_amount_as_string_and_alias() -> None:
    assert OrderStatusReply.read({**QUERY_EXAMPLE, "totalAmount": "100.5"}).amount == Decimal("100.50")
    refund = RefundStatusReply.read({"outRefundNo": "R1", "totalAmount": "5", "refundCurrency": "IDR",
                               "status": "REFUND_PENDING"})
    assert refund.amount == Decimal(5) and refund.status is RefundStatus.REFUND_PENDING


@pytest.mark.parametrize(
    "patch",
    [{"status": "PAID"}, {"status": None}, {"totalAmount": 1.5}, {"totalAmount": "1.001"}, {"currency": None},
     {"outTradeNo": None}, {"paymentDetails": "x"}, {"totalAmount": None}],
)
def test_values_that_would_move_money_wrongly_are_refused(patch: dict[str, Any]) -> None:
    with pytest.raises(ReplyInvalid):
        OrderStatusReply.read({**QUERY_EXAMPLE, **patch})


def test_payment_notification_needs_terminal_status_and_type() -> None:
    body = {"code": "APPLY_SUCCESS", "msg": "", "keyVersion": "1", "appId": "A", "merchantNo": "M",
            "notifyTime": "2022-01-17T09:33:54.540+00:00", "notifyType": "PAYMENT", "data": QUERY_EXAMPLE}
    note = PaymentNotification.read(body)
    assert note.header.app_id == "A" and note.order.status is PaymentStatus.SUCCESS
    with pytest.raises(ReplyInvalid):
        PaymentNotification.read({**body, "notifyType": "REFUND"})
    with pytest.raises(ReplyInvalid):
        PaymentNotification.read({**body, "data": {**QUERY_EXAMPLE, "status": "PENDING"}})


def test_refund_notification_example() -> None:
    body = {"code": "APPLY_SUCCESS", "msg": "Success.", "keyVersion": "1", "merchantNo": "020213827212251",
            "notifyTime": "2022-01-17T09:33:54.540+00:00", "notifyType": "REFUND",
            "data": {"outRefundNo": "R1642411016202", "refundTradeNo": "20220117091657TI790000055087",
                     "outTradeNo": "P1642410680681", "refundAmount": 10000, "refundCurrency": "IDR",
                     "refundFinishTime": "2023-10-20T03:28:23.092Z", "status": "REFUND_SUCCESS"}}
    note = RefundNotification.read(body)
    assert note.refund.amount == Decimal(10000) and note.header.app_id is None


def test_token_list_example_and_null() -> None:
    items = [{"tokenScope": "tokenAcq", "targetOrg": "", "ifCVV": "N", "cardInfo": "455701******1010",
              "paymentTokenID": "PMTOKEN20230710080439571142400031000", "paymentTokenStatus": "Activated",
              "userId": "czy_0088", "brand": "VISA", "paymentMethodType": "CARD",
              "paymentTokenExpiry": "2023-07-14T00:00:00.537Z"}]
    tokens = read_token_list({"tokenList": items})
    assert tokens[0].status is TokenStatus.ACTIVATED and tokens[0].masked_card == "455701******1010"
    assert read_token_list({"tokenList": None}) == [] and read_token_list(None) == []
    with pytest.raises(ReplyInvalid):
        read_token_list({"tokenList": [{**items[0], "paymentTokenStatus": "ACTIVATED"}]})
