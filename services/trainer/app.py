"""Trainer service wiring: `python -m services.trainer.app`.

Background loops: the collector (streams -> pairs), the round trigger (enough pairs, or the
schedule), and reconciliation (re-load the desired adapters when vLLM restarted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from services.trainer.canary import CanaryReleases
from services.trainer.collab import CollabClient
from services.trainer.collector import Collector
from services.trainer.config import TrainerSettings
from services.trainer.registry import AdapterError, AdapterRegistry
from services.trainer.rounds import RoundResult, RoundRunner
from services.trainer.store import FEEDBACK_OUTCOMES, TrainerStore, question_key
from services.trainer.swap import AdapterSwapper
from shared import auth, redis_keys
from shared import domains as domain_specs
from shared.adapters import get_active_adapter
from shared.data.example import Example
from shared.domains import NAME_PATTERN
from shared.knowledge import KnowledgeCache
from shared.openapi_errors import document_errors
from shared.supervise import stop_if_cancelled, supervised
from shared.watch import watch

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """Every error the trainer answers (FastAPI's shape): a message, or the validation errors for a 422."""

    detail: str | list[dict[str, Any]]


class TrainRequest(BaseModel):
    domain: str = Field(pattern=NAME_PATTERN)
    force: bool = False  # train below min_pairs_per_round (never below min_pairs_forced)
    max_steps: int | None = Field(default=None, ge=1, le=10_000)  # this round's DPO steps (default: settings)
    # Torch threads for this round's DPO job (default 1: vLLM holds the other core). A driver that
    # knows the servers are idle meanwhile, like the demo between its phases, may ask for 2.
    threads: int | None = Field(default=None, ge=1, le=64)


class CanaryRequest(BaseModel):
    adapter: str = Field(pattern=NAME_PATTERN)  # a registered version of the domain
    weight: float | None = Field(
        default=None, gt=0.0, lt=1.0
    )  # share of requests; default COWEST_TRAINER_CANARY_WEIGHT


class BuildItem(BaseModel):
    id: str | None = None  # default: derived from the question text
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)  # the reference the collaboration is scored against
    context: str | None = None


class BuildRequest(BaseModel):
    """Collaborative feedback over a labelled set (the paper builds its pairs over the training split)."""

    domain: str = Field(pattern=NAME_PATTERN)
    items: list[BuildItem] = Field(min_length=1, max_length=20_000)
    limit: int | None = Field(default=None, ge=0)  # at most this many non-held-out questions become pairs


class FailureBackoff:
    """When automatic rounds of a domain fail (a job killed for memory, vLLM down), wait before the next
    try, doubling up to an hour: retrying every pass turns one bad round into a crash loop that burns
    the CPU the servers need (an OOM-killed DPO job was retried every 36 s before this)."""

    def __init__(self, base_s: float, max_s: float = 3600.0):
        self.base_s, self.max_s = base_s, max_s
        self.failures: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}

    def blocked(self, domain: str, now: float) -> bool:
        return now < self.retry_at.get(domain, 0.0)

    def record(self, domain: str, status: str, now: float) -> float:
        """Note a round's outcome; returns the seconds to wait before the next automatic try."""
        if status != "failed":
            self.failures.pop(domain, None)
            self.retry_at.pop(domain, None)
            return 0.0
        self.failures[domain] = self.failures.get(domain, 0) + 1
        wait = min(self.base_s * 2 ** (self.failures[domain] - 1), self.max_s)
        self.retry_at[domain] = now + wait
        return wait


