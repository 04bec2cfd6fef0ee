"""The Checus wire layer: signing, typed requests and replies, and the client."""

from worker.gateway.client import ChecusClient, base_url_for, build_http_client
from worker.gateway.enums import Endpoint, PaymentStatus, RefundStatus, TokenStatus
from worker.gateway.errors import (
    ChecusError,
    DuplicateRequest,
    GatewayRejected,
    OutcomeUnknown,
    RecordNotFound,
    RequestInvalid,
    RequestNotSent,
)
from worker.gateway.signing import KeyLoadError, Signer, Verifier

__all__ = [
    "ChecusClient",
    "ChecusError",
    "DuplicateRequest",
    "Endpoint",
    "GatewayRejected",
    "KeyLoadError",
    "OutcomeUnknown",
    "PaymentStatus",
    "RecordNotFound",
    "RefundStatus",
    "RequestInvalid",
    "RequestNotSent",
    "Signer",
    "TokenStatus",
    "Verifier",
    "base_url_for",
    "build_http_client",
]
