"""The token calls of the merchant API raise nothing outside the ``service_errors`` tree."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from worker.flows.tokens import list_tokens
from worker.gateway import OutcomeUnknown as ChecusOutcomeUnknown
from worker.runtime import Runtime
from worker.service_errors import Busy, ServiceError


class _Unanswered:
    def inquire_tokens(self, _inquiry: Any) -> Any:
        raise ChecusOutcomeUnknown("inquirePaymentToken: read timed out", reason="timeout")


def test_an_unanswered_token_inquiry_is_busy_not_a_gateway_error() -> None:
    """A token inquiry Checus did not answer changed nothing: the merchant is told to call again."""
    rt = cast(Runtime, SimpleNamespace(client=_Unanswered()))
    with pytest.raises(Busy) as caught:
        list_tokens(rt, "user-1", sync=True)
    assert isinstance(caught.value, ServiceError)
    assert caught.value.reason == "gateway_unanswered"
