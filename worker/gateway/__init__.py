"""The Checus wire layer: signing, typed requests and replies, and the client."""

from .client import ChecusClient, base_url_for, build_http_client
from .enums import Endpoint, PaymentStatus, RefundStatus, TokenStatus
from .errors import (
    ChecusError,
    DuplicateRequest,
    GatewayRejected,
    OutcomeUnknown,
    RecordNotFound,
    RequestInvalid,
    RequestNotSent,
)
from .signing import KeyLoadError, Signer, Verifier

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
