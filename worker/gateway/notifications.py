"""Typed views of the two notifications Checus sends: a payment's result and a refund's.

Each is an envelope (``NotificationHeader``) around the same ``data`` an orderQuery or refundQuery
answers with (``replies``); a notification carries only terminal states.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.gateway.enums import PaymentStatus, RefundStatus
from worker.gateway.replies import OrderStatusReply, RefundStatusReply, ReplyInvalid, text_field
from worker.gateway.wire import parse_time


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationHeader:
    """The envelope of a notification: who sent it, about what, when."""

    code: str
    msg: str | None
    app_id: str | None
    merchant_no: str | None
    notify_type: str
    notify_time: datetime | None

    @classmethod
    def read(cls, d: dict[str, Any]) -> NotificationHeader:
        return cls(
            code=text_field(d, "code", required=True, limit=64) or "",
            msg=text_field(d, "msg", limit=512),
            app_id=text_field(d, "appId", limit=64),
            merchant_no=text_field(d, "merchantNo", limit=32),
            notify_type=text_field(d, "notifyType", required=True, limit=32) or "",
            notify_time=parse_time(d.get("notifyTime")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentNotification:
    header: NotificationHeader
    order: OrderStatusReply

    @classmethod
    def read(cls, body: dict[str, Any]) -> PaymentNotification:
        header = NotificationHeader.read(body)
        if header.notify_type != "PAYMENT":
            raise ReplyInvalid("notifyType is not PAYMENT")
        order = OrderStatusReply.read(body.get("data"))
        if order.status is PaymentStatus.PENDING:
            raise ReplyInvalid("payment notifications carry only terminal states")
        return cls(header=header, order=order)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundNotification:
    header: NotificationHeader
    refund: RefundStatusReply

    @classmethod
    def read(cls, body: dict[str, Any]) -> RefundNotification:
        header = NotificationHeader.read(body)
        if header.notify_type != "REFUND":
            raise ReplyInvalid("notifyType is not REFUND")
        refund = RefundStatusReply.read(body.get("data"))
        if refund.status is RefundStatus.REFUND_PENDING:
            raise ReplyInvalid("refund notifications carry only terminal states")
        return cls(header=header, refund=refund)
