"""Canary releases closed on live feedback: a version that passed the gate first serves a share of the domain's
requests; the feedback users give on those answers decides whether it takes all of them.

start (load + verify on every replica, then `Canary` in Redis: orchestrators split each request by its weight)
-> every trigger pass, `check`: once each version has `canary_min_feedback` live scores given *during* the canary
(totals at its start are its baseline), promote when the candidate's mean >= the active version's - margin, else
roll the canary back (its share returns to the active version, the candidate is unloaded after the drain and
marked in the registry) -> after `canary_max_s` without enough feedback, promote on the gate's evidence alone.

The held-out gate judges a version on questions the trainer has answers for; the canary judges it on the traffic
it will serve, with scores from the people it serves (`POST /v1/feedback` `score`, attributed to the version that
wrote the trace's draft).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from services.trainer.config import TrainerSettings
from services.trainer.registry import AdapterError, AdapterRegistry
from services.trainer.store import TrainerStore
from services.trainer.swap import AdapterSwapper
from shared.adapters import BASE_ADAPTER, Canary, get_active_adapter, get_canary

logger = logging.getLogger(__name__)


@dataclass
class Arm:
    """One version's live scores since the canary started."""

    adapter: str
    n: int
    mean: float | None


@dataclass
class Verdict:
    decision: str  # "promote" | "rollback" | "wait"
    reason: str
    candidate: Arm
    active: Arm


def judge(canary: Canary, candidate: Arm, active: Arm, settings: TrainerSettings, now: float) -> Verdict:
    need = settings.canary_min_feedback
    enough = candidate.n >= need and active.n >= need
    if enough and candidate.mean is not None and active.mean is not None:
        if candidate.mean >= active.mean - settings.canary_margin:
            why = f"live score {candidate.mean:.3f} vs {active.mean:.3f} (margin {settings.canary_margin:g})"
            return Verdict("promote", why, candidate, active)
        why = f"live score {candidate.mean:.3f} < {active.mean:.3f} - {settings.canary_margin:g}"
        return Verdict("rollback", why, candidate, active)
    if now - canary.started_at >= settings.canary_max_s:
        why = f"{candidate.n} and {active.n} live scores in {settings.canary_max_s:g} s (need {need}): the gate's word"
        return Verdict("promote", why, candidate, active)
    return Verdict("wait", f"{candidate.n} and {active.n} live scores of {need} each", candidate, active)


class CanaryReleases:
    def __init__(
        self,
        settings: TrainerSettings,
        redis: Redis,
        store: TrainerStore,
        registry: AdapterRegistry,
        swapper: AdapterSwapper,
    ):
        self.settings, self.redis, self.store, self.registry, self.swapper = settings, redis, store, registry, swapper

    async def start(self, domain: str, name: str, weight: float | None = None) -> Canary:
        """Serve `name` to `weight` (default: the settings') of the domain's requests, beside the active version."""
        active = await get_active_adapter(self.redis, domain)
        baseline = {}
        for adapter in (active, name):
            baseline[adapter or BASE_ADAPTER] = await self.store.live_totals(domain, adapter)
        canary = Canary(adapter=name, weight=weight or self.settings.canary_weight, active=active, baseline=baseline)
        await self.swapper.start_canary(domain, canary)
        logger.info("%s: canary %s on %.0f%% of requests beside %s", domain, name, 100 * canary.weight, active)
        return canary

    async def arms(self, domain: str, canary: Canary) -> tuple[Arm, Arm]:
        async def arm(adapter: str | None) -> Arm:
            key = adapter or BASE_ADAPTER
            n, total = await self.store.live_totals(domain, adapter)
            n0, total0 = canary.baseline.get(key, (0, 0.0))
            return Arm(key, n - n0, (total - total0) / (n - n0) if n > n0 else None)

        return await arm(canary.adapter), await arm(canary.active)

    async def verdict(self, domain: str) -> tuple[Canary, Verdict] | None:
        """The domain's canary and the verdict its live scores give now; None when it runs none."""
        canary = await get_canary(self.redis, domain)
        if canary is None:
            return None
        candidate, active = await self.arms(domain, canary)
        return canary, judge(canary, candidate, active, self.settings, time.time())

    async def status(self, domain: str) -> dict | None:
        if (judged := await self.verdict(domain)) is None:
            return None
        canary, verdict = judged
        return {**canary.model_dump(exclude={"baseline"}), "verdict": asdict(verdict)}

    async def check(self, domain: str) -> Verdict | None:
        """Judge the domain's canary and act on the verdict; None when it runs none."""
        if (judged := await self.verdict(domain)) is None:
            return None
        canary, verdict = judged
        if verdict.decision != "wait":
            try:
                await self.end(domain, canary, verdict)
            except AdapterError as exc:  # ended meanwhile (by hand, another trainer), or a replica refused it
                logger.warning("%s: canary %s not ended: %s", domain, canary.adapter, exc)
        return verdict

    async def end(self, domain: str, canary: Canary, verdict: Verdict) -> None:
        """Promote the candidate (the alias flips to it) or roll the canary back; the registry keeps the verdict."""
        if verdict.decision == "promote":
            await self.swapper.activate(domain, canary.adapter, from_canary=True)
        else:
            await self.swapper.end_canary(domain, canary.adapter)
        record = {  # the manifest's metrics are numbers
            "canary_weight": canary.weight,
            "canary_promoted": float(verdict.decision == "promote"),
            "canary_feedback": float(verdict.candidate.n),
            "canary_active_feedback": float(verdict.active.n),
            "canary_ended_at": time.time(),
        }
        if verdict.candidate.mean is not None and verdict.active.mean is not None:
            record |= {"canary_live_score": verdict.candidate.mean, "canary_active_live_score": verdict.active.mean}
        if verdict.decision == "rollback":
            record["rolled_back_at"] = record["canary_ended_at"]
        self.registry.update_metrics(canary.adapter, record)
        done = {"promote": "promoted", "rollback": "rolled back"}[verdict.decision]
        logger.warning("%s: canary %s %s: %s", domain, canary.adapter, done, verdict.reason)

    async def promote(self, domain: str) -> Verdict:
        """End the canary now in the candidate's favour (an operator's call)."""
        return await self._by_hand(domain, "promote")

    async def rollback(self, domain: str) -> Verdict:
        return await self._by_hand(domain, "rollback")

    async def _by_hand(self, domain: str, decision: str) -> Verdict:
        canary = await get_canary(self.redis, domain)
        if canary is None:
            raise AdapterError(f"{domain} runs no canary")
        candidate, active = await self.arms(domain, canary)
        verdict = Verdict(decision, "by hand", candidate, active)
        await self.end(domain, canary, verdict)
        return verdict
