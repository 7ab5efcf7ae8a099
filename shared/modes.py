"""Each domain's default mode, chosen by measurement on training questions, never on evaluation items.

A domain with a gated adapter used to be answered by the collaboration whatever it measured. Where the strong stage
breaks more drafts than it fixes, or the strong model with the same lookup does better than both, users paid for
the worse answer. So after SFT the candidate modes are scored on training questions the adapter was not trained on
(the SFT stop rule's held-out rows) and the best becomes the domain's default; ties go to the cheaper mode (weak
alone, then strong + retrieval, then the collaboration). The record names the adapter version it was measured
with: a new version is served with the collaboration until it is measured in its turn. A request that names a mode
still gets that mode; the response says which ran and why.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import redis_keys

Candidate = Literal["weak", "strong_retrieval", "collab"]
CHEAPEST_FIRST: tuple[Candidate, ...] = ("weak", "strong_retrieval", "collab")  # strong tokens: none, some, most
LABELS = {"weak": "weak alone", "strong_retrieval": "strong + retrieval", "collab": "collaboration"}


class DefaultMode(BaseModel):
    """A domain's measured default.

    Args:
        choice: the candidate that measured best (`strong_retrieval`: the strong model alone with the lookup).
        adapter: the adapter version it was measured with; other versions are not bound by it.
        scores: each candidate's share of correct answers on the selection items.
        items: how many training questions (held out from SFT) the choice was made on.
        reason: the sentence the response and `/v1/domains` show.
    """

    choice: Candidate
    adapter: str
    scores: dict[str, float]
    items: int = Field(ge=1)
    reason: str
    measured_at: float = Field(default_factory=time.time)

    @property
    def mode(self) -> Literal["weak", "strong", "collab"]:
        return "strong" if self.choice == "strong_retrieval" else self.choice

    @property
    def lookup(self) -> bool | None:
        return True if self.choice == "strong_retrieval" else None


def choose(scores: dict[str, float], items: int, adapter: str) -> DefaultMode:
    """The best of the measured candidates; a tie goes to the cheaper one."""
    measured = [c for c in CHEAPEST_FIRST if c in scores]
    if not measured:
        raise ValueError("no candidate mode was measured")
    best = max(measured, key=lambda c: (scores[c], -CHEAPEST_FIRST.index(c)))
    shown = ", ".join(f"{LABELS[c]} {100 * scores[c]:.0f}%" for c in measured)
    reason = f"measured on {items} training questions held out from SFT: {shown}; {LABELS[best]} is best"
    tied = [c for c in measured if c != best and scores[c] == scores[best]]
    if tied:
        reason += f" (tied with {', '.join(LABELS[c] for c in tied)}: the cheaper one)"
    return DefaultMode(choice=best, adapter=adapter, scores=scores, items=items, reason=reason)


async def set_default_mode(redis: Redis, domain: str, record: DefaultMode) -> None:
    await redis.hset(redis_keys.DEFAULT_MODES, domain, record.model_dump_json())


async def get_default_modes(redis: Redis) -> dict[str, DefaultMode]:
    raw = await redis.hgetall(redis_keys.DEFAULT_MODES)
    out = {}
    for domain, text in raw.items():
        try:
            out[domain] = DefaultMode.model_validate_json(text)
        except ValueError:
            continue  # a record this version cannot read is ignored: the collaboration is served
    return out


class DefaultModes:
    """The orchestrator's copy of every domain's measured default, re-read every `ttl_s` (one HGETALL)."""

    def __init__(self, redis: Redis | None, ttl_s: float = 10.0):
        self.redis, self.ttl_s = redis, ttl_s
        self._records: dict[str, DefaultMode] = {}
        self._read_at = float("-inf")

    async def refresh(self) -> None:
        if self.redis is None or time.monotonic() - self._read_at < self.ttl_s:
            return
        self._read_at = time.monotonic()  # a failing Redis is asked again after ttl_s, not per request
        try:
            self._records = await get_default_modes(self.redis)
        except (RedisError, OSError):
            pass  # keep the last copy

    def for_version(self, domain: str, adapter: str | None) -> DefaultMode | None:
        """The domain's measured default when it was measured with `adapter` (the version the request drafts with)."""
        record = self._records.get(domain)
        return record if record is not None and adapter is not None and record.adapter == adapter else None

    def get(self, domain: str) -> DefaultMode | None:
        return self._records.get(domain)
