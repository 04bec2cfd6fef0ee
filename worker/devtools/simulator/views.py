"""Records rendered as the wire shows them (WIRE.md §8-15), and as the control API shows them.

Amounts leave as ``Decimal`` (so ``wire.dumps`` writes JSON numbers) with the currency's
exponent; gateway times leave in UTC with a ``Z``. ``paymentDetails`` is filled only for a
successful payment and is ``[]`` otherwise, as the gateway does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.devtools.simulator.records import HOSTED, Order, OrderStatus, Refund, RefundStatus, Token
from worker.gateway.money import currency_exponent
from worker.gateway.wire import format_utc

SUCCESS_MSG = "Success."


def money(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-currency_exponent(currency)))


def _optional(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def three_ds_result(order: Order) -> dict[str, str]:
    """A frictionless-looking challenge result, stable per order."""
    ds_id = uuid.uuid5(uuid.NAMESPACE_URL, f"sim-3ds:{order.trade_token}")
    return {
        "threeDSVersion": "2.2.0",
        "enrolled": "Y",
        "authenticationStatus": "Y",
        "eci": "02" if order.card is not None and order.card.org == "MASTERCARD" else "05",
        "dsTransactionId": str(ds_id),
        "cavv": f"AAAB{order.trade_token[-16:]}",
    }


def card_info(order: Order) -> dict[str, Any] | None:
    card = order.card
    if card is None:
        return None
    info: dict[str, Any] = {
        "cardOrg": card.org,
        "country": card.country,
        "cardIdentifierNo": card.masked,
        "cardIdentifierName": card.holder_masked,
    }
    if order.payment_token_id is not None:
        info["paymentTokenID"] = order.payment_token_id
    if order.three_ds_ran:
        info["threeDSResult"] = three_ds_result(order)
    return info


def payment_details(order: Order) -> list[dict[str, Any]]:
    if order.status is not OrderStatus.SUCCESS:
        return []
    method = order.payment_method_type or "CARD"
    detail: dict[str, Any] = {
        "paymentMethodType": method,
        "payAmount": money(order.amount, order.currency),
        "payCurrency": order.currency,
    }
    if method != "CARD" and order.target_org:
        detail["targetOrg"] = order.target_org
    if order.payment_token_id is not None:
        detail["paymentTokenID"] = order.payment_token_id
    info = card_info(order) if method == "CARD" else None
    if info is not None:
        detail["cardInfo"] = info
    return [detail]


def _cashier_country(order: Order) -> str | None:
    if order.integrate != HOSTED or order.status is not OrderStatus.SUCCESS:
        return None
    return order.country or (order.card.country if order.card else None)


def _result_code(order: Order) -> str | None:
    return order.result_code if order.status in (OrderStatus.FAILED, OrderStatus.CLOSED) else None


def order_query_data(order: Order) -> dict[str, Any]:
    """``/orderQuery`` data: ``resultMsg`` is "" unless the payment failed or closed."""
    return {
        "outTradeNo": order.out_trade_no,
        "tradeToken": order.trade_token,
        "totalAmount": money(order.amount, order.currency),
        "currency": order.currency,
        "country": order.country or "",
        "status": str(order.status),
        "resultMsg": order.result_msg if _result_code(order) else "",
        "createTime": format_utc(order.created_at),
        "paymentDetails": payment_details(order),
        **_optional(
            resultCode=_result_code(order),
            reference=order.reference,
            completeTime=format_utc(order.completed_at) if order.completed_at else None,
            cashierCountry=_cashier_country(order),
        ),
    }


def payment_notification(order: Order) -> tuple[str, str, dict[str, Any]]:
    """(code, msg, data) of a payment notification; a failure code sits at the top level."""
    data = {
        "outTradeNo": order.out_trade_no,
        "tradeToken": order.trade_token,
        "totalAmount": money(order.amount, order.currency),
        "currency": order.currency,
        "status": str(order.status),
        "completeTime": format_utc(order.completed_at or order.created_at),
        "paymentDetails": payment_details(order),
        **_optional(
            country=order.country,
            reference=order.reference,
            cashierCountry=_cashier_country(order),
        ),
    }
    if order.status is OrderStatus.SUCCESS:
        return "APPLY_SUCCESS", SUCCESS_MSG, data
    return order.result_code or "PAYMENT_FAILED", order.result_msg, data


def refund_reply_data(refund: Refund) -> dict[str, Any]:
    return {
        "outRefundNo": refund.out_refund_no,
        "tradeOrderNo": refund.trade_order_no,
        "refundTradeNo": refund.refund_trade_no,
        "status": str(refund.status),
    }


def refund_query_data(refund: Refund) -> dict[str, Any]:
    return {
        "outRefundNo": refund.out_refund_no,
        "refundTradeNo": refund.refund_trade_no,
        "outTradeNo": refund.out_trade_no,
        "refundAmount": money(refund.amount, refund.currency),
        "refundCurrency": refund.currency,
        "status": str(refund.status),
        "resultMsg": refund.result_msg if refund.status is RefundStatus.REFUND_FAILED else "",
        **_optional(refundFinishTime=format_utc(refund.finished_at) if refund.finished_at else None),
    }


def refund_notification(refund: Refund) -> tuple[str, str, dict[str, Any]]:
    data = refund_query_data(refund)
    data.pop("resultMsg")
    if refund.status is RefundStatus.REFUND_SUCCESS:
        return "APPLY_SUCCESS", SUCCESS_MSG, data
    return "REFUND_FAILED", refund.result_msg or "Refund failed.", data


def token_item(token: Token, now: datetime) -> dict[str, Any]:
    """One ``tokenList`` entry; ``cardInfo`` is the masked PAN as a plain string (§14)."""
    return {
        "paymentTokenID": token.token_id,
        "userId": token.user_id,
        "tokenScope": "tokenAcq",
        "paymentTokenStatus": str(token.status_at(now)),
        "paymentTokenExpiry": format_utc(token.expiry),
        "paymentMethodType": "CARD",
        "targetOrg": "",
        "cardInfo": token.card.masked,
        "brand": token.card.org,
        "ifCVV": "N",
        "accountDisplay": "",
    }


def order_truth(order: Order, refunds: list[Refund]) -> dict[str, Any]:
    """The control API's full view of an order, refunds included."""
    settled = [r.amount for r in refunds if r.status is RefundStatus.REFUND_SUCCESS]
    pending = [r.amount for r in refunds if r.status is RefundStatus.REFUND_PENDING]
    return {
        **order_query_data(order),
        "tradeOrderNo": order.trade_order_no,
        "integrate": order.integrate,
        "subject": order.subject,
        "amount": money(order.amount, order.currency),
        "userId": order.user_id,
        "paymentMethodType": order.payment_method_type,
        "paymentTokenID": order.payment_token_id,
        "tokenOffered": order.token_offered,
        "tokenUsed": order.token_used,
        "tokenMinted": order.token_minted,
        "needs3DS": order.needs_3ds,
        "threeDSRan": order.three_ds_ran,
        "notifyUrl": order.notify_url,
        "expireTime": format_utc(order.expire_at),
        "refundedAmount": money(sum(settled, Decimal(0)), order.currency),
        "pendingRefundAmount": money(sum(pending, Decimal(0)), order.currency),
        "refunds": [refund_truth(r) for r in refunds],
    }


def refund_truth(refund: Refund) -> dict[str, Any]:
    return {
        **refund_query_data(refund),
        "tradeOrderNo": refund.trade_order_no,
        "comments": refund.comments,
        "notifyUrl": refund.notify_url,
        "createTime": format_utc(refund.created_at),
    }


def token_truth(token: Token, now: datetime) -> dict[str, Any]:
    return {**token_item(token, now), "outTradeNo": token.out_trade_no, "storedStatus": str(token.status)}
