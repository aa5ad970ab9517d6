"""Settings: one place, read from the environment and an optional `.env` file."""

from __future__ import annotations

import os
from functools import lru_cache
from urllib.parse import quote

import msgspec
from dotenv import dotenv_values

VERSION = "0.1.0"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    database_url: str = "postgresql+asyncpg://root@127.0.0.1:5432/root"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # The local S3 server `make run` starts (moto); compose points this at MinIO.
    s3_endpoint_url: str = "http://127.0.0.1:9000"
    # Presigned URLs are signed for this endpoint when set (S3 seen from outside a network).
    s3_public_endpoint_url: str = ""
    s3_access_key: str = "production-control"
    s3_secret_key: str = "production-control-secret"
    s3_region: str = "us-east-1"
    s3_bucket_reports: str = "reports"
    s3_bucket_exports: str = "exports"
    s3_bucket_imports: str = "imports"
    api_keys: str = ""
    allow_anonymous: bool = True
    log_level: str = "INFO"
    log_format: str = "json"
    worker_concurrency_fast: int = 4
    worker_concurrency_heavy: int = 8
    worker_concurrency_webhooks: int = 8
    worker_processes: int = 1
    # Seconds a stopping process waits for work in flight: dramatiq's worker shutdown
    # timeout (unfinished messages then go back to RabbitMQ), and uvicorn's graceful
    # shutdown (open requests and SSE streams are closed after it). The local supervisor
    # waits longer than these before it would SIGKILL (ops/supervise.py).
    worker_shutdown_timeout: int = 20
    api_shutdown_timeout: int = 10
    # uvicorn worker processes sharing API_PORT. Each has its own pool, read cache (kept
    # correct by its own LISTEN connection) and outbox relay, like a replica; /metrics
    # answers for the one process that serves the scrape, so it stays 1 unless the
    # metrics are scraped per replica (API_REPLICAS) instead. On the shared 2-core bench
    # machine 2 workers showed no reliable gain (the database and the client share the cores).
    api_workers: int = 1
    # `make run` replicas (ops/supervise.py): api N listens on API_PORT + N - 1.
    api_replicas: int = 1
    scheduler_replicas: int = 1
    # `make run` worker groups per queue: with two, a task whose worker died is taken over by
    # the other group at once instead of after its own group's restart.
    worker_replicas: int = 1
    # Each worker group serves dramatiq's Prometheus metrics (and task durations) on its own
    # port; 0 turns a group's exporter off.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port_fast: int = 9191
    worker_metrics_port_heavy: int = 9192
    worker_metrics_port_webhooks: int = 9193
    # Set: GET /metrics wants `Authorization: Bearer <token>`; empty: open like /health.
    metrics_token: str = ""
    presign_ttl: int = 7 * 24 * 3600
    file_retention_days: int = 30
    # Import upload limits: bytes on the wire, data rows, and what an xlsx (a zip) may expand to.
    import_max_bytes: int = 20 * 1024 * 1024
    import_max_rows: int = 100_000
    import_max_uncompressed_bytes: int = 512 * 1024 * 1024
    import_max_zip_ratio: int = 100
    task_retention_days: int = 14
    # How long a POST's Idempotency-Key and its stored first response are kept (seconds).
    idempotency_ttl: int = 24 * 3600
    # Heartbeats come every third of this (at most 5 s). Ownership is the task's advisory lock
    # (app/tasks/locks.py): an older heartbeat only makes the reaper check that lock.
    task_stale_after: int = 60
    max_body_size: int = 32 * 1024 * 1024
    tz: str = "UTC"
    # The api applies migrations before serving (the container default).
    migrate_on_start: bool = False
    # Scheduler: > 0 fires every job every N seconds, cron-aligned (tests and demos only);
    # a misfire grace (s) replacing each job's own when > 0; how often a follower retries
    # to become leader.
    scheduler_test_interval: int = 0
    scheduler_misfire_grace: int = 0
    scheduler_leader_retry: float = 5.0
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "production-control@localhost"
    smtp_tls: bool = False
    webhook_allow_private: bool = False
    # A subscription is deactivated after this many failed delivery attempts in a row.
    webhook_failure_limit: int = 20
    # Retry n waits base * 2^(n-1) seconds (capped), with jitter, before attempt n+1.
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_max_seconds: float = 3600.0

    @property
    def sync_database_url(self) -> str:
        """The same database for tools that want a plain asyncpg DSN."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _url_from_parts(env: dict[str, str]) -> dict[str, str]:
    """The split variables (DB_HOST, RABBITMQ_HOST, ...) build the URLs when these are unset."""
    built: dict[str, str] = {}
    if "DATABASE_URL" not in env and "DB_HOST" in env:
        user = quote(env.get("DB_USER", "root"))
        password = env.get("DB_PASSWORD", "")
        auth = f"{user}:{quote(password)}" if password else user
        built["DATABASE_URL"] = (
            f"postgresql+asyncpg://{auth}@{env['DB_HOST']}:{env.get('DB_PORT', '5432')}"
            f"/{env.get('DB_NAME', 'root')}"
        )
    if "RABBITMQ_URL" not in env and "RABBITMQ_HOST" in env:
        vhost = quote(env.get("RABBITMQ_VHOST", "/"), safe="")
        built["RABBITMQ_URL"] = (
            f"amqp://{quote(env.get('RABBITMQ_USER', 'guest'))}:"
            f"{quote(env.get('RABBITMQ_PASSWORD', 'guest'))}@{env['RABBITMQ_HOST']}:"
            f"{env.get('RABBITMQ_PORT', '5672')}/{vhost}"
        )
    return built


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    env.update(os.environ if environ is None else environ)
    env.update(_url_from_parts(env))
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    values = {k.lower(): v for k, v in env.items() if k.lower() in fields and v != ""}
    return msgspec.convert(values, Settings, strict=False)


@lru_cache
def get_settings() -> Settings:
    return load_settings()
