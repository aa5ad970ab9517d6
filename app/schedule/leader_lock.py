"""The scheduler leader's advisory lock, as the scheduler takes it (scheduler/leader.py) and
the api reports its holder (app/schedule/service.py)."""

from __future__ import annotations

from typing import Final

# pg_try_advisory_lock(bigint) key of the scheduler leader; the one-bigint form, apart from
# the per-task locks' two-int keys (app/tasks/locks.py).
LEADER_LOCK_KEY: Final = 0x50435343
# application_name of the lock holder's connection, followed by its scheduler id.
APPLICATION_PREFIX: Final = "pc-scheduler "
