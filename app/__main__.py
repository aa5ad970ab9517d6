"""`python -m app`: serve the api with uvicorn."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from app.config import get_settings


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    command.upgrade(Config(str(Path(__file__).resolve().parent.parent / "alembic.ini")), "head")


def main() -> None:
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
    )


if __name__ == "__main__":
    main()
