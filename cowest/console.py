"""The CLI's terminal output, shared by every command module: results on stdout, progress and errors
on stderr (so `cowest ... --json | jq` stays clean)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths stay copy-pastable


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit 1 (no traceback: the message says what to do)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)
