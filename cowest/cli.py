"""`cowest`: provision models and run the local stack.

    cowest models pull [--profile default|fast|tiny] [--model KEY]
    cowest models list
    cowest up [--profile ...]     start Redis (if none answers), the weak and strong vLLM servers, the orchestrator
    cowest status [--json]        health, pid, port, model and loaded adapters of each part
    cowest down                   SIGTERM each process group, SIGKILL after --timeout
    cowest chat weak|strong "..." one chat completion through the official openai client
    cowest ask "..."              one collaboration (weak draft -> strong answer) via the orchestrator
    cowest sft --domain D --data F    LoRA SFT: the domain's first adapter, activated
    cowest train --domain D --data F  collaborative-feedback pairs + one gated DPO round
    cowest adapters list|show|rollback
    cowest eval --domain D [--modes weak,strong,collab] [--adapter V] [--limit N]   score through the stack
    cowest report                 markdown table (paper format) + PNG plots of every evaluation
    cowest demo [--domain-dir P]  the closed loop: SFT -> eval -> traffic + feedback -> DPO rounds -> eval -> report
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cowest.console import console, err_console, fail
from cowest.models import ModelPullError, pull_model
from cowest.models.pull import profile_pulls
from cowest.models.pull import is_complete, model_dir
from cowest.processes import StackError
from cowest.stack import SERVERS, Stack
from cowest.eval_cli import demo, eval_command, report
from cowest.trainer_cli import adapters_app, feedback_app, sft, train
from shared.config import CowestSettings
from shared.models import MODELS, get_model

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Provision model weights into COWEST_HOME/models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(adapters_app, name="adapters")
app.add_typer(feedback_app, name="feedback")
app.command()(train)
app.command()(sft)
app.command("eval")(eval_command)
app.command()(report)
app.command()(demo)

ProfileOpt = typer.Option(None, "--profile", "-p", help="default | fast | tiny (default: COWEST_PROFILE)")


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err_console, transient=False)


@models_app.command("pull")
def models_pull(profile: str = ProfileOpt,
                model: list[str] = typer.Option(None, "--model", "-m", help="a model key (repeatable)")) -> None:
    """Download, verify and convert the models of a profile (idempotent: cached entries are reused)."""
    settings = CowestSettings()
    try:
        jobs = [(get_model(k), pull_model) for k in model] if model else profile_pulls(profile or settings.profile)
    except ValueError as exc:
        fail(str(exc))
    for spec, pull in jobs:
        with _progress() as progress:
            task = progress.add_task(f"{spec.key}: starting")
            try:
                result = pull(settings, spec, lambda m: progress.update(task, description=f"{spec.key}: {m}"))
            except ModelPullError as exc:
                progress.update(task, description=f"{spec.key}: failed")
                progress.stop()
                fail(str(exc))
            progress.update(task, description=f"{spec.key}: ready ({result.source}, {result.seconds:.1f}s)")
        console.print(f"{spec.key} -> {result.path}")


@models_app.command("list")
def models_list() -> None:
    """The catalog and what is in the cache."""
    settings = CowestSettings()
    table = Table("model", "cached", "source", "path")
    for key, spec in MODELS.items():
        path = model_dir(settings, key)
        source = "generated" if spec.is_tiny else ("pypi-gguf" if spec.gguf else "hub")
        table.add_row(key, "yes" if is_complete(path) else "no", source, str(path))
    console.print(table)


@app.command()
def up(profile: str = ProfileOpt,
       timeout: float = typer.Option(600, help="seconds to wait for every part to be ready")) -> None:
    """Start the stack in the background and wait until every part answers."""
    stack = Stack()
    profile = profile or stack.settings.profile
    t0 = time.monotonic()
    with _progress() as progress:
        task = progress.add_task(f"profile {profile}: preparing")
        try:
            started = stack.start(profile, lambda m: progress.update(task, description=m))
            tasks = {n: progress.add_task(f"{n}: starting") for n in started}
            progress.update(task, description=f"profile {profile}: started {', '.join(started) or 'nothing new'}")

            def on_ready(name: str) -> None:
                progress.update(tasks[name], description=f"{name}: ready ({time.monotonic() - t0:.0f}s)")
                progress.stop_task(tasks[name])

            asyncio.run(stack.wait_ready(started, timeout, on_ready))
        except (StackError, ModelPullError, ValueError, FileNotFoundError) as exc:
            progress.stop()
            stack.stop()
            fail(f"{exc}\nThe stack was stopped.")
        except KeyboardInterrupt:
            progress.stop()
            stack.stop()
            err_console.print("interrupted: the stack was stopped")
            raise typer.Exit(130) from None
    console.print(f"stack is up ({time.monotonic() - t0:.0f}s). `cowest status` shows it; `cowest down` stops it.")


@app.command()
def down(timeout: float = typer.Option(20, help="seconds between SIGTERM and SIGKILL")) -> None:
    """Stop every part this machine's stack started (Redis only when `up` started it)."""
    outcomes = Stack().stop(timeout)
    for name, outcome in outcomes.items():
        console.print(f"{name}: {outcome}")
    if not outcomes:
        console.print("nothing was running")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Health, pid, port, model and loaded adapters of each part."""
    statuses = asyncio.run(Stack().status())
    if as_json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
        return
    table = Table("part", "state", "pid", "port", "model", "adapters", "memory (PSS)")
    colors = {"healthy": "green", "external": "green", "starting": "yellow"}
    for s in statuses:
        color = colors.get(s.state, "red")
        table.add_row(s.name, f"[{color}]{s.state}[/]", str(s.pid or "-"), str(s.port or "-"),
                      s.model or "-", ", ".join(s.adapters) or "-",
                      f"{s.memory_mib:.0f} MiB" if s.memory_mib else "-")
    console.print(table)


@app.command()
def chat(server: str = typer.Argument(..., help="weak | strong"), message: str = typer.Argument(...),
         max_tokens: int = typer.Option(64), model: str = typer.Option(None, help="model or adapter name")) -> None:
    """Send one chat completion to a server of the stack with the official openai client."""
    from openai import OpenAI, OpenAIError

    if server not in SERVERS:
        fail(f"server must be one of {', '.join(SERVERS)}")
    stack = Stack()
    url = stack.servers[server].base_url
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=300, max_retries=0)
    try:
        name = model or client.models.list().data[0].id
        t0 = time.monotonic()
        reply = client.chat.completions.create(model=name, max_tokens=max_tokens, temperature=0,
                                               messages=[{"role": "user", "content": message}])
    except OpenAIError as exc:
        fail(f"{server} server at {url}: {exc}")
    console.print(f"[bold]{server}[/] ({name}, {time.monotonic() - t0:.1f}s, "
                  f"{reply.usage.completion_tokens} tokens): {reply.choices[0].message.content}")


@app.command()
def ask(question: str = typer.Argument(...), domain: str = typer.Option(None, help="e.g. general"),
        max_tokens: int = typer.Option(128, help="for the draft and for the answer")) -> None:
    """One CoWest collaboration through the running orchestrator: weak draft, then strong answer."""
    import httpx

    url = f"{Stack().orchestrator_url}/v1/collaborate"
    body = {"question": question, "domain": domain, "weak": {"max_tokens": max_tokens, "temperature": 0},
            "strong": {"max_tokens": max_tokens, "temperature": 0}}
    try:
        r = httpx.post(url, json={k: v for k, v in body.items() if v is not None}, timeout=600)
    except httpx.HTTPError as exc:
        fail(f"orchestrator at {url} is not reachable ({exc}); start it with `cowest up`")
    if r.status_code != 200:
        fail(f"{r.status_code}: {r.text}")
    out = r.json()
    weak, strong = out["weak"], out["strong"]
    console.print(f"[bold]draft[/] ({weak['model']}{' + ' + weak['adapter'] if weak['adapter'] else ''}, "
                  f"{weak['latency_ms'] / 1000:.1f}s):\n{out['draft']}\n")
    console.print(f"[bold]answer[/] ({strong['model']}, {strong['latency_ms'] / 1000:.1f}s):\n{out['answer']}\n")
    console.print(f"trace {out['id']}, total {out['latency_ms'] / 1000:.1f}s"
                  + (f", [yellow]degraded: {out['degraded']}[/]" if out["degraded"] else ""))


if __name__ == "__main__":
    app()
