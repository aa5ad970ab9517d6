"""`make chaos`: the whole set of processes under a mixed workload while faults are injected."""
