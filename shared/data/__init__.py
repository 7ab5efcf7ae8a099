"""Datasets in one schema (`Example`), with deterministic, non-overlapping train/eval splits.

Domains: `ifqa` (counterfactual QA), `pubmedqa` (PQA-L, yes/no/maybe), `ethics` (ETHICS commonsense,
wrong/acceptable), `ethics-deontology` (ETHICS deontology, reasonable/unreasonable excuses), and
`synthetic` (a generated fictional company: facts no pretrained model knows, questions that need them
plus a reasoning step). Any other domain comes from JSONL files in the same schema.
"""

from shared.data.example import Example
from shared.data.loaders import DOMAINS, datasets_dir, load, load_jsonl, write_jsonl

__all__ = ["DOMAINS", "Example", "datasets_dir", "load", "load_jsonl", "write_jsonl"]
