"""The closed loop of `make demo` / `cowest demo`, on a running stack:

    SFT the weak adapter on the domain's train split -> evaluate weak / strong / collaboration
    -> per round: collaborative feedback over the train split (the paper's protocol, run by the trainer:
       POST /feedback/build; held-out questions go to the gate), optionally some train questions as live
       traffic through /v1/collaborate with gold feedback -> POST /train: DPO, gate, hot swap -> evaluate
    -> report (table + plots)

Everything goes over the services' real interfaces (orchestrator HTTP, trainer HTTP, Redis streams);
only the SFT job runs in this process, as `cowest sft` does. Automatic rounds of the demo's domain
are paused while it runs so that each evaluation sees exactly one more round.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from evaluation.harness import EvalRun, evaluate
from evaluation.steps import choose_default_mode, knowledge_step, true_facts
from services.trainer.config import TrainerSettings
from services.trainer.registry import AdapterRegistry
from services.trainer.sft import hold_out, train_sft_adapter
from services.trainer.store import TrainerStore
from services.trainer.swap import AdapterSwapper
from shared import auth, domains, redis_keys
from shared.data import loaders
from shared.data.example import Example
from shared.data.synthetic import is_fact_card
from shared.domains import DomainSpec
from shared.knowledge import Knowledge
from shared.metrics import normalize
from shared.modes import LABELS, DefaultMode
from shared.redis_keys import FEEDBACK_STREAM, TRACES_STREAM, TRAINER_GROUP

PAUSE_TTL_S = 3 * 3600  # longer than any one phase
# Building feedback over a split or training a round takes up to hours on 2 cores; never forever.
TRAINER_CALL = httpx.Timeout(6 * 3600.0, connect=10.0)


@dataclass
class DemoConfig:
    domain: str = "synthetic"
    domain_dir: Path | None = None  # train.jsonl + eval.jsonl in the harness schema: any domain, no code
    seed: int = 0  # synthetic domain: which fictional company
    # Synthetic domain: reasoning questions generated (train + eval). 240 gives the gate 24 distinct held-out
    # questions (it needs 20; 200 gave 15) and 40 eval questions.
    size: int = 240
    eval_size: int | None = None  # synthetic domain: more eval questions about the same facts
    train_limit: int | None = None  # SFT rows
    eval_limit: int | None = None
    # Sizes that keep `make demo` near 30 minutes on 2 cores: collecting feedback (1 + K strong calls and
    # K drafts per question) dominates a round, then SFT.
    feedback_limit: int | None = 24  # train questions turned into pairs per round (bulk, the paper's protocol)
    # One round fits ~30 min here (a round: ~7 min of feedback, the gate, DPO, an evaluation); --rounds 2+ for more.
    traffic_limit: int | None = 0  # train questions also sent as live traffic with feedback per round
    rounds: int = 1
    # SFT sized from the data: `sft_epochs` passes over the train rows, at most `sft_steps`, stopped by the loss on
    # `sft_stop_rows` training questions held out (measured: held-out loss still falling at 2 epochs; weak alone
    # 45.0 EM and 51% fact recall vs 37.5 and 35% after the earlier fixed 45 steps: bench/results/sft_sizing.md).
    sft_epochs: float | None = 2.0
    sft_steps: int = 200
    sft_stop_rows: int = 20
    sft_learning_rate: float = 1e-3
    # The servers are idle while the demo trains (it sends nothing meanwhile): two torch threads, not one
    # (DPO 14 s/step instead of 22: bench/dpo_step.py --threads 1|2, back to back).
    train_threads: int = 2
    concurrency: int = 8  # requests in flight where only the weak model answers (vLLM batches them)
    # ... and where the strong model answers too (None: the trainer's, which the stack sizes to the embedded
    # strong server: `Profile.strong_in_flight`).
    strong_concurrency: int | None = None
    dpo_steps: int = 40  # at most, per round: the trainer sizes the steps from the pairs (epochs)
    weak_max_tokens: int | None = None  # None: serving's limits (a synthetic rationale is ~160 tokens of 256)
    strong_max_tokens: int | None = None
    drain_timeout_s: float = 3600.0
    command: str = "cowest demo"


@dataclass
class DemoState:
    phases: list[dict] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    knowledge: dict = field(default_factory=dict)  # the knowledge step: source, statements, coverage, extraction
    default_mode: dict = field(default_factory=dict)  # the measured default (shared/modes.py DefaultMode)


def load_domain(cfg: DemoConfig) -> tuple[list[Example], list[Example]]:
    """(train, eval) of the demo's domain."""
    if cfg.domain_dir:
        train = loaders.load_jsonl(cfg.domain_dir / "train.jsonl", cfg.domain)
        evaluation = loaders.load_jsonl(cfg.domain_dir / "eval.jsonl", cfg.domain)
    elif module := loaders.generated(cfg.domain):
        splits = module.generate(seed=cfg.seed, size=cfg.size, eval_size=cfg.eval_size)
        train, evaluation = splits["train"], splits["eval"]
    else:
        train, evaluation = loaders.load(cfg.domain, "train"), loaders.load(cfg.domain, "eval")
    overlap = {e.question for e in train} & {e.question for e in evaluation}
    evaluation = [e for e in evaluation if e.question not in overlap]  # never score on training questions
    return train[: cfg.train_limit], evaluation[: cfg.eval_limit]