class Trainer:
    """Everything the service runs, built once."""

    def __init__(self, settings: TrainerSettings):
        self.settings = settings
        self.redis = redis_keys.connect(settings.endpoints.redis_url)
        self.store = TrainerStore(self.redis)
        self.registry = AdapterRegistry(settings.adapters_dir)
        self.collab = CollabClient(settings, KnowledgeCache(self.redis))
        self.swapper = AdapterSwapper(settings, self.registry, self.redis)
        self.canaries = CanaryReleases(settings, self.redis, self.store, self.registry, self.swapper)
        self.collector = Collector(settings, self.redis, self.store, self.collab)
        self.rounds = RoundRunner(
            settings, self.redis, self.store, self.registry, self.swapper, self.collab, canaries=self.canaries
        )
        self._last_scheduled: dict[str, float] = {}
        self._rounds: dict[str, asyncio.Task] = {}  # the automatic round running for a domain
        self._one_round = asyncio.Lock()
        self.backoff = FailureBackoff(settings.failed_round_backoff_s)
        self._migrated = False

    async def domains(self) -> list[str]:
        """Domains with trainer state or adapters: a set in Redis (every trigger and reconcile pass reads it) and
        the registry. State written before the set existed is found by one SCAN, the first time."""
        if not self._migrated:
            for pattern in (redis_keys.ROUND_PATTERN, redis_keys.PAIRS_PATTERN):
                if legacy := {redis_keys.domain_of(key) async for key in self.redis.scan_iter(match=pattern)}:
                    await self.redis.sadd(redis_keys.TRAINER_DOMAINS, *legacy)
            self._migrated = True
        return sorted(await self.store.domains() | set(self.registry.domains()))

    async def trigger_loop(self) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(5)
            try:
                domains = await self.domains()
            except Exception:  # noqa: BLE001 - the loop must outlive Redis outages
                stop_if_cancelled()
                logger.exception("round trigger pass failed")
                continue
            for domain in domains:
                await self.trigger(domain)

    async def trigger(self, domain: str) -> None:
        """One domain's pass: canary verdict, live-regression rollback, then a round if one is due. Isolated:
        one domain failing here leaves the others alone, and a round runs in its own task, so verdicts and
        rollbacks of every domain go on while a DPO round trains."""
        try:
            await self.canaries.check(domain)
            await self.swapper.check_live_regression(domain, self.store)
            running = self._rounds.get(domain)
            if running is not None and not running.done():
                return
            if await self.store.manual_rounds(domain) or self.backoff.blocked(domain, time.time()):
                return
            pairs = len(await self.store.pending_pairs(domain))
            due = (
                self.settings.round_interval_s > 0
                and time.time() - self._last_scheduled.get(domain, 0) >= self.settings.round_interval_s
            )
            if pairs >= self.settings.min_pairs_per_round or (due and pairs):
                self._last_scheduled[domain] = time.time()
                self._rounds[domain] = asyncio.create_task(self._round(domain, force=due))
        except Exception:  # noqa: BLE001 - the loop must outlive Redis or vLLM outages
            stop_if_cancelled()
            logger.exception("round trigger pass failed for %s", domain)

    async def _round(self, domain: str, force: bool) -> None:
        async with self._one_round:  # rounds train one at a time: the machine's cores go to one DPO job
            try:
                result = await self.rounds.run(domain, force=force)
            except Exception as exc:  # noqa: BLE001 - a failed round backs off; it must not kill the trainer
                logger.exception("automatic round of %s failed", domain)
                result = RoundResult(domain, -1, "failed", str(exc)[:300])
            if wait := self.backoff.record(domain, result.status, time.time()):
                logger.warning("automatic rounds of %s paused for %.0f s after: %s", domain, wait, result.detail)

    async def stop_rounds(self) -> None:
        for task in self._rounds.values():
            task.cancel()
        await asyncio.gather(*self._rounds.values(), return_exceptions=True)

    async def reconcile_loop(self) -> None:
        while True:
            stop_if_cancelled()
            try:
                for domain in await self.domains():
                    try:
                        if missing := await self.swapper.reconcile(domain):
                            logger.warning("re-loaded %s into vLLM for %s", missing, domain)
                    except Exception as exc:  # noqa: BLE001 - vLLM may be restarting
                        stop_if_cancelled()
                        logger.info("reconcile %s: %s", domain, exc)
            except (RedisError, OSError) as exc:
                stop_if_cancelled()
                logger.warning("reconcile pass skipped: Redis unavailable (%s)", exc)
            await asyncio.sleep(10)

    async def sync_domains(self, _message=None) -> None:
        """The registered domain specs (prompts and metrics of domains registered at runtime)."""
        await domain_specs.load_registered(self.redis)

    async def watch_domains(self) -> None:
        await watch(
            self.redis, redis_keys.DOMAINS_CHANGED_CHANNEL, self.sync_domains, self.sync_domains, 30.0, "domain spec"
        )

    async def aclose(self) -> None:
        await self.collab.aclose()
        await self.swapper.aclose()
        await self.redis.aclose()


