"""One training round for a domain: pairs -> DPO job (own process) -> register -> gate -> swap (or, with
`canary_weight`, a canary that live feedback promotes or rolls back: canary.py).

One round at a time per domain, across processes: a Redis lock with expiry. A round that dies
midway leaves no trace in serving: the candidate is registered (immutable, versioned) but the alias
only flips after the gate passed, and the round counter only advances after a promotion or a clean
rejection, so a restarted trainer re-runs the round on the same pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from services.trainer.canary import CanaryReleases
from services.trainer.collab import CollabClient
from services.trainer.config import TrainerSettings
from services.trainer.gate import GateRules, decide, score_version
from services.trainer.jobs import JobConfig
from services.trainer.registry import AdapterError, AdapterRegistry
from services.trainer.store import TrainerStore, question_key
from services.trainer.swap import AdapterSwapper
from shared import redis_keys
from shared.adapters import get_active_adapter, get_canary
from shared.failpoints import failpoint

logger = logging.getLogger(__name__)


@dataclass
class RoundResult:
    domain: str
    round: int
    status: str  # promoted | canary (on a share of the traffic: canary.py) | rejected | skipped | failed
    detail: str = ""
    pairs: int = 0
    candidate: str | None = None
    active_before: str | None = None
    candidate_score: float | None = None
    active_score: float | None = None
    swap_seconds: float | None = None
    train: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)  # the gate's decision (services/trainer/gate.py GateDecision)


def dpo_steps(pairs: int, epochs: float, batch_size: int, max_steps: int) -> int:
    """Steps from the data: `epochs` passes over the pairs, at most `max_steps`. A fixed step count
    trained 2 pairs for 10 steps (5 epochs) and collapsed the weak model."""
    return max(1, min(max_steps, math.ceil(epochs * pairs / batch_size)))


def job_failure(kind: str, returncode: int, log: str, lines: int = 5) -> str:
    """One readable line for a failed job: the exit, what SIGKILL usually means, the log's last lines
    without progress bars (which end in carriage returns and swamp the tail)."""
    why = " (SIGKILL: most likely out of memory)" if returncode == -signal.SIGKILL else ""
    tail = [line.rsplit("\r", 1)[-1].strip() for line in log.splitlines()]
    tail = [line for line in tail if line and "it/s]" not in line and "examples/s]" not in line][-lines:]
    return f"{kind} job failed with exit {returncode}{why}" + (f": {' | '.join(tail)}"[:600] if tail else "")


async def run_job(kind: str, cfg: JobConfig) -> dict:
    """Run a training job in a child process; raise with its log tail when it fails."""
    job_file = Path(cfg.output_dir).with_suffix(".job.json")
    Path(cfg.output_dir).parent.mkdir(parents=True, exist_ok=True)
    cfg.save(job_file)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.trainer.jobs",
        kind,
        str(job_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    failpoint("round.job")
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(job_failure(kind, proc.returncode or -1, out.decode(errors="replace")))
    return json.loads(Path(cfg.output_dir, "metrics.json").read_text())


class RoundRunner:
    def __init__(
        self,
        settings: TrainerSettings,
        redis: Redis,
        store: TrainerStore,
        registry: AdapterRegistry,
        swapper: AdapterSwapper,
        collab: CollabClient,
        job_overrides: dict | None = None,
        job_runner: Callable[[str, JobConfig], Awaitable[dict]] = run_job,
        canaries: CanaryReleases | None = None,
    ):
        self.settings, self.redis, self.store, self.registry = settings, redis, store, registry
        self.swapper, self.collab = swapper, collab
        self.canaries = canaries or CanaryReleases(settings, redis, store, registry, swapper)
        self.run_job = job_runner  # a training job in a child process (a fake in unit tests)
        self.job_overrides = {
            "max_steps": settings.dpo_max_steps,
            "learning_rate": settings.dpo_learning_rate,
            "batch_size": settings.dpo_batch_size,
            "micro_batch_size": settings.dpo_micro_batch_size,
            "beta": settings.dpo_beta,
            **(job_overrides or {}),
        }
        self.rules = GateRules(
            tolerance=settings.gate_tolerance, min_items=settings.gate_min_items, min_variety=settings.gate_min_variety
        )
        self.current: dict[str, str] = {}  # domain -> what its round is doing now (for GET /status)
        self._held: dict[str, Any] = {}  # domain -> the round lock this runner holds (a redis Lock)
        # The latest outcomes (GET /status): bounded, as the trigger loop retries a skipped round every pass.
        self.history: deque[RoundResult] = deque(maxlen=20)

    async def run(self, domain: str, force: bool = False, job_overrides: dict | None = None) -> RoundResult:
        lock = self.redis.lock(redis_keys.round_lock(domain), timeout=self.settings.lock_ttl_s, blocking=False)
        if not await lock.acquire():
            return RoundResult(
                domain, await self.store.round(domain), "skipped", "another round of this domain is running"
            )
        round_ = await self._count_interrupted(domain, await self.store.round(domain))  # under the lock
        self._held[domain] = lock
        renewal = asyncio.create_task(self._keep(lock, domain))
        try:
            result = await self._run_locked(domain, round_, force, {**self.job_overrides, **(job_overrides or {})})
        except Exception as exc:  # noqa: BLE001 - report, keep serving the active version
            logger.exception("round %s of %s failed", round_, domain)
            result = RoundResult(domain, round_, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            renewal.cancel()
            self._held.pop(domain, None)
            self.current.pop(domain, None)
            with contextlib.suppress(LockError):
                await lock.release()
        self.history.append(result)
        return result

    async def _run_locked(self, domain: str, round_: int, force: bool, job: dict) -> RoundResult:
        if (canary := await get_canary(self.redis, domain)) is not None:  # one candidate on live traffic at a time
            return RoundResult(domain, round_, "skipped", f"the canary of {canary.adapter} is still being judged")
        # Exactly what this round trains on. Skipped rounds keep their claim: the counter does not move, so
        # the next try of this round number claims the newer pairs on top.
        pairs = await self.store.claim_pairs(domain, round_)
        need = self.settings.min_pairs_forced if force else self.settings.min_pairs_per_round
        if len(pairs) < max(need, 1):
            return RoundResult(
                domain,
                round_,
                "skipped",
                f"{len(pairs)} pairs, need {need}"
                + (" even when forced: DPO on fewer pairs moves single answers, not the model" if force else ""),
                pairs=len(pairs),
            )
        heldout = sorted(await self.store.heldout(domain), key=lambda e: question_key(domain, e.question))
        heldout = heldout[: self.settings.gate_max_items]  # a stable sample: the same items round after round
        if len(heldout) < self.rules.min_items:  # train only what the gate can judge
            return RoundResult(
                domain,
                round_,
                "skipped",
                f"{len(heldout)} held-out items, the gate needs {self.rules.min_items}",
                pairs=len(pairs),
            )
        job = {
            **job,
            "max_steps": dpo_steps(len(pairs), self.settings.dpo_epochs, job["batch_size"], job["max_steps"]),
        }
        active = await get_active_adapter(self.redis, domain)
        result = RoundResult(domain, round_, "rejected", pairs=len(pairs), active_before=active)
        work = Path(tempfile.mkdtemp(prefix=f"cowest-{domain}-r{round_}-"))
        data = work / "pairs.jsonl"
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": p.prompt,
                        "chosen": [{"role": "assistant", "content": p.chosen}],
                        "rejected": [{"role": "assistant", "content": p.rejected}],
                    }
                )
                + "\n"
                for p in pairs
            )
        )
        init = str(self.registry.path(active)) if active and self._ours(active) else None
        self.current[domain] = f"training round {round_} on {len(pairs)} pairs"
        cfg = JobConfig(
            base_model_dir=str(self.settings.base_model_dir),
            data_file=str(data),
            output_dir=str(work / "adapter"),
            init_adapter=init,
            **job,
        )
        result.train = await self.run_job("dpo", cfg)
        manifest = self.registry.register(
            work / "adapter",
            domain=domain,
            base_model=self.settings.endpoints.weak_model,
            base_model_path=self.settings.base_model_dir,
            parent=active,
            round=round_,
            pairs=len(pairs),
            kind="dpo",
            metrics={"final_loss": result.train["loss"][-1]} if result.train["loss"] else {},
            # DPO trained on prompts with the parent's lookups: the candidate looks up in the same knowledge.
            knowledge=self.registry.knowledge(active) if active and self._ours(active) else None,
        )
        result.candidate = manifest.name
        failpoint("round.registered")
        shutil.rmtree(
            work, ignore_errors=True
        )  # the registry holds the adapter; a failed job's dir stays for debugging
        self.current[domain] = f"gating {manifest.name}"
        try:
            await self.swapper.load_verified(manifest.name)
        except AdapterError as exc:
            result.detail = f"candidate rejected before traffic: {exc}"
            await self.store.next_round(domain)
            return result
        failpoint("round.loaded")
        candidate_rows, active_rows = await asyncio.gather(
            score_version(self.collab, domain, manifest.name, heldout, self.settings.concurrency),
            score_version(self.collab, domain, active, heldout, self.settings.concurrency),
        )
        failpoint("round.gating")
        decision = decide(candidate_rows, active_rows, self.rules)
        result.candidate_score, result.active_score, result.gate = (
            decision.candidate,
            decision.active,
            asdict(decision),
        )
        self.registry.update_metrics(manifest.name, decision.metrics())
        result.detail = decision.reason
        if decision.passed and not await self._still_holds(domain):
            result.status, result.detail = "failed", "the round lock lapsed before the swap; another round may run"
            await self.swapper.unload(manifest.name)
            return result
        if decision.passed and self.settings.canary_weight > 0:
            self.current[domain] = f"starting the canary of {manifest.name}"
            await self.canaries.start(domain, manifest.name)
            result.status = "canary"
            failpoint("round.promoted")
        elif decision.passed:
            self.current[domain] = f"swapping to {manifest.name}"
            result.swap_seconds = await self.swapper.activate(domain, manifest.name)
            result.status = "promoted"
            failpoint("round.promoted")
        else:
            await self.swapper.unload(manifest.name)
        await self.store.next_round(domain)
        logger.info("round %s of %s: %s (%s)", round_, domain, result.status, result.detail)
        return result

    async def _count_interrupted(self, domain: str, round_: int) -> int:
        """A trainer killed after a round's gate, before the round counter moved, left a gated manifest of this
        round number: count that round now, so that its pairs are not trained on a second time. (Killed before
        the gate, the round simply runs again; its unserved candidate stays in the registry.)"""
        gated = [m.name for m in self.registry.versions(domain) if m.round == round_ and "gate_candidate" in m.metrics]
        if not gated:
            return round_
        active = await get_active_adapter(self.redis, domain)
        logger.warning(
            "round %s of %s was interrupted after its gate (%s; active now: %s): counting it as done",
            round_,
            domain,
            ", ".join(gated),
            active or "the base model",
        )
        return await self.store.next_round(domain)

    async def _keep(self, lock, domain: str) -> None:
        """Renew the round lock while the round runs (a DPO job can outlast any fixed TTL); a trainer killed
        mid-round stops renewing, and the lock lapses after `lock_ttl_s` instead of an hour."""
        while True:
            await asyncio.sleep(self.settings.lock_ttl_s / 3)
            try:
                await lock.reacquire()
            except LockError:
                logger.error("round lock of %s lost; the round's swap will be refused", domain)
                return
            except (RedisError, OSError) as exc:
                logger.warning("could not renew the round lock of %s: %s", domain, exc)

    async def _still_holds(self, domain: str) -> bool:
        """Fencing before the one step that changes serving: the lock is still ours."""
        return self._held.get(domain) is not None and bool(await self._held[domain].owned())

    def _ours(self, name: str) -> bool:
        try:
            self.registry.get(name)
            return True
        except AdapterError:
            return False

    def status(self) -> dict:
        return {
            "running": dict(self.current),
            "last": [asdict(r) for r in list(self.history)[-5:]],
            "checked_at": time.time(),
        }
