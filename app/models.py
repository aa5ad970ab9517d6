"""SQLAlchemy 2.0 typed models: the whole schema in one place so migrations have one source."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TZDateTime = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"
    RETRYING = "RETRYING"


FINISHED_STATUSES = (TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED)


class WorkCenter(Base):
    __tablename__ = "work_centers"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        TZDateTime, server_default=func.now(), onupdate=func.now()
    )


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("batch_number", "batch_date", name="uq_batches_number_date"),
        CheckConstraint("shift_end >= shift_start", name="ck_batches_shift_order"),
        Index("ix_batches_is_closed", "is_closed"),
        Index("ix_batches_batch_date", "batch_date"),
        Index("ix_batches_work_center_id", "work_center_id"),
        Index("ix_batches_shift", "shift"),
        Index("ix_batches_nomenclature", "nomenclature"),
        Index("ix_batches_open_shift_end", "shift_end", postgresql_where=text("NOT is_closed")),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    is_closed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    closed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    task_description: Mapped[str] = mapped_column(Text)
    work_center_id: Mapped[int] = mapped_column(ForeignKey("work_centers.id"))
    shift: Mapped[str] = mapped_column(String(255))
    team: Mapped[str] = mapped_column(String(255))
    batch_number: Mapped[int] = mapped_column(Integer)
    batch_date: Mapped[dt.date] = mapped_column(Date)
    nomenclature: Mapped[str] = mapped_column(Text)
    ekn_code: Mapped[str] = mapped_column(String(255))
    shift_start: Mapped[dt.datetime] = mapped_column(TZDateTime)
    shift_end: Mapped[dt.datetime] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        TZDateTime, server_default=func.now(), onupdate=func.now()
    )

    work_center: Mapped[WorkCenter] = relationship(lazy="raise")

    @property
    def time_to_close_seconds(self) -> float | None:
        """From shift start to closing; None while the batch is open."""
        if self.closed_at is None:
            return None
        return (self.closed_at - self.shift_start).total_seconds()


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        Index("ix_products_batch_aggregated", "batch_id", "is_aggregated"),
        # Partial: registering codes (aggregated_at NULL) never pays for this index.
        Index(
            "ix_products_aggregated_at",
            "aggregated_at",
            postgresql_where=text("aggregated_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    unique_code: Mapped[str] = mapped_column(String(255), unique=True)
    # References batches.id (ON DELETE CASCADE) through statement-level triggers rather than a
    # FOREIGN KEY, whose per-row check was a third of a 100,000-code insert (migration 0003).
    batch_id: Mapped[int] = mapped_column(Integer)
    is_aggregated: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    aggregated_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())


class Task(Base):
    """The source of truth for every background job: status, progress, result."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_kind", "status", "kind"),
        Index("ix_tasks_created_at", "created_at"),
        Index(
            "ix_tasks_started_heartbeat",
            "heartbeat_at",
            postgresql_where=text(f"status = '{TaskStatus.STARTED.value}'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(
        String(16), default=TaskStatus.PENDING, server_default=TaskStatus.PENDING.value
    )
    progress_current: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    progress_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[Any | None] = mapped_column(JSONB)
    # Partial state an actor commits together with each chunk, so a redelivery resumes.
    checkpoint: Mapped[Any | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=4, server_default="4")
    # json, not jsonb: written once, read once by the claim (migration 0007).
    params: Mapped[Any] = mapped_column(JSON, default=dict, server_default=text("'{}'::json"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    started_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )


class OutboxMessage(Base):
    """Written in the caller's transaction; the relay publishes it after commit."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(16))  # "task" or "event"
    event_type: Mapped[str] = mapped_column(String(64))
    # json, not jsonb: an event group is written once and read once (migration 0007).
    payload: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    published_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    secret_key: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    retry_count: Mapped[int] = mapped_column(Integer, default=3)
    timeout: Mapped[float] = mapped_column(Float, default=10.0)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(
        TZDateTime, server_default=func.now(), onupdate=func.now()
    )
    failure_streak: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_delivery_subscription_event"),
        Index("ix_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_deliveries_subscription_created", "subscription_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)


class WebhookAttempt(Base):
    """One row per HTTP attempt, so the delivery log shows every try."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_attempts_delivery", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())


class StoredFile(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(63))
    key: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # report | export | import
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))
    task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    expires_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)


class StatisticsSnapshot(Base):
    """Precomputed dashboard aggregates, refreshed by refresh_statistics."""

    __tablename__ = "statistics_snapshots"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[Any] = mapped_column(JSONB)
    computed_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # pg_current_snapshot() before the computation read anything: a change by a
    # transaction it does not show (cache_changes) may be missing from the data.
    source_snapshot: Mapped[str | None] = mapped_column(Text)


class CacheChange(Base):
    """One statement's change to a table the read cache depends on (migration 0006).

    Written by triggers on every cached table, whoever writes; read by each api process's
    cache (app/cache.py) before it serves a hit. `xid` is the writing transaction's
    pg_current_xact_id(), which a reader compares with its last pg_current_snapshot() to
    find exactly the changes committed since; `keys` are the keys changed (NULL: the whole
    table). `table_name` '*' marks a TRUNCATE of this log or rows pruned below `keys[1]`.
    """

    __tablename__ = "cache_changes"

    # The primary key leads with xid: the one index a reader's lookup by xid needs.
    xid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    table_name: Mapped[str] = mapped_column(Text)
    keys: Mapped[list[str] | None] = mapped_column(ARRAY(Text))


class SchedulerRun(Base):
    __tablename__ = "scheduler_runs"
    __table_args__ = (UniqueConstraint("job_name", "fire_time", name="uq_scheduler_runs_fire"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_name: Mapped[str] = mapped_column(String(64))
    fire_time: Mapped[dt.datetime] = mapped_column(TZDateTime)
    task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    scheduler_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())


class ApiKey(Base):
    """API keys are stored as SHA-256 hashes; the plain key is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)


class IdempotencyKey(Base):
    """The stored first response to a POST sent with an Idempotency-Key, per API key.

    Written in the transaction of the request's own work, so a key exists exactly when its
    work does. `scope` is the SHA-256 of the API key (the form api_keys stores) or
    "anonymous" when the API runs open; rows past `expires_at` count as absent and are
    deleted by the prune job.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of method, path with query, content type and body: "the same request".
    request_hash: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(TZDateTime, server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(TZDateTime)
