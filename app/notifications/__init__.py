"""Notifications: email (SMTP when configured, logged otherwise) on the fast queue."""
