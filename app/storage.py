"""S3 storage through aiobotocore, and the `files` table that records every stored object.

Buckets (`reports`, `exports`, `imports`) are created on start-up when missing. Uploads
stream from a file in parts (multipart above one part), downloads stream to a file, so a
file's size never shows in memory. Every object gets a `files` row; `cleanup_expired_files`
removes objects and rows once they are past retention.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, Final, Literal
from urllib.parse import quote

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.db import transaction
from app.errors import DomainError
from app.models import StoredFile

log = structlog.get_logger(__name__)

FileKind = Literal["report", "export", "import"]
# S3 requires parts of at least 5 MiB (except the last); 8 MiB keeps requests few.
PART_SIZE: Final = 8 * 1024 * 1024
DOWNLOAD_CHUNK: Final = 1024 * 1024
DELETE_BATCH: Final = 1000  # DeleteObjects takes at most 1000 keys

XLSX_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE: Final = "text/csv; charset=utf-8"
PDF_TYPE: Final = "application/pdf"

_session: AioSession | None = None


class StorageUnavailable(DomainError, ConnectionError):
    """S3 failed: a 503 in the api, a retried (transient) error in an actor."""

    status_code = 503
    title = "Service unavailable"
    slug = "storage-unavailable"


class StoredObjectMissing(Exception):
    """The object a files row or task points at is not in S3 (deleted or never stored)."""


@asynccontextmanager
async def _translated_errors(bucket: str, key: str) -> AsyncIterator[None]:
    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise StoredObjectMissing(f"{bucket}/{key} is not in storage") from exc
        raise StorageUnavailable(f"File storage failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"File storage unreachable: {exc}") from exc


def bucket_for(kind: FileKind, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return {
        "report": settings.s3_bucket_reports,
        "export": settings.s3_bucket_exports,
        "import": settings.s3_bucket_imports,
    }[kind]


def all_buckets(settings: Settings | None = None) -> list[str]:
    return [bucket_for(kind, settings) for kind in ("report", "export", "import")]


@asynccontextmanager
async def s3_client(*, public: bool = False) -> AsyncIterator[Any]:
    """An S3 client for this event loop; `public` signs for S3_PUBLIC_ENDPOINT_URL if set."""
    global _session
    if _session is None:
        _session = get_session()
    settings = get_settings()
    endpoint = (public and settings.s3_public_endpoint_url) or settings.s3_endpoint_url
    async with _session.create_client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        # Path-style addressing: MinIO and moto serve buckets under the endpoint's path.
        config=AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    ) as client:
        yield client


async def ensure_buckets() -> None:
    """Create the reports/exports/imports buckets that do not exist yet."""
    async with s3_client() as client:
        for bucket in all_buckets():
            try:
                await client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
                try:
                    await client.create_bucket(Bucket=bucket)
                except ClientError as race:  # another process created it meanwhile
                    code = race.response.get("Error", {}).get("Code")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                log.info("bucket created", bucket=bucket)


async def ensure_buckets_with_retry(attempts: int = 30, delay: float = 1.0) -> bool:
    """ensure_buckets, retried while the S3 server starts (`make run` starts both at once)."""
    for attempt in range(1, attempts + 1):
        try:
            await ensure_buckets()
            return True
        except (BotoCoreError, ClientError, OSError) as exc:
            if attempt == attempts:
                log.error("S3 buckets could not be ensured; storage will fail", error=repr(exc))
                return False
            await asyncio.sleep(delay)
    return False


@asynccontextmanager
async def storage_lifespan(_app: object) -> AsyncIterator[None]:
    """Buckets exist before the api serves; if S3 is still starting, keep trying meanwhile."""
    try:
        await asyncio.wait_for(ensure_buckets(), timeout=5)
    except (BotoCoreError, ClientError, OSError, TimeoutError) as exc:
        log.warning(
            "S3 not reachable at start-up; creating buckets in the background", error=repr(exc)
        )
    else:
        yield
        return
    retry = asyncio.create_task(ensure_buckets_with_retry(), name="ensure-buckets")
    try:
        yield
    finally:
        retry.cancel()
        await asyncio.gather(retry, return_exceptions=True)


async def check_s3() -> None:
    """Readiness: every bucket answers."""
    async with s3_client() as client:
        for bucket in all_buckets():
            await client.head_bucket(Bucket=bucket)


def content_disposition(file_name: str) -> str:
    """`attachment` with an ASCII fallback and the exact (possibly Cyrillic) name (RFC 6266)."""
    fallback = file_name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name)}"


async def _read(source: IO[bytes], size: int) -> bytes:
    return await asyncio.to_thread(source.read, size)


async def upload_fileobj(
    bucket: str, key: str, source: IO[bytes], content_type: str, file_name: str | None = None
) -> int:
    """Stream `source` (from its current position) to S3; returns the bytes stored."""
    extra: dict[str, str] = {"ContentType": content_type}
    if file_name:
        extra["ContentDisposition"] = content_disposition(file_name)
    async with _translated_errors(bucket, key), s3_client() as client:
        first = await _read(source, PART_SIZE)
        if len(first) < PART_SIZE:
            await client.put_object(Bucket=bucket, Key=key, Body=first, **extra)
            return len(first)
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        size = 0
        try:
            chunk = first
            while chunk:
                number = len(parts) + 1
                part = await client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
                size += len(chunk)
                chunk = await _read(source, PART_SIZE)
            await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Unfinished parts are stored (and billed) until aborted.
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        return size


@dataclass(frozen=True)
class StoredObject:
    """An object stored for a feature: where it is, how big, what type."""

    kind: FileKind
    bucket: str
    key: str
    size: int
    content_type: str

    @property
    def file_name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @classmethod
    def of(cls, row: StoredFile) -> StoredObject:
        kind: FileKind = row.kind  # type: ignore[assignment]  # written by record_file only
        return cls(kind, row.bucket, row.key, row.size, row.content_type)


async def store(
    kind: FileKind,
    key: str,
    source: IO[bytes] | str,
    content_type: str,
    file_name: str | None = None,
) -> StoredObject:
    """Upload an open file (from its position) or a path into the bucket of `kind`."""
    bucket = bucket_for(kind)
    if isinstance(source, str):
        with open(source, "rb") as opened:  # noqa: ASYNC230 - reads happen in a thread
            size = await upload_fileobj(bucket, key, opened, content_type, file_name)
    else:
        size = await upload_fileobj(bucket, key, source, content_type, file_name)
    return StoredObject(kind, bucket, key, size, content_type)


async def download_to(bucket: str, key: str, target: IO[bytes]) -> int:
    """Stream an object into `target`; returns its size."""
    size = 0
    async with _translated_errors(bucket, key), s3_client() as client:
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            while chunk := await body.read(DOWNLOAD_CHUNK):
                await asyncio.to_thread(target.write, chunk)
                size += len(chunk)
    return size


async def presigned_url(bucket: str, key: str, ttl: int | None = None) -> str:
    """A GET URL anyone can use until it expires (PRESIGN_TTL, 7 days, the S3 maximum)."""
    async with _translated_errors(bucket, key), s3_client(public=True) as client:
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=ttl or get_settings().presign_ttl,
        )
        return url


def object_key(prefix: str, task_id: uuid.UUID, file_name: str) -> str:
    """Keys are unique per task, so a retried task overwrites its own object only."""
    return f"{prefix}/{task_id}/{file_name}"


async def record_file(
    session: AsyncSession, stored: StoredObject, task_id: uuid.UUID | None
) -> StoredFile:
    """The files row of a stored object (replacing the row of an earlier try of the same key)."""
    now = dt.datetime.now(dt.UTC)
    await session.execute(
        delete(StoredFile).where(StoredFile.bucket == stored.bucket, StoredFile.key == stored.key)
    )
    row = StoredFile(
        bucket=stored.bucket,
        key=stored.key,
        kind=stored.kind,
        size=stored.size,
        content_type=stored.content_type,
        task_id=task_id,
        created_at=now,
        expires_at=now + dt.timedelta(days=get_settings().file_retention_days),
    )
    session.add(row)
    await session.flush()
    return row


async def stored_object_of_task(
    session: AsyncSession, task_id: uuid.UUID, kind: FileKind
) -> StoredObject | None:
    """What an earlier attempt of this task already stored, if anything."""
    row = (
        (
            await session.execute(
                select(StoredFile)
                .where(StoredFile.task_id == task_id, StoredFile.kind == kind)
                .order_by(StoredFile.id.desc())
                .limit(1)
            )
        )
        .scalars()
        .first()
    )
    return None if row is None else StoredObject.of(row)


async def cleanup_expired_files(now: dt.datetime | None = None) -> dict[str, int]:
    """Delete objects and rows older than FILE_RETENTION_DAYS (or past their own expiry).

    Objects go first, then their rows in the same transaction: a crash in between leaves
    rows whose objects are gone, and deleting a missing object again is harmless.
    """
    moment = now or dt.datetime.now(dt.UTC)
    cutoff = moment - dt.timedelta(days=get_settings().file_retention_days)
    deleted = freed = 0
    while True:
        async with transaction() as session:
            rows = list(
                (
                    await session.execute(
                        select(StoredFile)
                        .where(or_(StoredFile.created_at < cutoff, StoredFile.expires_at <= moment))
                        .order_by(StoredFile.id)
                        .limit(DELETE_BATCH)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                break
            by_bucket: dict[str, list[str]] = {}
            for row in rows:
                by_bucket.setdefault(row.bucket, []).append(row.key)
            async with s3_client() as client:
                for bucket, keys in by_bucket.items():
                    await _delete_objects(client, bucket, keys)
            await session.execute(
                delete(StoredFile).where(StoredFile.id.in_([row.id for row in rows]))
            )
            deleted += len(rows)
            freed += sum(row.size for row in rows)
        if len(rows) < DELETE_BATCH:
            break
    return {"deleted": deleted, "bytes_freed": freed}


async def _delete_objects(client: Any, bucket: str, keys: list[str]) -> None:
    try:
        response = await client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return
        raise
    failed = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
    if failed:
        raise OSError(f"S3 refused to delete {len(failed)} objects in {bucket}: {failed[0]}")
