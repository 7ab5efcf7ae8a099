"""A metric every draft of the tiny models can win or lose on: the answer's length (up to 300 characters)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from services.trainer.evaluators import metric_override


def length_score(answer: str, reference: str) -> float:
    return min(len(answer), 300) / 300


def scored_by_length(domain: str) -> AbstractContextManager[None]:
    return metric_override(domain, length_score)


def length_metric_env(hook_dir: Path, domain: str) -> dict[str, str]:
    """Environment for a trainer started as its own process that scores `domain` by length too: a sitecustomize on
    its PYTHONPATH installs the override at start-up."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(
        "from services.trainer.evaluators import metric_override\n"
        "from tests.support.metrics import length_score\n"
        f"_override = metric_override({domain!r}, length_score)  # kept: collected, it would undo itself\n"
        "_override.__enter__()\n"
    )
    return {"PYTHONPATH": f"{hook_dir}:{Path(__file__).resolve().parents[2]}"}
