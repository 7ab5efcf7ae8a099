"""`cowest chat` (one request to a model server) and `cowest ask` (one collaboration)."""

from __future__ import annotations

import time

import typer

from cowest.cli.console import console, fail
from cowest.stack import SERVERS, Stack

app = typer.Typer()


@app.command()
def chat(
    server: str = typer.Argument(..., help="weak | strong"),
    message: str = typer.Argument(...),
    max_tokens: int = typer.Option(64),
    model: str = typer.Option(None, help="model or adapter name"),
) -> None:
    """Send one chat completion to a server of the stack with the official openai client."""
    from openai import OpenAI, OpenAIError

    if server not in SERVERS:
        fail(f"server must be one of {', '.join(SERVERS)}")
    stack = Stack()
    url = stack.servers[server].base_url
    client = OpenAI(base_url=f"{url}/v1", api_key=stack.server_key(server) or "unused", timeout=300, max_retries=0)
    try:
        name = model or client.models.list().data[0].id
        t0 = time.monotonic()
        reply = client.chat.completions.create(
            model=name, max_tokens=max_tokens, temperature=0, messages=[{"role": "user", "content": message}]
        )
    except OpenAIError as exc:
        fail(f"{server} server at {url}: {exc}")
    console.print(
        f"[bold]{server}[/] ({name}, {time.monotonic() - t0:.1f}s, "
        f"{reply.usage.completion_tokens} tokens): {reply.choices[0].message.content}"
    )


@app.command()
def ask(
    question: str = typer.Argument(...),
    domain: str = typer.Option(None, help="e.g. general"),
    max_tokens: int = typer.Option(128, help="for the draft and for the answer"),
) -> None:
    """One CoWest collaboration through the running orchestrator: weak draft, then strong answer."""
    import httpx

    url = f"{Stack().orchestrator_url}/v1/collaborate"
    body = {
        "question": question,
        "domain": domain,
        "weak": {"max_tokens": max_tokens, "temperature": 0},
        "strong": {"max_tokens": max_tokens, "temperature": 0},
    }
    try:
        r = httpx.post(url, json={k: v for k, v in body.items() if v is not None}, timeout=600)
    except httpx.HTTPError as exc:
        fail(f"orchestrator at {url} is not reachable ({exc}); start it with `cowest up`")
    if r.status_code != 200:
        fail(f"{r.status_code}: {r.text}")
    out = r.json()
    weak, strong = out["weak"], out["strong"]
    console.print(
        f"[bold]draft[/] ({weak['model']}{' + ' + weak['adapter'] if weak['adapter'] else ''}, "
        f"{weak['latency_ms'] / 1000:.1f}s):\n{out['draft']}\n"
    )
    console.print(f"[bold]answer[/] ({strong['model']}, {strong['latency_ms'] / 1000:.1f}s):\n{out['answer']}\n")
    console.print(
        f"trace {out['id']}, total {out['latency_ms'] / 1000:.1f}s"
        + (f", [yellow]degraded: {out['degraded']}[/]" if out["degraded"] else "")
    )
