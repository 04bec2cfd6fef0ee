"""rq's job registries by name: a check that must see every job rq holds looks in all of them."""

from __future__ import annotations

from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

REGISTRIES: dict[str, type[BaseRegistry]] = {
    "started": StartedJobRegistry, "finished": FinishedJobRegistry, "failed": FailedJobRegistry,
    "deferred": DeferredJobRegistry, "scheduled": ScheduledJobRegistry, "canceled": CanceledJobRegistry,
}
