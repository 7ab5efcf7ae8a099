"""`cowest eval|report|demo`: the paper's experiment on the running stack (the harness is `evaluation/`)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import typer
from rich.markdown import Markdown

from cowest.cli.console import ProgressBars, console, fail
from cowest.cli.stack import start_stack
from cowest.stack import Stack
from evaluation.harness import MODES, EvalRun, evaluate
from evaluation.report import write_report
from shared.config import CowestSettings
from shared.data import loaders
from shared.data.example import Example

app = typer.Typer()


def eval_dir() -> Path:
    return CowestSettings().home_dir / "eval"


def _examples(
    domain: str, split: str, data: Path | None, limit: int | None, seed: int, size: int, eval_size: int | None
) -> list[Example]:
    if data:
        return loaders.load_jsonl(data, domain)[:limit]
    if module := loaders.generated(domain):
        return module.generate(seed=seed, size=size, eval_size=eval_size)["train" if split == "train" else "eval"][
            :limit
        ]
    return loaders.load(domain, split, limit)


@app.command("eval")
def eval_command(
    domain: str = typer.Option(..., "--domain", "-d"),
    split: str = typer.Option("eval", help="train | eval | test"),
    limit: int = typer.Option(None, help="the first N items"),
    modes: str = typer.Option("weak,strong,collab", help=f"comma-separated: {', '.join(MODES)}"),
    adapter: str = typer.Option(None, help="weak adapter version for weak/collab ('base': none; default: active)"),
    data: Path = typer.Option(None, exists=True, dir_okay=False, help="a JSONL file in the harness schema"),
    label: str = typer.Option(None, help="row name in reports (one mode only)"),
    concurrency: int = typer.Option(
        None, help="requests in flight [default: 8 for weak, the strong server's capacity for the other modes]"
    ),
    seed: int = typer.Option(0, help="synthetic domain: generator seed"),
    size: int = typer.Option(120, help="synthetic domain: generated questions"),
    eval_size: int = typer.Option(None, help="synthetic domain: eval questions"),
    max_tokens: int = typer.Option(None, help="per stage (default: serving's limits)"),
) -> None:
    """Score a domain's split through the running stack (orchestrator -> vLLM); resumable."""
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    if bad := [m for m in chosen if m not in MODES]:
        fail(f"unknown mode(s) {', '.join(bad)}: choose from {', '.join(MODES)}")
    if label and len(chosen) > 1:
        fail("--label names one run: give one mode with it")
    try:
        examples = _examples(domain, split, data, limit, seed, size, eval_size)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    stack = Stack()
    url = stack.orchestrator_url
    with ProgressBars() as bars:
        for mode in chosen:
            # The embedded strong server serves `Profile.strong_in_flight` at once (the trainer's concurrency).
            in_flight = concurrency or (8 if mode == "weak" else stack.trainer_settings().concurrency)
            run = EvalRun(
                domain,
                mode,
                adapter=adapter if mode != "strong" else None,
                label=label,
                concurrency=in_flight,
                weak_max_tokens=max_tokens,
                strong_max_tokens=max_tokens,
            )
            try:
                meta = asyncio.run(
                    evaluate(
                        url,
                        run,
                        examples,
                        eval_dir(),
                        api_key=os.environ.get("COWEST_API_KEY"),
                        on_progress=lambda d, t, m=mode: bars(f"{domain} {m}", d, t),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - httpx errors at start-up: the stack is not there
                fail(f"{mode}: {exc} (is the stack up? `cowest up`)")
            console.print(f"{meta['label']}: {meta['items']} items, {meta['errors']} errors, {meta['wall_s']:.0f}s")
    _report(None, "CoWest evaluation", plots=True)


@app.command()
def report(
    out: Path = typer.Option(None, help="markdown file (default COWEST_HOME/report/report.md)"),
    title: str = typer.Option("CoWest evaluation"),
    plots: bool = typer.Option(True),
) -> None:
    """Markdown table in the paper's format + PNG plots from every evaluation result so far."""
    _report(out, title, plots)


def _report(out: Path | None, title: str, plots: bool) -> None:
    out = out or CowestSettings().home_dir / "report" / "report.md"
    try:
        path, _ = write_report(eval_dir(), out, title, with_plots=plots)
    except FileNotFoundError as exc:
        fail(str(exc))
    text = path.read_text()
    console.print(Markdown(text.split("## Cost")[0]))
    console.print(f"report: {path}")


@app.command()
def demo(
    domain: str = typer.Option(
        None, "--domain", "-d", help="synthetic (default), a paper domain, or a name for --domain-dir"
    ),
    domain_dir: Path = typer.Option(None, exists=True, file_okay=False, help="train.jsonl + eval.jsonl of any domain"),
    profile: str = typer.Option(None, "--profile", "-p", help="default | fast | tiny"),
    # Sizes left unset take DemoConfig's defaults (evaluation/demo.py), sized for ~30 min on 2 cores.
    seed: int = typer.Option(None, help="synthetic domain: which fictional company [default: 0]"),
    size: int = typer.Option(None, help="synthetic domain: questions generated [default: 240]"),
    eval_size: int = typer.Option(None, help="synthetic domain: eval questions (more new questions, same facts)"),
    rounds: int = typer.Option(None, help="DPO rounds [default: 1]"),
    feedback_limit: int = typer.Option(None, help="train questions turned into pairs per round [default: 24]"),
    traffic: int = typer.Option(None, help="train questions also replayed as live traffic per round [default: 0]"),
    train_limit: int = typer.Option(None, help="SFT rows (default: the whole train split)"),
    eval_limit: int = typer.Option(None, help="evaluation items (default: the whole eval split)"),
    sft_steps: int = typer.Option(None, help="the most SFT steps [default: 200]"),
    sft_epochs: float = typer.Option(None, help="SFT passes over the train rows [default: 2.0]"),
    dpo_steps: int = typer.Option(
        None, help="most DPO steps per round (the trainer sizes them from the pairs) [default: 40]"
    ),
    concurrency: int = typer.Option(None, help="requests in flight where only the weak model answers [default: 8]"),
    report_out: Path = typer.Option(None, "--report", help="default COWEST_HOME/report/report.md"),
) -> None:
    """The closed loop: SFT -> eval -> collaborative feedback over the train split -> DPO rounds -> eval -> report.
    Starts the stack when it is not running and leaves it running."""
    from evaluation.demo import Demo, DemoConfig

    domain = domain or (domain_dir.name if domain_dir else "synthetic")
    sizes = dict(
        seed=seed,
        size=size,
        eval_size=eval_size,
        rounds=rounds,
        traffic_limit=traffic,
        feedback_limit=feedback_limit,
        train_limit=train_limit,
        eval_limit=eval_limit,
        sft_steps=sft_steps,
        sft_epochs=sft_epochs,
        dpo_steps=dpo_steps,
        concurrency=concurrency,
    )
    cfg = DemoConfig(
        domain=domain,
        domain_dir=domain_dir,
        command="cowest " + " ".join(sys.argv[1:]),
        **{k: v for k, v in sizes.items() if v is not None},
    )
    stack = Stack()
    start_stack(stack, profile, timeout=900)
    t0 = time.monotonic()
    with ProgressBars() as bars:
        runner = Demo(
            cfg,
            stack.trainer_settings(),
            stack.orchestrator_url,
            stack.trainer_url,
            eval_dir(),
            say=lambda m: bars.progress.console.print(m, highlight=False),
            progress=bars,
        )
        try:
            asyncio.run(runner.run())
        except (ValueError, TimeoutError, FileNotFoundError, RuntimeError) as exc:
            fail(f"demo stopped: {exc}")
    console.print(f"demo loop finished in {(time.monotonic() - t0) / 60:.1f} min")
    _report(report_out, "CoWest demo", plots=True)
    console.print(
        f"\nThe stack is still running.\n"
        f'  Ask it:    cowest ask --domain {domain} "..."   or any OpenAI client: '
        f"base_url={stack.orchestrator_url}/v1, "
        f"model=cowest/{domain}\n"
        f"  Inspect:   cowest status; cowest adapters list --domain {domain}\n"
        f"  Stop it:   cowest down"
    )
