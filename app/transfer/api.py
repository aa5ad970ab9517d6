"""HTTP for import (multipart xlsx/csv upload) and export (filtered batches to a file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_415_UNSUPPORTED_MEDIA_TYPE

from app.api_support import CONFLICT, INVALID, Db, problem
from app.config import get_settings
from app.errors import InputInvalid
from app.idempotency import IdempotentOperation
from app.outbox import enqueue_task
from app.tasks.schemas import TaskAccepted
from app.transfer.schemas import ExportRequest
from app.transfer.service import accept_import

# Multipart framing around the file: boundaries and part headers.
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class ImportUpload:
    """The form: one file field `file` (.xlsx workbook or .csv, 1C or English headers)."""

    # Required, as the handler's own 422 naming the field says (app.openapi states it).
    __json_schema_extra__: ClassVar[dict[str, Any]] = {
        "required": ["file"],
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": (
                    "An .xlsx workbook or a .csv file (UTF-8 or Windows-1251), by its file name's "
                    "extension or else its part's Content-Type"
                ),
            }
        },
    }

    file: UploadFile | None = None


async def require_multipart(request: Request[Any, Any, Any]) -> None:
    """A 415 naming the expected type, before Litestar tries to parse a non-multipart body;
    a 422 for a form Litestar cannot read (it decodes parts without a filename as text and
    raised UnicodeDecodeError, a 500, for binary ones)."""
    if request.content_type[0] != RequestEncodingType.MULTI_PART:
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=(
                f"Send the file as multipart/form-data (field 'file'), "
                f"not {request.content_type[0] or 'no content type'}"
            ),
        )
    try:
        await request.form()  # parsed once; the handler's `data` reads the cached form
    except UnicodeDecodeError:
        raise InputInvalid.at(
            ["body", "file"],
            "a part without a filename must be UTF-8 text: send the file as a file part",
            "multipart_invalid",
        ) from None


UPLOAD_REFUSED = {
    413: problem("The file is larger than IMPORT_MAX_BYTES"),
    415: problem("Not multipart/form-data, or the file is not .xlsx/.csv"),
    503: problem("File storage is unavailable"),
}


class TransferController(Controller):
    path = "/api/v1/batches"
    tags = ["import-export"]

    @post(
        "/import",
        summary="Import shift tasks from an xlsx or csv file",
        description=(
            "multipart/form-data with the file in field `file`: an .xlsx workbook (first sheet) "
            "or a .csv (UTF-8 or Windows-1251; `,` `;` or tab), header row with the 1C Russian "
            "or English keys of POST /batches. Refused up front (nothing stored or queued): "
            "wrong type (415), empty or not really xlsx/csv or a zip bomb (422), larger than "
            "IMPORT_MAX_BYTES (413). Then 202 with a task id; the `import_batches` task result "
            "is `{total, created, updated, skipped, errors: [{row, error}]}` where `row` is the "
            "spreadsheet row number (header = 1). Existing (batch_number, batch_date) are "
            "overwritten (the 1C rule) and counted in `updated`. Missing required columns or "
            "more than IMPORT_MAX_ROWS rows fail the task before anything is written. "
            "Event `import_completed`."
        ),
        status_code=HTTP_202_ACCEPTED,
        responses={**CONFLICT, **INVALID, **UPLOAD_REFUSED},
        operation_class=IdempotentOperation,
        before_request=require_multipart,
        request_max_body_size=get_settings().import_max_bytes + MULTIPART_OVERHEAD,
        dto=None,  # a multipart form, not a JSON body
    )
    async def import_batches(
        self,
        db: Db,
        data: Annotated[ImportUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[TaskAccepted]:
        if data.file is None:
            raise InputInvalid.at(
                ["body", "file"], "required: send the file in the form field 'file'", "missing"
            )
        try:
            task = await accept_import(db, data.file)
        finally:
            await data.file.close()
        return Response(TaskAccepted(task_id=str(task.id)), status_code=HTTP_202_ACCEPTED)

    @post(
        "/export",
        summary="Export batches to an xlsx or csv file",
        description=(
            "`{format: excel|csv, filters: {...}}` with the filters of GET /batches. 202 with a "
            "task id; the `export_batches` task streams the batches into a file in S3 and its "
            "result is `{file_url, file_name, size, expires_at, rows}` (presigned, 7 days). "
            "Cells that would start a formula (= + - @) are neutralised."
        ),
        status_code=HTTP_202_ACCEPTED,
        responses={**CONFLICT, **INVALID},
        operation_class=IdempotentOperation,
    )
    async def export_batches(self, db: Db, data: JSONBody[ExportRequest]) -> Response[TaskAccepted]:
        task = await enqueue_task(
            db,
            "export_batches",
            {"format": data.format, "filters": msgspec.to_builtins(data.filters)},
            max_attempts=3,
        )
        return Response(TaskAccepted(task_id=str(task.id)), status_code=HTTP_202_ACCEPTED)
