"""Every actor, imported so a worker process registers them all with the broker."""

from workers.actors import (
    aggregation,
    analytics,
    batches,
    files,
    maintenance,
    notifications,
    reports,
    transfer,
    webhooks,
)

__all__ = [
    "aggregation",
    "analytics",
    "batches",
    "files",
    "maintenance",
    "notifications",
    "reports",
    "transfer",
    "webhooks",
]
