"""The active LoRA adapter of each domain (an alias in Redis), shared by orchestrator and trainer.

The alias (`redis_keys.active_adapter(domain)`) holds an immutable, versioned adapter name (e.g. `general-v3`):
never reload weights under an existing name (vLLM keys its prefix cache by name). A change is announced on
`redis_keys.ADAPTER_CHANGED_CHANNEL` so orchestrators update their cache without polling.

A domain may also run a **canary** (`redis_keys.canary(domain)`): a candidate version that serves a share
(`weight`) of the domain's requests while the alias keeps the rest, until the trainer promotes it (the alias
flips to it) or rolls it back, on the live feedback each version received. Any alias change ends a canary.
Which requests go to the candidate is a hash of a key per request (the end user's id when the client gives one,
so one user stays on one version; else the trace id), salted with the candidate's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from shared import redis_keys

logger = logging.getLogger(__name__)
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
        pipe.delete(redis_keys.canary(domain))  # a new alias ends any canary
        if history == "push" and adapter:
            pipe.lpush(redis_keys.adapter_history(domain), adapter)
        elif history == "pop":
            pipe.lpop(redis_keys.adapter_history(domain))
        pipe.publish(redis_keys.ADAPTER_CHANGED_CHANNEL, _change(domain, adapter, None))
        await pipe.execute()


class Canary(BaseModel):
    """A candidate version on a share of a domain's traffic. `baseline`: each version's live-score totals
    (adapter or "base" -> [n, sum]) when the canary started, so it is judged on the feedback given during it."""

    adapter: str = Field(min_length=1)
    weight: float = Field(gt=0.0, lt=1.0)
    active: str | None = None  # the version the rest of the traffic is on (what the candidate is compared with)
    started_at: float = Field(default_factory=time.time)
    baseline: dict[str, tuple[int, float]] = Field(default_factory=dict)

    def serves(self, key: str) -> bool:
        """Whether the request with this key goes to the candidate: a uniform hash of (candidate, key) below
        the weight, so the split holds per request and a user keeps one version for the canary's life."""
        digest = hashlib.blake2b(f"{self.adapter}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.weight


def parse_canary(value: str | None) -> Canary | None:
    if not value:
        return None
    try:
        return Canary.model_validate_json(value)
    except ValidationError:
        logger.warning("ignoring a malformed canary: %r", value[:200])
        return None


async def get_canary(redis: Redis, domain: str) -> Canary | None:
    return parse_canary(await redis.get(redis_keys.canary(domain)))


async def set_canary(redis: Redis, domain: str, canary: Canary | None) -> None:
    """Start (or end, with None) a domain's canary and announce it with the alias it runs beside."""
    active = await get_active_adapter(redis, domain)
    async with redis.pipeline(transaction=True) as pipe:
        if canary is None:
            pipe.delete(redis_keys.canary(domain))
            if active is None:
                pipe.srem(redis_keys.ACTIVE_DOMAINS, domain)
        else:
            pipe.set(redis_keys.canary(domain), canary.model_dump_json())
            pipe.sadd(redis_keys.ACTIVE_DOMAINS, domain)  # orchestrators read the domains of this set
        pipe.publish(redis_keys.ADAPTER_CHANGED_CHANNEL, _change(domain, active, canary))
        await pipe.execute()


def _change(domain: str, adapter: str | None, canary: Canary | None) -> str:
    """The announcement: the whole serving state of the domain, so a receiver needs nothing else."""
    return json.dumps({"domain": domain, "adapter": adapter, "canary": canary.model_dump() if canary else None})
