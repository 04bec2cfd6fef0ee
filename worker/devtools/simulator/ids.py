"""Gateway-side identifiers in the shapes PayerMax uses (WIRE.md §22).

``tradeToken`` is ``T`` + yyyyMMdd + 14 digits, ``refundTradeNo``/``tradeOrderNo`` are
yyyyMMddHHmmss + ``TI`` + 12 digits, and ``paymentTokenID`` is ``PMTOKEN`` + digits. A running
counter makes every id unique; a seeded RNG fills the rest, so a run with a fixed seed mints
the same ids again.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime


class IdMinter:
    """Not for secrets: these ids are public order numbers, so a plain seeded RNG is right."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - repeatable test ids, not secrets
        self._counter = itertools.count(1)

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - repeatable test ids, not secrets
        self._counter = itertools.count(1)

    def _digits(self, count: int) -> str:
        return "".join(str(self._rng.randrange(10)) for _ in range(count))

    def trade_token(self, now: datetime) -> str:
        serial = f"{next(self._counter) % 10**6:06d}"
        return f"T{now.astimezone(UTC):%Y%m%d}{self._digits(8)}{serial}"

    def trade_no(self, now: datetime) -> str:
        serial = f"{next(self._counter) % 10**6:06d}"
        return f"{now.astimezone(UTC):%Y%m%d%H%M%S}TI{self._digits(6)}{serial}"

    def payment_token_id(self, now: datetime) -> str:
        serial = f"{next(self._counter) % 10**6:06d}"
        stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")[:17]
        return f"PMTOKEN{stamp}{self._digits(5)}{serial}"

    def digits(self, count: int) -> str:
        """Free-form digits for simulated references (3DS transaction ids, cavv)."""
        return self._digits(count)


def mask_token(token_id: str) -> str:
    """For logs: enough to tell tokens apart, not enough to use one."""
    return f"{token_id[:7]}…{token_id[-4:]}" if len(token_id) > 12 else "…"
