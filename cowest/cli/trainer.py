"""`cowest sft|train`, `cowest adapters list|show|rollback`, `cowest feedback build`.

`sft`, `train` and `rollback` run the trainer's parts in this process against the running stack (its weak
vLLM server, strong model and Redis), which the trainer service (`cowest up`) shares through Redis and the
adapter registry; `adapters list|show` read the registry (and the active alias) only; `feedback build` asks
the trainer service over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.table import Table

from cowest.cli.console import console, fail
from cowest.stack import Stack
from services.trainer.config import TrainerSettings
from services.trainer.registry import AdapterError, AdapterRegistry
from shared import auth, redis_keys
from shared.adapters import get_active_adapter, get_canary
from shared.data import loaders
from shared.data.synthetic import is_fact_card

adapters_app = typer.Typer(help="Versioned LoRA adapters of the weak model.", no_args_is_help=True)
feedback_app = typer.Typer(help="Collaborative feedback: preference pairs for DPO.", no_args_is_help=True)


app = typer.Typer()


def _settings(**overrides) -> TrainerSettings:
    """The trainer's settings for the running stack (explicit COWEST_TRAINER_* settings apply)."""
    return Stack().trainer_settings().model_copy(update=overrides)


def _trainer(settings: TrainerSettings):
    from services.trainer.app import Trainer

    return Trainer(settings)


@adapters_app.command("list")
def adapters_list(domain: str = typer.Option(None)) -> None:
    """Every registered version, with the active one marked (*), and a canary's candidate with its share."""
    settings = _settings()
    registry = AdapterRegistry(settings.adapters_dir)

    async def go():
        redis = redis_keys.connect(settings.endpoints.redis_url)
        try:
            table = Table("domain", "version", "kind", "round", "pairs", "parent", "active", "metrics")
            for d in [domain] if domain else registry.domains():
                active, canary = await get_active_adapter(redis, d), await get_canary(redis, d)
                for m in registry.versions(d):
                    mark = "*" if active == m.name else ""
                    if canary is not None and canary.adapter == m.name:
                        mark = f"canary {canary.weight:.0%}"
                    metrics = ", ".join(f"{k}={v:.3g}" for k, v in m.metrics.items() if isinstance(v, float))
                    table.add_row(
                        d,
                        m.name,
                        m.kind,
                        str(m.round or "-"),
                        str(m.pairs or "-"),
                        m.parent or "-",
                        mark,
                        metrics,
                    )
            console.print(table)
        finally:
            await redis.aclose()

    asyncio.run(go())


@adapters_app.command("show")
def adapters_show(name: str) -> None:
    """One version's manifest."""
    try:
        console.print_json(AdapterRegistry(_settings().adapters_dir).get(name).model_dump_json())
    except AdapterError as exc:
        fail(str(exc))


@adapters_app.command("rollback")
def adapters_rollback(domain: str = typer.Option(..., "--domain", "-d")) -> None:
    """Point the domain back at its previous version (the base model when there is none)."""

    async def go():
        t = _trainer(_settings())
        try:
            return await t.swapper.rollback(domain)
        finally:
            await t.aclose()

    try:
        previous = asyncio.run(go())
    except AdapterError as exc:
        fail(str(exc))
    console.print(f"{domain}: active adapter is now {previous or 'the base model'}")


@app.command()
def train(
    domain: str = typer.Option(..., "--domain", "-d"),
    data: Path = typer.Option(..., exists=True),
    limit: int = typer.Option(None, help="use the first N items"),
) -> None:
    """Build collaborative-feedback pairs from a labelled JSONL set, then run one gated DPO round."""

    async def go():
        t = _trainer(_settings(domains=[domain]))
        try:
            await t.sync_domains()  # a domain registered at runtime: its spec's prompts and metric
            items = loaders.load_jsonl(data, domain)[:limit]
            with console.status(f"collaborative feedback on {len(items)} questions"):
                counts = await asyncio.gather(*(t.collector.process_item(i) for i in items))
            console.print(
                f"{sum(counts)} pairs from {len(items)} questions "
                f"({len(await t.store.heldout(domain))} held out for the gate)"
            )
            with console.status("DPO round: train, gate, swap"):
                return await t.rounds.run(domain, force=True)
        finally:
            await t.aclose()

    result = asyncio.run(go())
    console.print(
        f"round {result.round}: [bold]{result.status}[/] {result.detail} "
        f"(candidate {result.candidate}, gate {result.candidate_score} vs {result.active_score})"
    )


