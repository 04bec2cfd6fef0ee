"""The gateway's vocabularies, spelled exactly as on the wire (WIRE.md §6)."""

from __future__ import annotations

from enum import StrEnum

from statemachine import ACCEPTED_CODE


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CLOSED = "CLOSED"


class RefundStatus(StrEnum):
    REFUND_PENDING = "REFUND_PENDING"
    REFUND_SUCCESS = "REFUND_SUCCESS"
    REFUND_FAILED = "REFUND_FAILED"


class TokenStatus(StrEnum):
    """Mixed case, exactly as Checus sends it."""

    ACTIVATED = "Activated"
    EXPIRED = "Expired"
    DELETED = "Deleted"


class Integrate(StrEnum):
    HOSTED_CHECKOUT = "Hosted_Checkout"
    DIRECT_PAYMENT = "Direct_Payment"


class Endpoint(StrEnum):
    """Gateway paths with the envelope ``version`` each one takes."""

    ORDER_AND_PAY = "orderAndPay"
    ORDER_QUERY = "orderQuery"
    REFUND = "refund"
    REFUND_QUERY = "refundQuery"
    INQUIRE_PAYMENT_TOKEN = "inquirePaymentToken"
    REMOVE_PAYMENT_TOKEN = "removePaymentToken"

    @property
    def version(self) -> str:
        return "1.2" if self in (Endpoint.INQUIRE_PAYMENT_TOKEN, Endpoint.REMOVE_PAYMENT_TOKEN) else "1.4"


APPLY_SUCCESS = ACCEPTED_CODE  # the rule lives in statemachine.sending
GATEWAY_PATH = "/aggregate-pay/api/gateway/"
UAT_BASE_URL = "https://pay-gate-uat.checus.com"
PROD_BASE_URL = "https://pay-gate-hk-prod.checus.com"
