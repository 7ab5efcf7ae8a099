"""Keep an in-process copy of Redis state fresh: subscribe to its change channel, re-read it all on
(re)subscribe and every `refresh_s` (pub/sub is at-most-once: a missed message must not last), and
reconnect with backoff while Redis is away (the last known copy stays in force meanwhile)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.supervise import stop_if_cancelled

logger = logging.getLogger(__name__)


async def watch(
    redis: Redis,
    channel: str,
    refresh: Callable[[], Awaitable[None]],
    on_message: Callable[[str], Awaitable[None] | None],
    refresh_s: float,
    what: str,
) -> None:
    """Run forever (cancel to stop)."""
    backoff = 0.5
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                await refresh()  # after subscribing: no change can fall in between
                backoff = 0.5
                loop = asyncio.get_running_loop()
                next_refresh = loop.time() + refresh_s
                while True:
                    stop_if_cancelled()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        handled = on_message(message["data"])
                        if inspect.isawaitable(handled):
                            await handled
                    if loop.time() >= next_refresh:
                        await refresh()
                        next_refresh = loop.time() + refresh_s
        except (TimeoutError, RedisError, OSError) as exc:
            stop_if_cancelled()
            logger.warning("%s subscription lost (%s); retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