@app.command()
def sft(
    domain: str = typer.Option(..., "--domain", "-d"),
    data: Path = typer.Option(..., exists=True),
    steps: int = typer.Option(60, help="the most steps"),
    learning_rate: float = typer.Option(1e-3),
    epochs: float = typer.Option(None, help="passes over the rows (at most --steps)"),
    stop_rows: int = typer.Option(0, help="hold out N rows for the stop rule (held-out loss, best kept)"),
    threads: int = typer.Option(1, help="torch threads (2 only while the model servers are idle)"),
) -> None:
    """LoRA SFT of the weak model on domain data (rationale + answer): the domain's first adapter."""
    from services.trainer.sft import hold_out, train_sft_adapter

    settings = _settings()
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    rows, held = hold_out(rows, stop_rows, lambda r: not is_fact_card(r))  # new questions about the same facts

    async def go():
        t = _trainer(settings)
        try:
            await t.sync_domains()  # train on the prompt the domain is served with
            with console.status(f"SFT on {len(rows)} examples, {steps} steps"):
                return await train_sft_adapter(
                    rows,
                    domain,
                    t.registry,
                    t.swapper,
                    settings.endpoints.weak_model,
                    settings.base_model_dir,
                    steps=steps,
                    learning_rate=learning_rate,
                    epochs=epochs,
                    stop_rows=held or None,
                    threads=threads,
                )
        finally:
            await t.aclose()

    try:
        result = asyncio.run(go())
    except (AdapterError, RuntimeError, ValueError) as exc:
        fail(str(exc))
    m = result.metrics
    console.print(
        f"{result.adapter}: SFT loss {m['loss'][0]:.3f} -> {m['loss'][-1]:.3f} "
        f"({m['steps']} steps, {m['seconds_per_step']:.1f}s/step); active for {domain} "
        f"(swap {result.swap_seconds:.2f}s)"
    )
    if m.get("eval_loss"):
        curve = ", ".join(f"{e['step']}: {e['loss']:.3f}" for e in m["eval_loss"])
        console.print(
            f"held-out loss by step: {curve}; best step {m['best_step']}"
            + ("; stopped early" if m["stopped_early"] else "")
        )


@feedback_app.command("replay-dead")
def feedback_replay_dead() -> None:
    """Put the trainer's dead-lettered entries (feedback it gave up on: a model server down past its retries, a
    trace that never came) back on their streams, once the cause is mended."""
    import httpx

    try:
        stack = Stack()
        r = httpx.post(
            f"{stack.trainer_url}/dead-letter/replay", headers=auth.admin_headers(stack.admin_key()), timeout=60
        )
        r.raise_for_status()
    except httpx.HTTPError as exc:
        fail(f"the trainer did not replay the dead letters: {exc}")
    console.print(f"{r.json()['replayed']} dead-lettered entries are back on their streams")


@feedback_app.command("build")
def feedback_build(
    domain: str = typer.Option(..., "--domain", "-d"),
    split: str = typer.Option("train", help="the split to build pairs over (the paper: train)"),
    data: Path = typer.Option(None, exists=True, help="a JSONL file instead of a built-in split"),
    limit: int = typer.Option(
        None, help="at most N questions become pairs (held-out ones are always recorded: they cost no model call)"
    ),
    timeout: float = typer.Option(7200, help="seconds to wait for the trainer"),
) -> None:
    """The paper's collaborative-feedback protocol over a labelled split, run by the trainer service: K drafts
    per question, strong with each draft vs strong alone, pairs stored for the next DPO round."""
    import httpx

    try:
        examples = loaders.load_jsonl(data, domain) if data else loaders.load(domain, split)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    items = [
        {"id": e.id, "question": e.question, "answer": e.answers[0], "context": e.context}
        for e in examples
        if not is_fact_card(e)
    ]
    with console.status(f"collaborative feedback on {len(items)} questions (limit {limit})"):
        try:
            stack = Stack()
            r = httpx.post(
                f"{stack.trainer_url}/feedback/build",
                headers=auth.admin_headers(stack.admin_key()),
                timeout=timeout,
                json={"domain": domain, "items": items, "limit": limit},
            )
            r.raise_for_status()
        except httpx.HTTPError as exc:
            fail(f"the trainer did not build feedback: {exc}")
    out = r.json()
    console.print(
        f"{domain}: {out['processed']} questions processed in {out['seconds']:.0f}s, {out['pairs']} pairs "
        f"(yield {out['pair_yield']:.0%} of questions), {out['heldout']} held out ({out['gate_items']} distinct "
        f"questions for the gate), "
        f"{out['waiting']} already waiting"
    )
    console.print(
        "Δ histogram (draft helped > 0): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(out["delta_histogram"].items(), key=lambda kv: float(kv[0])))
    )
