"""The answer to a repeated ``outTradeNo`` or ``outRefundNo``, as the fault plan asks.

Checus does not document it (WIRE.md §25 questions 5 and 6): it may replay the first answer,
say ``ORDER_REPEAT`` with or without the existing record, or refuse with some other code. A
client that reads any of these as "the first send failed" loses or doubles money, so the
simulator can give each one (``FaultPlan.repeat_answer``; the mode for one request is drawn
with its other faults and reaches the handler in ``Call``).

Whatever the answer, a repeat never creates or changes a record: the first send's effect is
the only one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from worker.devtools.simulator.envelope import Rejected, Reply
from worker.devtools.simulator.faults import REJECT_PREFIX, REPEAT_WITH_DATA, REPEAT_WITHOUT_DATA, REPLAY

log = structlog.get_logger("worker.devtools.simulator")


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """What a handler knows of its request besides ``data``: where it was served, and the
    answer this request gets if it repeats a known number."""

    base_url: str
    repeat: str = REPLAY


def answer(
    mode: str,
    *,
    endpoint: str,
    key: str,
    msg: str,
    data: Mapping[str, Any],
    replay: Callable[[], Reply],
    count: Callable[[str, str], None],
) -> Reply:
    """Answer a repeat in ``mode``; ``replay`` is the configured behaviour (it may raise too).

    ``count`` records ``repeat:<mode>`` in the ledger's codes, so a run can show it met repeats.
    """
    count(endpoint, f"repeat:{mode}")
    log.info("sim.repeat.answered", endpoint=endpoint, key=key, answer=mode)
    if mode == REPLAY:
        return replay()
    if mode == REPEAT_WITH_DATA:
        raise Rejected("ORDER_REPEAT", msg, data)
    if mode == REPEAT_WITHOUT_DATA:
        raise Rejected("ORDER_REPEAT", msg)
    if mode.startswith(REJECT_PREFIX):
        raise Rejected(mode.removeprefix(REJECT_PREFIX))
    raise ValueError(f"unknown repeat answer {mode!r:.40}")  # FaultPlan.from_json lets none through
