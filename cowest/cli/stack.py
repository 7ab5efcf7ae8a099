"""`cowest up|down|status`: the local stack (Redis, the weak and strong servers, orchestrator, trainer)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict

import typer
from rich.table import Table

from cowest.cli.console import console, err_console, fail, spinner
from cowest.cli.models import ProfileOpt
from cowest.processes import StackError
from cowest.provision import ModelPullError
from cowest.stack import Stack
from shared import redis_keys

app = typer.Typer()


def start_stack(stack: Stack, profile: str | None, timeout: float) -> None:
    """Start whatever is not running and wait until every part answers; on failure stop it all and exit 1."""
    profile = profile or stack.settings.profile
    t0 = time.monotonic()
    with spinner() as progress:
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
    if not stack.orchestrator.api_keys:
        err_console.print(open_door_warning(stack.orchestrator_url))


def open_door_warning(url: str) -> str:
    return (
        f"[yellow]warning:[/] the orchestrator at {url} runs without client keys: whoever reaches it can send "
        "feedback (training data) and use the strong model through it. Set COWEST_API_KEYS (comma-separated) "
        "before `cowest up`, or keep the port on localhost."
    )


@app.command()
def up(
    profile: str = ProfileOpt, timeout: float = typer.Option(600, help="seconds to wait for every part to be ready")
) -> None:
    """Start the stack in the background and wait until every part answers."""
    start_stack(Stack(), profile, timeout)


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
        table.add_row(
            s.name,
            f"[{color}]{s.state}[/]",
            str(s.pid or "-"),
            str(s.port or "-"),
            s.model or "-",
            ", ".join(s.adapters) or "-",
            f"{s.memory_mib:.0f} MiB" if s.memory_mib else "-",
        )
    console.print(table)


@app.command("redis-acl")
def redis_acl(
    service: str = typer.Argument(..., help="orchestrator or trainer"),
    user: str = typer.Option("", help="the user name (default: the service's name)"),
) -> None:
    """Print the `ACL SETUSER` command of a service's least-privilege Redis user (add its password with
    `>password` after `on`); give the service `COWEST_REDIS_URL=redis[s]://<user>:<password>@host:port/0`."""
    if service not in ("orchestrator", "trainer"):
        fail(f"unknown service {service!r}: orchestrator or trainer")
    print(f"ACL SETUSER {user or service} on {redis_keys.acl_rules(service)}")  # type: ignore[arg-type]
