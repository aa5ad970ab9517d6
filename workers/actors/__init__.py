"""Every actor, imported so a worker process registers them all with the broker."""

from workers.actors import aggregation, batches, maintenance

__all__ = ["aggregation", "batches", "maintenance"]
