"""Which LoRA adapter each domain's weak drafts use, cached in process.

The trainer points a domain's alias at a new version and announces it (shared/adapters.py). This cache
subscribes to that channel, so a swap takes
effect on the next request, and re-reads every key every `refresh_s` in case a message was missed
(pub/sub is at-most-once; a change first seen by a re-read is counted in `missed` and logged). Requests
read the dict: no Redis round-trip per request. While Redis is away the last known aliases stay in force.

A domain's canary (shared/adapters.py `Canary`) is cached beside its alias and read the same ways; `pick` splits
the domain's requests between the two. Canaries are not saved to disk: an orchestrator started while Redis is
away serves the aliases alone until it reads Redis.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from shared import redis_keys
from shared.adapters import Canary, parse_canary
from shared.watch import watch

logger = logging.getLogger(__name__)


class AdapterAliases:
    """`saved_at`: a file holding the last aliases read from Redis, so that an orchestrator started while Redis
    is away serves each domain's last known version instead of silently falling back to the base model."""

    def __init__(
        self,
        redis: Redis,
        refresh_s: float = 30.0,
        on_change=lambda domain, adapter: None,
        saved_at: Path | None = None,
    ):
        self.redis = redis
        self.refresh_s = refresh_s
        self.on_change = on_change
        self.saved_at = saved_at
        self.source = "none"  # "redis" once read from Redis; "disk" while only the saved copy is known
        self._migrated = False
        self._active: dict[str, str] = {}
        self._canary: dict[str, Canary] = {}
        self.missed = 0  # alias changes no notification delivered (seen first by a re-read after the first)

    def load_saved(self) -> bool:
        """Start from the saved copy (before Redis answers); False when there is none."""
        try:
            saved = json.loads(self.saved_at.read_text()) if self.saved_at else None
        except (OSError, ValueError):
            return False
        if not isinstance(saved, dict):
            return False
        for domain, adapter in saved.items():
            if isinstance(domain, str) and isinstance(adapter, str):
                self._set(domain, adapter)
        self.source = "disk"
        logger.warning("Redis not read yet: serving the saved adapter aliases %s", saved)
        return True

    def _save(self) -> None:
        if self.saved_at is None:
            return
        try:
            self.saved_at.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.saved_at.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._active))
            os.replace(tmp, self.saved_at)  # never a torn file
        except OSError as exc:
            logger.warning("cannot save the adapter aliases to %s: %s", self.saved_at, exc)

    def get(self, domain: str) -> str | None:
        return self._active.get(domain)

    def pick(self, domain: str, key: str) -> str | None:
        """The version this request's draft uses: the canary's candidate for its share of keys, else the alias."""
        canary = self._canary.get(domain)
        if canary is not None and canary.serves(key):
            return canary.adapter
        return self._active.get(domain)

    def canary(self, domain: str) -> Canary | None:
        return self._canary.get(domain)

    def snapshot(self) -> dict[str, str]:
        """Domain -> alias, and the domains that only run a canary (beside the base model)."""
        return {d: self._active.get(d, "") for d in set(self._active) | set(self._canary)}

    def _set_canary(self, domain: str, canary: Canary | None) -> None:
        if self._canary.get(domain) == canary:
            return
        if canary is None:
            self._canary.pop(domain, None)
            logger.info("canary of %s ended", domain)
        else:
            self._canary[domain] = canary
            logger.info("canary of %s: %s on %.0f%% of requests", domain, canary.adapter, 100 * canary.weight)

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
        """Re-read every alias: the set of domains with one, then their keys (one SMEMBERS + one MGET, not a
        keyspace SCAN on every replica every `refresh_s`). Aliases written before the set existed are found by
        one SCAN, the first time, and added to it."""
        if not self._migrated:
            try:
                keys = [k async for k in self.redis.scan_iter(match=redis_keys.ACTIVE_ADAPTER_PATTERN, count=100)]
                if legacy := [redis_keys.domain_of(k) for k in keys if k != redis_keys.ACTIVE_DOMAINS]:
                    await self.redis.sadd(redis_keys.ACTIVE_DOMAINS, *legacy)
            except NoPermissionError:  # the orchestrator's ACL user may not SCAN (redis_keys.acl_rules)
                logger.info("no SCAN permission: aliases are read from %s only", redis_keys.ACTIVE_DOMAINS)
            self._migrated = True
        domains = sorted(await self.redis.smembers(redis_keys.ACTIVE_DOMAINS))
        keys = [redis_keys.active_adapter(d) for d in domains] + [redis_keys.canary(d) for d in domains]
        values = await self.redis.mget(keys) if domains else []
        fresh = {d: v for d, v in zip(domains, values[: len(domains)], strict=True) if v}
        canaries = {d: c for d, v in zip(domains, values[len(domains) :], strict=True) if (c := parse_canary(v))}
        for domain in set(self._canary) | set(canaries):
            self._set_canary(domain, canaries.get(domain))
        for domain in set(self._active) | set(fresh):
            if self.source == "redis" and self._active.get(domain) != fresh.get(domain):
                self.missed += 1
                logger.warning("the alias change of %s reached this process by a re-read, not a notification", domain)
            self._set(domain, fresh.get(domain))
        self.source = "redis"
        self._save()

    async def run(self) -> None:
        """Subscribe and refresh forever; reconnect with backoff when Redis goes away."""
        await watch(
            self.redis, redis_keys.ADAPTER_CHANGED_CHANNEL, self.refresh, self._apply, self.refresh_s, "adapter alias"
        )

    def _apply(self, data) -> None:
        try:
            change = json.loads(data)
            domain = str(change["domain"])
            canary = Canary.model_validate(change["canary"]) if change.get("canary") else None
            self._set(domain, change.get("adapter"))
            self._set_canary(domain, canary)
            self._save()
        except (ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
            logger.warning("ignoring malformed alias change: %r", data)
