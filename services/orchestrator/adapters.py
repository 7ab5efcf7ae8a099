"""Which LoRA adapter each domain's weak drafts use, cached in process.

The trainer points a domain's alias at a new version and announces it (shared/adapters.py). This cache
subscribes to that channel, so a swap takes
effect on the next request, and re-reads every key every `refresh_s` in case a message was missed
(pub/sub is at-most-once). Requests read the dict: no Redis round-trip per request. While Redis is
away the last known aliases stay in force.
"""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from shared import redis_keys
from shared.watch import watch

logger = logging.getLogger(__name__)


class AdapterAliases:
    def __init__(self, redis: Redis, refresh_s: float = 30.0, on_change=lambda domain, adapter: None):
        self.redis = redis
        self.refresh_s = refresh_s
        self.on_change = on_change
        self._active: dict[str, str] = {}

    def get(self, domain: str) -> str | None:
        return self._active.get(domain)

    def snapshot(self) -> dict[str, str]:
        return dict(self._active)

    def _set(self, domain: str, adapter: str | None) -> None:
        if self._active.get(domain) == adapter:
            return
        if adapter:
            self._active[domain] = adapter
        else:
            self._active.pop(domain, None)
        logger.info("active adapter of %s: %s", domain, adapter or "(base model)")
        self.on_change(domain, adapter)

    async def refresh(self) -> None:
        keys = [k async for k in self.redis.scan_iter(match=redis_keys.ACTIVE_ADAPTER_PATTERN, count=100)]
        values = await self.redis.mget(keys) if keys else []
        fresh = {redis_keys.domain_of(k): v for k, v in zip(keys, values, strict=True) if v}
        for domain in set(self._active) | set(fresh):
            self._set(domain, fresh.get(domain))

    async def run(self) -> None:
        """Subscribe and refresh forever; reconnect with backoff when Redis goes away."""
        await watch(
            self.redis, redis_keys.ADAPTER_CHANGED_CHANNEL, self.refresh, self._apply, self.refresh_s, "adapter alias"
        )

    def _apply(self, data) -> None:
        try:
            change = json.loads(data)
            self._set(str(change["domain"]), change.get("adapter"))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring malformed alias change: %r", data)
