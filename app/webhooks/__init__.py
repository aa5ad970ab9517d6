"""Outbound webhooks: subscriptions, fan-out of committed events, signed deliveries.

Importing this package registers the fan-out with the outbox relay, so every process that
runs the relay (the api imports it through app.main) turns events into deliveries.
"""

from app.outbox import event_handlers
from app.webhooks.service import fan_out

if fan_out not in event_handlers:
    event_handlers.append(fan_out)
