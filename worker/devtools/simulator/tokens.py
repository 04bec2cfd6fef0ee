"""``/inquirePaymentToken`` and ``/removePaymentToken`` (envelope version 1.2, WIRE.md §14-15).

Inquiry lists one user's tokens, Deleted and Expired ones included with their status, and
answers an empty ``tokenList`` rather than null. Removal is idempotent: removing a Deleted
token answers exactly as the first removal did. A token that is unknown, or belongs to
another user, is refused the same way, so the answer does not reveal which it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from worker.devtools.simulator import fields, views
from worker.devtools.simulator.envelope import Rejected, Reply, ok
from worker.devtools.simulator.ids import mask_token
from worker.devtools.simulator.records import Token, TokenStatus
from worker.devtools.simulator.repeats import Call
from worker.devtools.simulator.runtime import SimulatorRuntime

log = structlog.get_logger("worker.devtools.simulator")
SCOPES = ("tokenAcq", "tokenMit")
REMOVE_REJECT_CODE = "PARAMS_INVALID"


def inquire(rt: SimulatorRuntime, data: dict[str, Any], call: Call) -> Reply:
    user_id = fields.text(data, "userId", max_len=64)
    scope = fields.optional_text(data, "tokenScope", max_len=16) or "tokenAcq"
    if scope not in SCOPES:
        raise Rejected("PARAMS_INVALID", "tokenScope is invalid")
    now = rt.clock.now()
    tokens = sorted(rt.state.tokens(user_id), key=lambda t: t.created_at)
    listed = [views.token_item(t, now) for t in tokens if scope == "tokenAcq" and _wanted(t, data)]
    return ok({"tokenList": listed})


def _wanted(token: Token, data: dict[str, Any]) -> bool:
    """The optional filters; CARD tokens have no ``targetOrg``."""
    wanted = {
        "paymentTokenID": token.token_id,
        "paymentMethodType": "CARD",
        "cardOrg": token.card.org,
        "targetOrg": "",
    }
    for name, actual in wanted.items():
        value = fields.optional_text(data, name, max_len=64)
        if value is not None and value.upper() != actual.upper():
            return False
    return True


def remove(rt: SimulatorRuntime, data: dict[str, Any], call: Call) -> Reply:
    user_id = fields.text(data, "userId", max_len=64)
    token_id = fields.text(data, "paymentTokenID", max_len=64)
    fields.optional_text(data, "removeReason", max_len=256)
    token = rt.state.token(token_id)
    if token is None or token.user_id != user_id:
        raise Rejected(REMOVE_REJECT_CODE, "paymentTokenID is invalid")
    if token.status is not TokenStatus.DELETED:
        rt.state.put_token(replace(token, status=TokenStatus.DELETED))
        log.info("sim.token.deleted", token=mask_token(token_id))
    return ok({"userId": user_id, "paymentTokenID": token_id, "paymentTokenStatus": str(TokenStatus.DELETED)})
