"""Sending a create or refund request: what an answer code means, and what we know of earlier sends.

Rules, read before the code:

1. A request is sent only after its record was claimed (CREATED → UNKNOWN, a compare-and-set in
   the store): one sender per record, and a sender that dies leaves a record that is resolved by
   query. Every claim is one *send*; ``SendLedger.sends`` counts them.
2. An answer is read in one of five ways (``Answer``): ACCEPTED (APPLY_SUCCESS), REPEAT
   (ORDER_REPEAT: the number is known to Checus), RETRY_LATER ("not now": no effect, ask again
   later), REJECTED (a definitive refusal: no effect), UNKNOWN (a timeout, a reset, a 5xx, an
   unreadable or unverifiable answer, a code we do not know, or a code that names the gateway's
   own trouble). A code is definitive only if it is in ``DEFINITIVE_CODES``: an unknown code is
   an unknown outcome, never a refusal.
3. A refusal can end a record only when every earlier send of the same number is known to have
   had no effect (``known_first``): an earlier send whose answer we never read may have been
   accepted, and Checus's answer to a repeat is undocumented (it may refuse it with any code).
   Otherwise the refusal is resolved by query.
4. The ledger remembers the answer to the latest send (``last_answer``) and how many sends were
   known to have had no effect (``clean``): the facts rules 3 and the ORDER_NOT_EXIST rules need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final


class Answer(StrEnum):
    """How the answer to one send reads."""

    ACCEPTED = "accepted"
    REPEAT = "repeat"
    RETRY_LATER = "retry_later"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


ACCEPTED_CODE: Final = "APPLY_SUCCESS"
DUPLICATE_CODE: Final = "ORDER_REPEAT"
NOT_FOUND_CODE: Final = "ORDER_NOT_EXIST"
# Codes that describe the gateway's own trouble (or work still in progress), not a decision
# about our request: the request may have been half-processed, so the outcome is unknown.
UNCERTAIN_CODES: Final = frozenset({"SYSTEM_ERROR", "UNEXPECTED_ERROR", "REQUEST_TIMEOUT", "PAYMENT_PROCESSING"})
# Refund refusals that mean "not now" (WIRE.md §17): a low balance, or REFUND_FAILED as the
# answer *code*, which Checus uses for "a refund of this order is already in progress".
RETRY_LATER_CODES: Final = frozenset({"REFUND_INSUFFICIENT_BALANCE", "REFUND_FAILED"})
# Every refusal WIRE.md §7 documents (Checus's page and PayerMax's list). Only these are read as
# "no effect"; any other code is an unknown outcome.
DEFINITIVE_CODES: Final = frozenset({
    "SIGN_VERIFY_FAILED", "AUTHENTICATE_FAILED", "AUTH_FAILED", "AUTH_EXPIRED", "PAYMENT_REJECTED",
    "ISSUER_PAYMENT_REJECTED", "MERCHANT_INVALID", "MERCHANT_APP_INVALID", "CONTRACT_INVALID", "ONBOARD_ERROR",
    "DECLINED_BY_MERCHANT_BLACKLIST", "ORDER_CLOSED", "PARAMS_INVALID", "PAYMENT_METHOD_NOT_EXIST",
    "PAYMENT_METHOD_SUSPEND", "BALANCE_INSUFFICIENT", "COUNTRY_INVALID", "CURRENCY_INVALID", "AMOUNT_LIMIT",
    "AMOUNT_LIMIT_MINIMUM", "AMOUNT_LIMIT_MAXIMUM", "AMOUNT_INVALID", "OTP_VERIFY_LIMIT", "OTP_VERIFY_FAILED",
    "OVER_VERIFY_LIMIT", "BARCODE_REFRESH_LIMIT", "BARCODE_REFRESH_FAILED", "CARD_INVALID",
    "CARD_EXPIRE_DATE_INVALID", "CARD_HOLDER_NAME_INVALID", "CVV_INVALID", "UNSUPPORT_CARD", "ACCOUNT_INVALID",
    "PHONE_NUM_INVALID", "UPI_INVALID", "PIN_VERIFY_LIMIT", "PIN_INVALID", "BANKCODE_INVALID", "ID_NUM_INVALID",
    "EMAIL_INVALID", "DOCUMENT_INVALID", "TCK_INVALID", "DATE_INVALID", "PAYEE_NAME_INVALID", "REMARK_INVALID",
    "CNIC_INVALID", "PAYMENT_FAILED", "REFUND_FAILED", "REFUND_NO_INVALID", "REFUND_INSUFFICIENT_BALANCE",
    "ACCOUNT_BLOCKED", "PARTICIPANT_INVALID",
})
# Every code the client recognises; anything else (a missing code included) is an unknown outcome.
KNOWN_CODES: Final = DEFINITIVE_CODES | UNCERTAIN_CODES | {ACCEPTED_CODE, DUPLICATE_CODE, NOT_FOUND_CODE}
# How many "not now" answers a refund waits out before it is given up (each known to have had no effect).
MAX_RETRY_LATER: Final = 10


def classify(code: str, *, retry_later: frozenset[str] = frozenset()) -> Answer:
    """How a refusal ``code`` reads; ``retry_later`` names the codes that mean "not now" for this request."""
    if code == DUPLICATE_CODE:
        return Answer.REPEAT
    if code in retry_later:
        return Answer.RETRY_LATER
    if code in DEFINITIVE_CODES:
        return Answer.REJECTED
    return Answer.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class SendLedger:
    """What is known of the sends of one merchant number (kept on its record)."""

    sends: int = 0  # claims made; the n-th claim is send number n
    clean: int = 0  # sends whose own answer said "no effect" (a refusal we could read)
    last_answer: Answer | None = None  # the answer to the latest send; None while it is out (or lost)

    def __post_init__(self) -> None:
        if not 0 <= self.clean <= self.sends:
            raise ValueError(f"a ledger of {self.sends} sends cannot have {self.clean} clean ones")

    def claimed(self) -> SendLedger:
        """The ledger once one more send is claimed."""
        return replace(self, sends=self.sends + 1, last_answer=None)

    def known_first(self, send_no: int) -> bool:
        """True when send ``send_no`` is the latest and every send before it is known to have had no effect."""
        return send_no == self.sends and self.clean == send_no - 1

    def answered(self, send_no: int, answer: Answer) -> SendLedger:
        """The ledger once the answer to send ``send_no`` is read; a late answer to an older send
        changes nothing (it says nothing about the latest one)."""
        if send_no != self.sends:
            return self
        clean = self.clean + (answer in (Answer.REJECTED, Answer.RETRY_LATER))
        return replace(self, clean=clean, last_answer=answer)
