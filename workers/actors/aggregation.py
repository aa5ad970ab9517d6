"""aggregate_products: the async form of aggregation, set-based in resumable chunks."""

from __future__ import annotations

from typing import Any

import msgspec

from app.aggregation.schemas import AggregationError, AggregationSummary
from app.aggregation.service import aggregate_codes, closed_batch_message, lock_open_batch
from app.db import transaction
from app.errors import BusinessRuleViolation, NotFound
from app.tasks.context import TaskContext, TaskFailed
from workers.task_actor import task_actor

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


@task_actor("aggregate_products", time_limit_s=30 * 60, stops_on_shutdown=True)
async def aggregate_products(ctx: TaskContext) -> Any:
    """Aggregate `unique_codes` into `batch_id`, committing progress with each chunk."""
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
            except NotFound as exc:
                raise TaskFailed(str(exc)) from exc
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