def load_spec(cfg: DemoConfig, evaluation: list[Example]) -> DomainSpec | None:
    """A domain directory's spec (None: the general task wording and metric). Its worked examples must not be
    evaluation questions: a demonstration that is also scored would be a leak."""
    spec = domains.read_dir_spec(cfg.domain_dir, name=cfg.domain) if cfg.domain_dir else None
    if spec:
        scored = {normalize(e.question) for e in evaluation}
        if leaked := [d.question for d in spec.demonstrations if normalize(d.question) in scored]:
            raise ValueError(
                f"{cfg.domain}: demonstrations must come from the train split; these are evaluation "
                f"questions: {leaked}"
            )
    return spec


def traffic_items(train: list[Example], cfg: DemoConfig) -> list[Example]:
    """The train questions replayed as live traffic: real questions (the synthetic domain's fact cards are
    SFT material, not questions users ask), a seeded sample of `traffic_limit`."""
    pool = [e for e in train if not is_fact_card(e)]
    random.Random(cfg.seed).shuffle(pool)
    return pool[: cfg.traffic_limit]


class Demo:
    def __init__(
        self,
        cfg: DemoConfig,
        trainer: TrainerSettings,
        orchestrator_url: str,
        trainer_url: str,
        eval_dir: Path,
        say: Callable[[str], None] = print,
        progress: Callable[[str, int, int], None] = lambda what, done, total: None,
    ):
        self.cfg, self.trainer, self.eval_dir = cfg, trainer, eval_dir
        self.orchestrator_url, self.trainer_url = orchestrator_url, trainer_url
        self.admin = auth.admin_headers(trainer.admin_key)  # the trainer's API and domain registration
        self.say, self.progress = say, progress
        self.state = DemoState()
        self.domain_dir = eval_dir / cfg.domain
        self.selection_dir = eval_dir.parent / "selection"  # train items the default mode is chosen on
        self.held_out: list[Example] = []  # training questions held out from SFT (set by `sft`)
        self.strong_concurrency = cfg.strong_concurrency or trainer.concurrency

    # --- phases -----------------------------------------------------------------------------
    async def phase(self, name: str, coro):
        self.say(f"== {name}")
        await self.store.set_manual_rounds(self.cfg.domain, True, ttl_s=PAUSE_TTL_S)  # renewed each phase
        t0 = time.perf_counter()
        result = await coro
        self.state.phases.append({"phase": name, "seconds": round(time.perf_counter() - t0, 1)})
        self._save()
        return result

    def _save(self) -> None:
        self.domain_dir.mkdir(parents=True, exist_ok=True)
        (self.domain_dir / "demo.json").write_text(
            json.dumps(
                {
                    "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()},
                    "command": self.cfg.command,
                    "phases": self.state.phases,
                    "knowledge": self.state.knowledge,
                    "default_mode": self.state.default_mode,
                },
                indent=2,
            )
        )
        (self.domain_dir / "training.json").write_text(json.dumps(self.state.rounds, indent=2))

    async def evaluate(
        self, examples: list[Example], mode: str, label: str, round_: int | None = None, lookup: bool | None = None
    ) -> dict:
        run = EvalRun(
            self.cfg.domain,
            mode,
            label=label,
            round=round_,
            lookup=lookup,
            concurrency=self.cfg.concurrency if mode == "weak" else self.strong_concurrency,
            weak_max_tokens=self.cfg.weak_max_tokens,
            strong_max_tokens=self.cfg.strong_max_tokens,
        )
        meta = await evaluate(
            self.orchestrator_url,
            run,
            examples,
            self.eval_dir,
            on_progress=lambda done, total: self.progress(f"eval {label}", done, total),
        )
        self.say(f"   {label}: {meta['items']} items, {meta['errors']} errors, {meta['wall_s']:.0f}s")
        return meta

    async def knowledge(self, train: list[Example], evaluation: list[Example]) -> Knowledge | None:
        cfg = self.cfg
        truth = true_facts(cfg.domain, cfg.domain_dir, cfg.seed, cfg.size)
        knowledge, self.state.knowledge = knowledge_step(
            cfg.domain, cfg.domain_dir, train, evaluation, truth, self.say
        )
        return knowledge

    async def sft(self, train: list[Example], knowledge: Knowledge | None = None) -> str:
        registry = AdapterRegistry(self.trainer.adapters_dir)
        redis = redis_keys.connect(self.trainer.endpoints.redis_url)
        swapper = AdapterSwapper(self.trainer, registry, redis)
        try:
            rows, stop = self.split_for_sft(train)
            self.held_out = [e for e in train if e.id in {r["id"] for r in stop}]
            result = await train_sft_adapter(
                rows,
                self.cfg.domain,
                registry,
                swapper,
                self.trainer.endpoints.weak_model,
                self.trainer.base_model_dir,
                steps=self.cfg.sft_steps,
                learning_rate=self.cfg.sft_learning_rate,
                threads=self.cfg.train_threads,
                epochs=self.cfg.sft_epochs,
                stop_rows=stop or None,
                knowledge=knowledge,
            )
        finally:
            await swapper.aclose()
            await redis.aclose()
        loss = result.metrics["loss"]
        self.say(
            f"   {result.adapter}: SFT on {len(rows)} rows, {result.metrics['steps']} steps, loss "
            f"{loss[0]:.3f} -> {loss[-1]:.3f}, {result.metrics['seconds_per_step']:.1f}s/step"
            + (
                f", held-out loss {result.metrics['eval_loss'][-1]['loss']:.3f} (best step "
                f"{result.metrics['best_step']})"
                if result.metrics.get("eval_loss")
                else ""
            )
        )
        return result.adapter

    def split_for_sft(self, train: list[Example]) -> tuple[list[dict], list[dict]]:
        """(SFT rows, training questions held out from SFT): the stop rule's rows, and the items the default mode is
        chosen on (training questions the adapter never saw; evaluation items are never used to choose)."""
        return hold_out([e.model_dump() for e in train], self.cfg.sft_stop_rows, lambda r: not is_fact_card(r))

    async def choose_mode(self, adapter: str, knowledge: Knowledge | None) -> DefaultMode:
        record = await choose_default_mode(
            self.orchestrator_url,
            self.trainer.endpoints.redis_url,
            self.held_out,
            adapter,
            knowledge is not None,
            self.selection_dir,
            self.strong_concurrency,
        )
        self.state.default_mode = record.model_dump()
        self.say(f"   default mode: {LABELS[record.choice]} ({record.reason})")
        return record

    async def traffic(self, items: list[Example], round_: int) -> list[str]:
        """Each question through /v1/collaborate, then its gold answer as feedback (what the product's
        users send when they correct an answer)."""
        sem = asyncio.Semaphore(self.strong_concurrency)
        ids: list[str] = []
        async with httpx.AsyncClient(base_url=self.orchestrator_url, timeout=600) as client:

            async def one(ex: Example) -> None:
                async with sem:
                    r = await client.post(
                        "/v1/collaborate",
                        json={
                            "question": ex.question,
                            "domain": ex.domain,
                            "context": ex.context,
                            "metadata": {"source": "demo-traffic", "round": round_, "item": ex.id},
                        },
                    )
                    r.raise_for_status()
                    trace_id = r.json()["id"]
                    gold = ex.answer if isinstance(ex.answer, str) else ex.answer[0]
                    fb = await client.post("/v1/feedback", json={"id": trace_id, "correct_answer": gold})
                    fb.raise_for_status()
                    ids.append(trace_id)
                    self.progress(f"round {round_} traffic", len(ids), len(items))

            await asyncio.gather(*(one(e) for e in items))
        return ids

    async def build_feedback(self, train: list[Example], round_: int) -> dict:
        """The paper's protocol over the train split, run by the trainer: every held-out question goes to the
        gate; up to `feedback_limit` others get K drafts, strong with each vs strong alone, pairs."""
        items = [
            {"id": e.id, "question": e.question, "answer": e.answers[0], "context": e.context}
            for e in train
            if not is_fact_card(e)
        ]
        random.Random(self.cfg.seed + round_).shuffle(items)  # a different slice of the split each round
        async with httpx.AsyncClient(base_url=self.trainer_url, timeout=TRAINER_CALL, headers=self.admin) as client:
            r = await client.post(
                "/feedback/build", json={"domain": self.cfg.domain, "items": items, "limit": self.cfg.feedback_limit}
            )
            r.raise_for_status()
        out = r.json()
        self.say(
            f"   {out['processed']} questions -> {out['pairs']} pairs (yield {out['pair_yield']:.0%}), "
            f"{out['heldout']} held out ({out['gate_items']} distinct questions for the gate), {out['seconds']:.0f}s"
        )
        return out

    async def drained(self) -> None:
        """Wait until the trainer's consumer group has read and acknowledged every trace and feedback
        entry: then every question's pairs are stored."""
        redis = redis_keys.connect(self.trainer.endpoints.redis_url)
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        try:
            while time.monotonic() < deadline:
                backlog = 0
                for stream in (TRACES_STREAM, FEEDBACK_STREAM):
                    group = next((g for g in await redis.xinfo_groups(stream) if g["name"] == TRAINER_GROUP), None)
                    if group is None:
                        backlog += 1  # the trainer has not created its group yet
                        continue
                    backlog += int(group.get("pending") or 0) + int(group.get("lag") or 0)
                pending = await self._trainer_status()
                self.progress("collaborative feedback", pending.get("processed_questions", 0), -1)
                if backlog == 0:
                    return
                await asyncio.sleep(2)
            raise TimeoutError(f"the trainer did not drain the feedback streams in {self.cfg.drain_timeout_s:.0f}s")
        finally:
            await redis.aclose()

    async def _trainer_status(self) -> dict:
        async with httpx.AsyncClient(base_url=self.trainer_url, timeout=30, headers=self.admin) as client:
            r = await client.get("/status")
            r.raise_for_status()
            return r.json()

    async def train_round(self, demo_round: int, feedback: dict | None = None) -> dict:
        async with httpx.AsyncClient(base_url=self.trainer_url, timeout=TRAINER_CALL, headers=self.admin) as client:
            r = await client.post(
                "/train",
                json={
                    "domain": self.cfg.domain,
                    "force": True,
                    "max_steps": self.cfg.dpo_steps,
                    "threads": self.cfg.train_threads,
                },
            )
            r.raise_for_status()
            result = r.json() | {"demo_round": demo_round, "feedback": feedback}
        self.state.rounds.append(result)
        t = result.get("train") or {}
        self.say(
            f"   round {demo_round}: {result['status']} ({result['detail']}); {result['pairs']} pairs"
            + (f", DPO loss {t['loss'][0]:.3f} -> {t['loss'][-1]:.3f}" if t.get("loss") else "")
        )
        return result

    async def register(self, spec: DomainSpec) -> None:
        """The domain's spec to every service (through the orchestrator's API) and to this process (scoring)."""
        async with httpx.AsyncClient(base_url=self.orchestrator_url, timeout=30, headers=self.admin) as client:
            r = await client.put(f"/v1/domains/{spec.name}", json=spec.model_dump(mode="json", exclude_none=True))
        if r.status_code >= 400:
            raise ValueError(f"the orchestrator refused the domain spec ({r.status_code}): {r.text}")
        domains.register_local(spec)
        self.say(f"   domain {spec.name!r} registered ({spec.metric.type}, {len(spec.demonstrations)} demonstrations)")

    # --- the whole loop ---------------------------------------------------------------------
    async def run(self) -> DemoState:
        cfg = self.cfg
        train, evaluation = load_domain(cfg)
        if not train or not evaluation:
            raise ValueError(f"{cfg.domain}: need train and eval examples, got {len(train)} and {len(evaluation)}")
        if spec := load_spec(cfg, evaluation):
            await self.register(spec)
        if self.domain_dir.exists():  # results of an earlier demo on this domain name other adapter versions
            shutil.rmtree(self.domain_dir)
        shutil.rmtree(self.selection_dir / cfg.domain, ignore_errors=True)
        self.say(f"{cfg.domain}: {len(train)} train, {len(evaluation)} eval examples")
        redis = redis_keys.connect(self.trainer.endpoints.redis_url)
        self.store = TrainerStore(redis)
        try:
            await self.store.set_manual_rounds(cfg.domain, True, ttl_s=PAUSE_TTL_S)
            await self.store.reset(cfg.domain)  # a fresh experiment: no pairs or gate items of an earlier run
            knowledge = await self.phase("knowledge: the domain's fact statements", self.knowledge(train, evaluation))
            adapter = await self.phase("SFT of the weak adapter", self.sft(train, knowledge))
            await self.phase(
                "choose the default mode on training questions held out from SFT",
                self.choose_mode(adapter, knowledge),
            )
            await self.phase("evaluate weak alone", self.evaluate(evaluation, "weak", "Weak alone (SFT)"))
            await self.phase("evaluate strong alone", self.evaluate(evaluation, "strong", "Strong alone"))
            if knowledge is not None:  # what a user would build instead: the strong model with the same lookup
                await self.phase(
                    "evaluate strong + retrieval",
                    self.evaluate(evaluation, "strong", "Strong + retrieval", lookup=True),
                )
            await self.phase(
                "evaluate collaboration",
                self.evaluate(evaluation, "collab", "Collaboration (SFT adapter, before DPO)", round_=0),
            )
            if all(e.rationale for e in evaluation):  # the ceiling: the strong model given the gold rationale
                await self.phase(
                    "evaluate the oracle",
                    self.evaluate(evaluation, "oracle", "Oracle: strong refining the gold rationale"),
                )
            items = traffic_items(train, cfg)
            for r in range(1, cfg.rounds + 1):
                if items:
                    await self.phase(
                        f"round {r}: live traffic with feedback ({len(items)} questions)", self.traffic(items, r)
                    )
                    await self.phase(f"round {r}: collaborative feedback on the traffic (trainer)", self.drained())
                feedback = await self.phase(
                    f"round {r}: collaborative feedback over the train split (trainer)", self.build_feedback(train, r)
                )
                result = await self.phase(f"round {r}: DPO, gate, swap (trainer)", self.train_round(r, feedback))
                if result["status"] == "promoted":
                    await self.phase(
                        f"round {r}: evaluate collaboration",
                        self.evaluate(evaluation, "collab", f"CoWest after DPO round {r}", round_=r),
                    )
                else:
                    self.say(f"   round {r} did not change the active adapter: no new evaluation")
        finally:
            await self.store.set_manual_rounds(cfg.domain, False)
            await redis.aclose()
            self._save()
        return self.state
