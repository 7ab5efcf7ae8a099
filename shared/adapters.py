"""The active LoRA adapter of each domain (an alias in Redis), shared by orchestrator and trainer.

The alias (`redis_keys.active_adapter(domain)`) holds an immutable, versioned adapter name (e.g. `general-v3`):
never reload weights under an existing name (vLLM keys its prefix cache by name). A change is announced on
`redis_keys.ADAPTER_CHANGED_CHANNEL` so orchestrators update their cache without polling.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from redis.asyncio import Redis

from shared import redis_keys

BASE_ADAPTER = "base"  # the adapter name that means "the weak base model, no adapter"
_VERSION = re.compile(r"-(v\d+)$")


def versioned_name(domain: str, version: int) -> str:
    return f"{domain}-v{version}"


def version_of(adapter: str | None) -> str | None:
    """`general-v3` -> `v3`; None for the base model or an unversioned name."""
    match = _VERSION.search(adapter or "")
    return match.group(1) if match else None


async def get_active_adapter(redis: Redis, domain: str) -> str | None:
    return await redis.get(redis_keys.active_adapter(domain))


async def set_active_adapter(
    redis: Redis, domain: str, adapter: str | None, history: Literal["push", "pop"] | None = None
) -> None:
    """Point a domain at an adapter version (None: back to the base model) and announce it; with `history`,
    push the new version onto the domain's history (a promotion) or pop the current one (a rollback) in the
    same transaction, so no crash can leave an alias its history does not explain."""
    async with redis.pipeline(transaction=True) as pipe:
        if adapter:
            pipe.set(redis_keys.active_adapter(domain), adapter)
            pipe.sadd(redis_keys.ACTIVE_DOMAINS, domain)
        else:
            pipe.delete(redis_keys.active_adapter(domain))
            pipe.srem(redis_keys.ACTIVE_DOMAINS, domain)
        if history == "push" and adapter:
            pipe.lpush(redis_keys.adapter_history(domain), adapter)
        elif history == "pop":
            pipe.lpop(redis_keys.adapter_history(domain))
        pipe.publish(redis_keys.ADAPTER_CHANGED_CHANNEL, json.dumps({"domain": domain, "adapter": adapter}))
        await pipe.execute()