def create_app(settings: TrainerSettings | None = None) -> FastAPI:
    settings = settings or TrainerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        trainer = Trainer(settings)
        app.state.trainer = trainer
        loops = {
            "collector": trainer.collector.run,
            "round trigger": trainer.trigger_loop,
            "reconcile": trainer.reconcile_loop,
            "domain watch": trainer.watch_domains,
        }
        tasks = [asyncio.create_task(supervised(name, loop)) for name, loop in loops.items()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await trainer.stop_rounds()
            await trainer.aclose()

    # No /docs or /openapi.json: every route but /healthz is an admin route (shared/auth.py).
    app = FastAPI(title="CoWest trainer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    document_errors(app, ErrorDetail, text_routes={"/metrics": "text/plain"})
    admin = APIRouter(dependencies=[Depends(require_admin_key)])

    def trainer_of(request: Request) -> Trainer:
        return request.app.state.trainer

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus: the collector's backlog and losses (alert on feedback waiting long or any dead letter)."""
        t = trainer_of(request)
        registry = CollectorRegistry()
        gauges = {
            "cowest_trainer_feedback_waiting": ("Feedback entries waiting for their trace", t.collector.waiting),
            "cowest_trainer_dead_lettered": ("Entries dead-lettered by this process", t.collector.dead_lettered),
            "cowest_trainer_processed_questions": (
                "Questions turned into collaborative feedback",
                t.collector.processed,
            ),
        }
        for name, (doc, value) in gauges.items():
            Gauge(name, doc, registry=registry).set(value)
        try:
            dead = await t.redis.xlen(redis_keys.DEAD_LETTER_STREAM)
            Gauge("cowest_dead_letter_entries", "Entries in the dead-letter stream", registry=registry).set(dead)
            outcomes = Gauge(
                "cowest_feedback_outcomes",
                "Feedback entries acknowledged, by what became of them (services/trainer/store.py)",
                ["outcome"],
                registry=registry,
            )
            counts = await t.store.feedback_outcomes()
            for outcome in FEEDBACK_OUTCOMES:  # every documented outcome, 0 included: the series exist from the start
                outcomes.labels(outcome).set(counts.get(outcome, 0))
        except (RedisError, OSError):
            pass  # Redis away: the process's own figures still go out
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @admin.post("/dead-letter/replay")
    async def replay_dead(request: Request) -> dict:
        """Dead-lettered entries back onto their streams (after the cause is mended): `cowest feedback replay-dead`."""
        try:
            return {"replayed": await trainer_of(request).collector.replay_dead()}
        except (RedisError, OSError) as exc:
            raise HTTPException(503, f"Redis is unavailable ({exc}); nothing was replayed: try again") from exc

    @admin.get("/status")
    async def status(request: Request) -> dict:
        t = trainer_of(request)
        domains = {}
        for domain in await t.domains():
            round_ = await t.store.round(domain)
            active = await get_active_adapter(t.redis, domain)
            domains[domain] = {
                "round": round_,
                "pending_pairs": len(await t.store.pending_pairs(domain)),
                "active": active,
                "heldout_items": len(await t.store.heldout(domain)),
                "auto_rounds": not await t.store.manual_rounds(domain),
                "canary": await t.canaries.status(domain),
            }
        return {"domains": domains, "processed_questions": t.collector.processed, **t.rounds.status()}

    @admin.get("/adapters")
    async def adapters(request: Request) -> dict:
        t = trainer_of(request)
        return {d: [m.model_dump() for m in t.registry.versions(d)] for d in t.registry.domains()}

    @admin.post("/train")
    async def train(body: TrainRequest, request: Request) -> dict:
        overrides = {k: v for k, v in (("max_steps", body.max_steps), ("threads", body.threads)) if v} or None
        await trainer_of(request).sync_domains()  # a spec registered a moment ago
        return asdict(await trainer_of(request).rounds.run(body.domain, force=body.force, job_overrides=overrides))

    @admin.post("/feedback/build")
    async def feedback_build(body: BuildRequest, request: Request) -> dict:
        items = [
            Example(
                id=i.id or question_key(body.domain, i.question),
                domain=body.domain,
                question=i.question,
                answer=i.answer,
                context=i.context,
            )
            for i in body.items
        ]
        await trainer_of(request).sync_domains()
        report = await trainer_of(request).collector.build(items, body.limit)
        return {"domain": body.domain, **asdict(report), "pair_yield": report.pair_yield}

    @admin.post("/adapters/{domain}/rollback")
    async def rollback(request: Request, domain: str = Path(pattern=NAME_PATTERN)) -> dict:
        try:
            previous = await trainer_of(request).swapper.rollback(domain)
        except AdapterError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"domain": domain, "active": previous}

    @admin.get("/adapters/{domain}/canary")
    async def canary(request: Request, domain: str = Path(pattern=NAME_PATTERN)) -> dict:
        status = await trainer_of(request).canaries.status(domain)
        if status is None:
            raise HTTPException(404, f"{domain} runs no canary")
        return status

    @admin.post("/adapters/{domain}/canary")
    async def start_canary(body: CanaryRequest, request: Request, domain: str = Path(pattern=NAME_PATTERN)) -> dict:
        t = trainer_of(request)
        if body.weight is None and not t.settings.canary_weight:
            raise HTTPException(422, "give a weight: no default is configured (COWEST_TRAINER_CANARY_WEIGHT)")
        try:
            canary = await t.canaries.start(domain, body.adapter, body.weight)
        except AdapterError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"domain": domain, **canary.model_dump(exclude={"baseline"})}

    @admin.post("/adapters/{domain}/canary/{decision}")
    async def end_canary(
        request: Request,
        domain: str = Path(pattern=NAME_PATTERN),
        decision: str = Path(pattern="^(promote|rollback)$"),
    ) -> dict:
        canaries = trainer_of(request).canaries
        try:
            verdict = await (canaries.promote(domain) if decision == "promote" else canaries.rollback(domain))
        except AdapterError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"domain": domain, **asdict(verdict)}

    app.include_router(admin)
    return app


async def require_admin_key(request: Request) -> None:
    key = request.app.state.trainer.settings.admin_key
    if key is None:
        raise HTTPException(403, "the trainer's API is disabled: no admin key is configured (COWEST_ADMIN_KEY)")
    if not auth.matches(auth.bearer_token(request.headers.get("authorization")), [key.get_secret_value()]):
        raise HTTPException(401, "invalid or missing admin key", headers={"WWW-Authenticate": "Bearer"})


def main() -> None:
    settings = TrainerSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
