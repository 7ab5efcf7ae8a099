"""Which model server serves a model name (weak base + adapters, strong), cached for a few seconds."""

from __future__ import annotations

import time

from shared.upstream import Upstream, UpstreamError


class ModelDirectory:
    """Which server serves a model name (weak base + adapters, strong), cached for a few seconds."""

    def __init__(self, weak: Upstream, strong: Upstream, ttl_s: float = 5.0):
        self.upstreams = {"weak": weak, "strong": strong}
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[dict]]] = {}

    async def cards(self, role: str, fresh: bool = False) -> list[dict]:
        at, cards = self._cache.get(role, (0.0, []))
        if fresh or time.monotonic() - at > self.ttl_s:
            try:
                cards = await self.upstreams[role].models()
                self._cache[role] = (time.monotonic(), cards)
            except UpstreamError:
                pass  # keep the last known list while the server is away
        return cards

    async def served_by(self, model: str) -> str | None:
        for role in ("weak", "strong"):
            if any(card.get("id") == model for card in await self.cards(role)):
                return role
        return None
