"""Logs are JSON lines carrying the request id bound by the request middleware."""

from __future__ import annotations

import io
import json
import logging
import sys

import structlog

from app.logging import configure_logging


def test_json_lines_with_bound_request_id(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", "json")
    try:
        structlog.contextvars.bind_contextvars(request_id="req-1")
        structlog.get_logger("app.test").info("batch ingested", count=3, nomenclature="Изделие")
        logging.getLogger("third.party").warning("plain stdlib record")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
        monkeypatch.undo()
        configure_logging("WARNING", "console")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "batch ingested"
    assert first["request_id"] == "req-1"
    assert first["count"] == 3
    assert first["nomenclature"] == "Изделие"
    assert first["level"] == "info"
    assert "timestamp" in first
    assert second["event"] == "plain stdlib record"
    assert second["logger"] == "third.party"
