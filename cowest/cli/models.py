"""`cowest models pull|list`: provision model weights into COWEST_HOME/models."""

from __future__ import annotations

import typer
from rich.table import Table

from cowest.cli.console import console, fail, spinner
from cowest.provision import ModelPullError, pull_model
from cowest.provision.pull import is_complete, model_dir, profile_pulls
from shared.catalog import MODELS, get_model
from shared.config import CowestSettings

app = typer.Typer(help="Provision model weights into COWEST_HOME/models.", no_args_is_help=True)
ProfileOpt = typer.Option(None, "--profile", "-p", help="default | fast | tiny (default: COWEST_PROFILE)")


@app.command("pull")
def models_pull(
    profile: str = ProfileOpt, model: list[str] = typer.Option(None, "--model", "-m", help="a model key (repeatable)")
) -> None:
    """Download, verify and convert the models of a profile (idempotent: cached entries are reused)."""
    settings = CowestSettings()
    try:
        jobs = [(get_model(k), pull_model) for k in model] if model else profile_pulls(profile or settings.profile)
    except ValueError as exc:
        fail(str(exc))
    for spec, pull in jobs:
        with spinner() as progress:
            task = progress.add_task(f"{spec.key}: starting")
            try:

                def report(message: str, task=task, key=spec.key) -> None:
                    progress.update(task, description=f"{key}: {message}")

                result = pull(settings, spec, report)
            except ModelPullError as exc:
                progress.update(task, description=f"{spec.key}: failed")
                progress.stop()
                fail(str(exc))
            progress.update(task, description=f"{spec.key}: ready ({result.source}, {result.seconds:.1f}s)")
        console.print(f"{spec.key} -> {result.path}")


@app.command("list")
def models_list() -> None:
    """The catalog and what is in the cache."""
    settings = CowestSettings()
    table = Table("model", "cached", "source", "path")
    for key, spec in MODELS.items():
        path = model_dir(settings, key)
        source = "generated" if spec.is_tiny else ("pypi-gguf" if spec.gguf else "hub")
        table.add_row(key, "yes" if is_complete(path) else "no", source, str(path))
    console.print(table)
