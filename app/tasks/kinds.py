"""Every background job by name, with the queue its actor listens on.

The api enqueues by name (it never imports worker code); `workers/actors` declares each
actor under the same name and queue, and a unit test keeps the two in step.
"""

from __future__ import annotations

from typing import Final

FAST: Final = "fast"
HEAVY: Final = "heavy"
WEBHOOKS: Final = "webhooks"
QUEUES: Final = (FAST, HEAVY, WEBHOOKS)

# RabbitMQ queue arguments are immutable: every queue is declared with this maximum.
MAX_PRIORITY: Final = 10
PRIORITY_HIGH: Final = 9
PRIORITY_NORMAL: Final = 5

TASK_QUEUES: Final[dict[str, str]] = {
    "aggregate_products": HEAVY,
    "generate_report": HEAVY,
    "import_batches": HEAVY,
    "export_batches": HEAVY,
    "refresh_statistics": HEAVY,
    "cleanup_files": HEAVY,
    "close_expired_batches": FAST,
    "send_notification": FAST,
    "reap_stale_tasks": FAST,
    "prune_finished_tasks": FAST,
    "deliver_webhook": WEBHOOKS,
    "retry_failed_webhooks": WEBHOOKS,
}
