"""Outbound webhooks: subscriptions, fan-out of committed events, signed deliveries."""
