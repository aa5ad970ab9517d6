"""`python -m app`: serve the api with uvicorn."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import uvicorn

from app.config import get_settings


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    command.upgrade(Config(str(Path(__file__).resolve().parent.parent / "alembic.ini")), "head")


def _stopped(_signum: int, _frame: object) -> None:
    """A stop signal ends the process with status 0: a supervisor then sees a clean stop.

    Before uvicorn runs, this cuts start-up short. uvicorn saves this handler, shuts down
    gracefully on SIGTERM/SIGINT, restores it and raises the signal again: we land here.
    """
    sys.exit(0)


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped)
    settings = get_settings()
    if settings.migrate_on_start:
        migrate()
    print(
        f"Production Control API: http://{settings.api_host}:{settings.api_port}/docs", flush=True
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        # Without a limit uvicorn waits for every open connection (an SSE stream never
        # ends by itself) and the supervisor would have to SIGKILL it.
        timeout_graceful_shutdown=settings.api_shutdown_timeout,
        workers=settings.api_workers if settings.api_workers > 1 else None,
    )


if __name__ == "__main__":
    main()
