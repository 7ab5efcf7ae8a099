"""The dead-letter stream: entries the collector gave up on (a model server down past every retry, a trace that
never came), kept with their stream, id and error, and put back on their stream by `replay` once the cause is
mended (`cowest feedback replay-dead`, the trainer's `POST /dead-letter/replay`)."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from shared import redis_keys
from shared.redis_keys import DEAD_LETTER_STREAM, FEEDBACK_STREAM, TRACES_STREAM, TRAINER_GROUP

logger = logging.getLogger(__name__)


async def dead_letter(redis: Redis, stream: str, entry_id: str, fields: dict[str, str], exc: Exception) -> None:
    """Move one entry to the dead-letter stream and acknowledge it, in one transaction."""
    logger.error("entry %s of %s dead-lettered: %s", entry_id, stream, exc)
    dead = {**fields, "dead_stream": stream, "dead_id": entry_id, "dead_error": f"{type(exc).__name__}: {exc}"}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(DEAD_LETTER_STREAM, dead, maxlen=100_000, approximate=True)
        pipe.xack(stream, TRAINER_GROUP, entry_id)
        pipe.hdel(redis_keys.delivery_failures(stream), entry_id)
        pipe.hdel(redis_keys.retry_at(stream), entry_id)
        await pipe.execute()


async def replay(redis: Redis, limit: int = 10_000) -> int:
    """Put dead-lettered entries back on the stream they came from and remove them from the dead-letter stream.
    Returns how many; an entry naming no stream of ours stays where it is."""
    moved = 0
    for dead_id, fields in await redis.xrange(DEAD_LETTER_STREAM, count=limit):
        stream = fields.get("dead_stream")
        if stream not in (TRACES_STREAM, FEEDBACK_STREAM):
            continue
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {k: v for k, v in fields.items() if not k.startswith("dead_")})
            pipe.xdel(DEAD_LETTER_STREAM, dead_id)
            await pipe.execute()
        moved += 1
    return moved
