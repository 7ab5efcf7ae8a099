"""The CLI's terminal output, shared by every command module: results on stdout, progress and errors
on stderr (so `cowest ... --json | jq` stays clean)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths stay copy-pastable


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit 1 (no traceback: the message says what to do)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def spinner() -> Progress:
    """A spinner line per task, on stderr."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=False
    )


class ProgressBars:
    """One rich progress bar per named activity; total -1 means unknown (a counter)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=None if total < 0 else total)
        self.progress.update(self.tasks[what], completed=done)

    def __enter__(self) -> ProgressBars:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
