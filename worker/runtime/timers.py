"""The timers of the jobs and the scheduler, in one value that tests and demos scale together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """Every timer the jobs and the scheduler use (seconds), scaled together for tests and demos."""

    poll_ladder: tuple[float, ...] = (60, 300, 900, 3600, 7200)
    poll_claim: float = 120  # a due poll is not enqueued again for this long
    first_poll: float = 30  # a new PENDING order is first polled after this
    confirm_delay: float = 1  # a contradiction is confirmed by query this soon
    refund_retry: float = 60  # a "not now" answer to /refund is sent again after this, doubling each time ...
    refund_retry_max: float = 3600  # ... up to this
    inbox_sweep_after: float = 60  # an inbox row unprocessed this long is enqueued again
    orphan_retries: tuple[float, ...] = (30, 300, 3600, 6 * 3600, 24 * 3600)
    unverified_retries: tuple[float, ...] = (30, 120, 600, 1800, 3600)  # the last repeats: never given up
    stale_created_after: float = 120  # a CREATED order this old lost its API call: resolve by query
    lock_ttl: float = 10
    not_found_grace: float = 60  # an UNKNOWN create/refund the gateway has not heard of is resent after this
    not_found_alarm: float = 3600  # a PENDING order the gateway keeps not finding becomes an anomaly after this
    event_retry: tuple[float, ...] = (5, 30, 300, 1800, 3600)

    def scaled(self, factor: float) -> Timers:
        def s(v: float) -> float:
            return v * factor

        return Timers(
            poll_ladder=tuple(map(s, self.poll_ladder)), poll_claim=s(self.poll_claim),
            first_poll=s(self.first_poll), confirm_delay=s(self.confirm_delay), refund_retry=s(self.refund_retry),
            refund_retry_max=s(self.refund_retry_max),
            inbox_sweep_after=s(self.inbox_sweep_after), orphan_retries=tuple(map(s, self.orphan_retries)),
            unverified_retries=tuple(map(s, self.unverified_retries)),
            stale_created_after=s(self.stale_created_after), lock_ttl=self.lock_ttl,
            not_found_grace=s(self.not_found_grace), not_found_alarm=s(self.not_found_alarm),
            event_retry=tuple(map(s, self.event_retry)),
        )

    @property
    def not_found(self) -> dict[str, timedelta]:
        """The keyword arguments the decide functions take for ORDER_NOT_EXIST answers."""
        return {"grace": timedelta(seconds=self.not_found_grace), "alarm": timedelta(seconds=self.not_found_alarm)}

    def ladder(self, step: int) -> timedelta:
        return timedelta(seconds=self.poll_ladder[min(step, len(self.poll_ladder) - 1)])
