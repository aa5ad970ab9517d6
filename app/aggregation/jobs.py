"""aggregate_products as a job: the async form of aggregation, set-based in resumable chunks.

Each chunk is its own transaction, committed with the task's checkpoint, so a redelivered
task resumes where the last commit left it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.aggregation.schemas import AggregationError, AggregationSummary
from app.aggregation.service import aggregate_codes, closed_batch_message, lock_open_batch
from app.db import transaction
from app.errors import BusinessRuleViolation
from app.tasks.context import JobContext

# Progress, cancel-check and checkpoint granularity. Each chunk pays a transaction, a batch
# lock, an event and a checkpoint: at a fixed 5,000, a 100,000-code task took twice the one
# UPDATE of all its codes. So a large task runs in about 5 chunks (each well under a second
# of SQL), never smaller than CHUNK_SIZE nor larger than MAX_CHUNK_SIZE.
CHUNK_SIZE = 5_000
MAX_CHUNK_SIZE = 50_000
CHUNKS = 5


def chunk_size(total: int) -> int:
    """The same for every attempt of a task (it depends on the codes only), so a resumed
    task continues exactly at its checkpoint's offset."""
    return max(CHUNK_SIZE, min(MAX_CHUNK_SIZE, -(-total // CHUNKS)))


class AggregationCheckpoint(msgspec.Struct):
    offset: int = 0
    aggregated: int = 0
    errors: list[AggregationError] = msgspec.field(default_factory=list)


async def run_aggregation(ctx: JobContext) -> dict[str, Any]:
    """Aggregate the task's `unique_codes` into its `batch_id`, committing each chunk with
    its checkpoint; returns the summary. Raises NotFound when the batch does not exist."""
    batch_id: int = ctx.params["batch_id"]
    codes: list[str] = ctx.params["unique_codes"]
    state = msgspec.convert(ctx.checkpoint or {}, AggregationCheckpoint)
    await ctx.progress(state.offset, len(codes), "aggregating", force=True)
    size = chunk_size(len(codes))
    while state.offset < len(codes):
        chunk = codes[state.offset : state.offset + size]
        async with transaction() as session:
            try:
                await lock_open_batch(session, batch_id)
            except BusinessRuleViolation:
                # Closed while we worked: every remaining code fails with the same reason.
                message = closed_batch_message(batch_id)
                state.errors.extend(AggregationError(c, message) for c in codes[state.offset :])
                state.offset = len(codes)
                await ctx.save_checkpoint(session, msgspec.to_builtins(state), state.offset)
                break
            aggregated, errors = await aggregate_codes(session, batch_id, chunk)
            state.offset += len(chunk)
            state.aggregated += len(aggregated)
            state.errors.extend(errors)
            await ctx.save_checkpoint(
                session, msgspec.to_builtins(state), state.offset, message="aggregating"
            )
    return msgspec.to_builtins(
        AggregationSummary(
            batch_id=batch_id,
            total=len(codes),
            aggregated=state.aggregated,
            failed=len(state.errors),
            errors=state.errors,
        )
    )
