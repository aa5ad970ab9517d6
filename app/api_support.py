"""Small pieces every controller uses: the session dependency and documented error responses."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.errors import PROBLEM_JSON, Problem


async def provide_session() -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    async with transaction() as session:
        yield session


def problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type=PROBLEM_JSON)


NOT_FOUND = {404: problem("The resource does not exist")}
CONFLICT = {409: problem("The request conflicts with existing data; nothing was written")}
RULE = {400: problem("A business rule forbids the operation")}
INVALID = {422: problem("Validation failed; `errors[].loc` names the key as sent")}

Db = NamedDependency[AsyncSession]
