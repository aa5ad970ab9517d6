"""structlog configuration shared by the api, workers and the scheduler."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def _supervisor_program() -> str:
    """The supervisor program this process is (api, workers:heavy, ...), or ""."""
    name = os.environ.get("SUPERVISOR_PROCESS_NAME", "")
    group = os.environ.get("SUPERVISOR_GROUP_NAME", name)
    return f"{group}:{name}" if group != name else name


# `make run` shows every program's output interleaved in one terminal: name the program.
_PROGRAM = _supervisor_program()


def _add_program(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    event.setdefault("program", _PROGRAM)
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        *([_add_program] if _PROGRAM else []),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        # Below the level nothing is built: the access log costs nothing per request then.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that would drown the access log.
    for noisy in ("pika", "uvicorn.access", "botocore", "aiobotocore", "apscheduler.executors"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
