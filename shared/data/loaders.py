"""Loaders of offline dataset copies (COWEST_DATASETS_DIR, default `../shared/datasets`) and JSONL.

Splits are deterministic: items sorted by id, shuffled with a fixed seed where the dataset has no
split of its own. Evaluation splits never overlap training (IfQA repeats some train questions in
dev/test: they are dropped from evaluation). PubMedQA's LONG_ANSWER gives the label away: it is a
rationale in the train split only and never appears in an evaluation item.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from shared.config import REPO_ROOT
from shared.data.example import Example
from shared.metrics import normalize

SEED = 1234


def datasets_dir() -> Path:
    return Path(os.environ.get("COWEST_DATASETS_DIR", REPO_ROOT.parent / "shared" / "datasets"))


def load_jsonl(path: Path, domain: str | None = None) -> list[Example]:
    examples = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            row.setdefault("id", f"{Path(path).stem}-{n}")
            if domain:
                row["domain"] = domain
            examples.append(Example(**row))
    return examples


def write_jsonl(path: Path, examples: list[Example]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(e.model_dump_json(exclude_none=True) + "\n" for e in examples))


def _split(items: list[Example], eval_fraction: float, split: str) -> list[Example]:
    items = sorted(items, key=lambda e: e.id)
    random.Random(SEED).shuffle(items)
    cut = int(len(items) * eval_fraction)
    return items[:cut] if split == "eval" else items[cut:]


def ifqa(split: str) -> list[Example]:
    root = datasets_dir() / "ifqa"

    def read(name: str) -> list[Example]:
        return [
            Example(
                id=f"ifqa-{name}-{row['idx']}",
                domain="ifqa",
                question=row["question"],
                context=" ".join(row.get("context") or []) or None,
                answer=row["answers"],
            )
            for row in json.loads((root / f"{name}.json").read_text())
        ]

    train = read("train")
    if split == "train":
        return train
    seen = {normalize(e.question) for e in train}
    return [e for e in read("dev" if split == "eval" else "test") if normalize(e.question) not in seen]


def pubmedqa(split: str) -> list[Example]:
    root = datasets_dir() / "pubmedqa"
    data = json.loads((root / "ori_pqal.json").read_text())
    test_ids = set(json.loads((root / "test_ground_truth.json").read_text()))
    evaluation = split in ("eval", "test")
    return [
        Example(
            id=f"pubmedqa-{pmid}",
            domain="pubmedqa",
            question=row["QUESTION"],
            context=" ".join(row["CONTEXTS"]),
            choices=["yes", "no", "maybe"],
            answer=row["final_decision"],
            rationale=None if evaluation else row.get("LONG_ANSWER"),
        )
        for pmid, row in sorted(data.items())
        if (pmid in test_ids) == evaluation
    ]


def ethics(split: str) -> list[Example]:
    with (datasets_dir() / "ethics" / "commonsense" / "cm_test.csv").open(newline="") as f:
        items = [
            Example(
                id=f"ethics-cm-{n:05d}",
                domain="ethics",
                question=row["input"],
                choices=["acceptable", "wrong"],
                answer="wrong" if row["label"] == "1" else "acceptable",
            )
            for n, row in enumerate(csv.DictReader(f))
            if row["is_short"] == "True"
        ]
    return _split(items, 0.3, split)  # only the test file ships here: split it ourselves


def ethics_deontology(split: str) -> list[Example]:
    name = "deontology_train.csv" if split == "train" else "deontology_test.csv"
    with (datasets_dir() / "ethics" / "deontology" / name).open(newline="") as f:
        return [
            Example(
                id=f"ethics-deon-{split}-{n:05d}",
                domain="ethics-deontology",
                question=f"Request: {row['scenario']}\nExcuse: {row['excuse']}\nIs the excuse reasonable?",
                choices=["reasonable", "unreasonable"],
                answer="reasonable" if row["label"] == "1" else "unreasonable",
            )
            for n, row in enumerate(csv.DictReader(f))
        ]


def generated(domain: str) -> ModuleType | None:
    """The module of a generated domain (`generate(seed, size, eval_size)`, `true_facts(seed, size)`), or None."""
    if domain not in ("synthetic", "islands"):
        return None
    return importlib.import_module(f"shared.data.{domain}")


def synthetic(split: str, seed: int = 0, size: int = 120) -> list[Example]:
    from shared.data.synthetic import generate

    return generate(seed=seed, size=size)[split]


def islands(split: str, seed: int = 0, size: int = 240) -> list[Example]:
    from shared.data.islands import generate

    return generate(seed=seed, size=size)[split]


DOMAINS: dict[str, Callable[[str], list[Example]]] = {
    "ifqa": ifqa,
    "pubmedqa": pubmedqa,
    "ethics": ethics,
    "ethics-deontology": ethics_deontology,
    "synthetic": synthetic,
    "islands": islands,
}


_FIELDS = {
    "question": ("question", "query", "input", "prompt"),
    "answer": ("answer", "answers", "label", "output"),
    "context": ("context", "passage", "document"),
}


def hub(name: str, split: str) -> list[Example]:
    """A public dataset by name (`hf:<owner>/<name>`), when the machine is online: the first columns
    named like a question / answer / context become the schema's fields; eval reads `validation`
    (else `test`). Results are only as good as that guess: prefer JSONL files for anything serious."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValueError(f"{name}: the machine is offline (HF_HUB_OFFLINE=1); give the data as JSONL files instead")
    from datasets import get_dataset_split_names, load_dataset

    splits = get_dataset_split_names(name)
    wanted = "train" if split == "train" else next((s for s in ("validation", "dev", "test") if s in splits), None)
    if wanted not in splits:
        raise ValueError(f"{name} has no {split} split (it has {', '.join(splits)})")
    data = load_dataset(name, split=wanted)
    cols = {f: next((c for c in names if c in data.column_names), None) for f, names in _FIELDS.items()}
    if not cols["question"] or not cols["answer"]:
        raise ValueError(f"{name}: no question/answer columns among {', '.join(data.column_names)}")
    domain = name.rsplit("/", 1)[-1]

    def answer(value) -> str | list[str]:
        if isinstance(value, dict):  # SQuAD style {"text": [...]}
            value = value.get("text") or list(value.values())[0]
        return [str(v) for v in value] if isinstance(value, list) else str(value)

    return [
        Example(
            id=f"{domain}-{split}-{n:06d}",
            domain=domain,
            question=str(row[cols["question"]]),
            context=str(row[cols["context"]]) if cols["context"] else None,
            answer=answer(row[cols["answer"]]),
        )
        for n, row in enumerate(data)
    ]


def load(domain: str, split: str = "eval", limit: int | None = None) -> list[Example]:
    """A domain's split (`train`, `eval`; `test` where the dataset has one), the first `limit` items.
    `hf:<dataset>` reads a public dataset from the Hugging Face hub (online machines only)."""
    if split not in ("train", "eval", "test"):
        raise ValueError(f"split must be train, eval or test, not {split!r}")
    if domain.startswith("hf:"):
        return hub(domain[3:], split)[:limit]
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: one of {', '.join(DOMAINS)}, or give JSONL files")
    return DOMAINS[domain](split)[:limit]
