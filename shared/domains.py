"""Domains as data: a spec says everything the models and the metrics need to know about a task.

A spec (`DomainSpec`) holds the task description said to both models, the answer format, how answers are
scored (exact match, token F1, labels, or a number within a tolerance), the weak model's draft format, and
optional worked examples that the strong model's prompts show as demonstrations. The built-in domains are
spec files in `shared/domain_specs/`; a user's domain is a directory (`train.jsonl`, `eval.jsonl`,
`spec.json` or `spec.yaml`) or a spec registered at runtime through the orchestrator
(`PUT /v1/domains/{name}`), stored in Redis so every orchestrator and the trainer see it without a restart.

This module keeps the process's view (built-ins + registered specs); services refresh the registered part
from Redis (`load_registered`) and learn of changes on `redis_keys.DOMAINS_CHANGED_CHANNEL`.
"""

from __future__ import annotations

import json
import logging
import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared import redis_keys
from shared.metrics import exact_match, final_answer, first_label, normalize, token_f1

logger = logging.getLogger(__name__)

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"  # one pattern for every domain name (Redis keys, paths, adapters)
BUILTIN_DIR = Path(__file__).parent / "domain_specs"
DEFAULT_DOMAIN = "general"
SPEC_FILES = ("spec.json", "spec.yaml", "spec.yml")


class DraftFormat(StrEnum):
    cot = "cot"  # reasoning + answer
    knowledge = "knowledge"  # background knowledge only
    answer = "answer"  # the answer only


class Metric(BaseModel):
    """How an answer is scored against a reference (the final `Answer:` line when there is one).

    Args:
        type: `exact_match`; `f1` (token F1); `exact_match_or_f1` (the larger); `contains_or_f1` (1 when the
            reference appears in the answer as whole words, else token F1); `labels` (the first of `labels` named
            must be the reference); `number` (the first number in the answer within `tolerance` of the reference's).
        labels: the label names, for `labels`.
        tolerance: the absolute tolerance, for `number`.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["exact_match", "f1", "exact_match_or_f1", "contains_or_f1", "labels", "number"]
    labels: list[str] | None = Field(default=None, min_length=2, max_length=50)
    tolerance: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _labels_iff_label_task(self) -> Metric:
        if (self.type == "labels") != bool(self.labels):
            raise ValueError("`labels` is required for type 'labels' and only for it")
        if self.labels and len({normalize(label) for label in self.labels}) != len(self.labels):
            raise ValueError("labels must differ after normalisation (case, punctuation, articles)")
        return self

    def score(self, prediction: str, reference: str) -> float:
        if self.type == "labels":
            return float(first_label(prediction, [normalize(x) for x in self.labels or []]) == normalize(reference))
        if self.type == "number":
            got, want = _first_number(final_answer(prediction)), _first_number(reference)
            return float(got is not None and want is not None and abs(got - want) <= self.tolerance)
        if self.type == "exact_match":
            return exact_match(prediction, reference)
        if self.type == "f1":
            return token_f1(prediction, reference)
        if self.type == "exact_match_or_f1":
            return max(exact_match(prediction, reference), token_f1(prediction, reference))
        # Whole words only: "12" is not in "120".
        ref = normalize(reference)
        return max(float(bool(ref) and f" {ref} " in f" {normalize(prediction)} "), token_f1(prediction, reference))


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _first_number(text: str) -> float | None:
    match = _NUMBER.search(text or "")
    return float(match.group().replace(",", "")) if match else None


class Demonstration(BaseModel):
    """A worked example the strong model sees before the question (a prior user/assistant turn): the draft it
    was given and the reply wanted, a one-line `work` and the `answer`. Draw them from the train split only."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    context: str | None = Field(default=None, max_length=20000)
    draft: str = Field(min_length=1, max_length=4000)
    work: str = Field(min_length=1, max_length=1000)
    calc: str | None = Field(default=None, max_length=300)  # the reply's Calc line, for a domain with a calculator
    answer: str = Field(min_length=1, max_length=500)


class KnowledgeUse(BaseModel):
    """How the weak model gets the domain's facts (shared/knowledge.py).

    Args:
        mechanism: `lookup` (the statements a BM25 lookup returns for the question are in the draft prompt, and
            the adapter is trained on such prompts) or `weights` (no lookup: the facts must be in the adapter's
            weights, the paper's way).
        top_k: how many statements a lookup puts in the prompt.
    """

    model_config = ConfigDict(extra="forbid")

    mechanism: Literal["lookup", "weights"] = "lookup"
    top_k: int = Field(default=3, ge=1, le=10)


class DomainSpec(BaseModel):
    """One domain, as data.

    Args:
        name: the domain's name (lower case, digits, `.`, `_`, `-`): the API's `domain`, `cowest/<name>`.
        title: how reports name it.
        task: what the task is, said to both models.
        answer_format: how the final answer must look ("a short phrase", "one word: yes, no or maybe").
        answer_line: the strong model ends with `Answer: ...` (scored tasks: the answer is extractable).
        work_line: before the answer line, one line `Work: ...` with the facts used and the one step of
            reasoning (a 1.5B model told to "show its work" wrote long LaTeX and ran out of tokens; with one
            worked example and this one-line format it got 14 of 24 fact + arithmetic questions right, 1-3
            without it).
        metric: how answers are scored (collaborative feedback, the gate, evaluation).
        draft_format: what the weak model drafts: `cot` (reasoning + answer, the paper's best), `knowledge`
            or `answer`.
        demonstrations: worked examples shown to the strong model before the question (at most 4).
        knowledge: how the weak model gets the domain's facts (lookup in the domain's knowledge, or its weights);
            the knowledge itself comes with the domain directory (`knowledge.jsonl` or `knowledge/`) or is
            derived from the train split's rationales and contexts.
        calculator: the strong model writes its computation as one expression on a `Calc:` line (between the
            Work and Answer lines) and a safe evaluator's value replaces the answer's number (shared/calculator.py):
            the strong stage's arithmetic tool, for domains whose answers are computed.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    title: str | None = Field(default=None, max_length=200)
    task: str = Field(min_length=1, max_length=4000)
    answer_format: str = Field(min_length=1, max_length=500)
    answer_line: bool = True
    work_line: bool = False
    metric: Metric = Field(default_factory=lambda: Metric(type="contains_or_f1"))
    draft_format: DraftFormat = DraftFormat.cot
    demonstrations: list[Demonstration] = Field(default_factory=list, max_length=4)
    knowledge: KnowledgeUse = Field(default_factory=KnowledgeUse)
    calculator: bool = False

    @model_validator(mode="after")
    def _work_needs_answer_line(self) -> DomainSpec:
        if self.work_line and not self.answer_line:
            raise ValueError("work_line needs answer_line (the Work line comes before the Answer line)")
        if self.calculator and not self.work_line:
            raise ValueError("calculator needs work_line (the Calc line comes between the Work and Answer lines)")
        return self

    @property
    def demonstrations_copy_drafts(self) -> bool:
        """Every worked example answers what its draft answered: they teach the strong model to copy drafts
        (a 1.5B model echoed 85% of drafts with such examples), not to check them."""
        return bool(self.demonstrations) and all(
            normalize(final_answer(d.draft)) == normalize(d.answer) for d in self.demonstrations
        )

    @property
    def display_name(self) -> str:
        return self.title or self.name

    def score(self, prediction: str, reference: str | list[str]) -> float:
        """The metric against the best of the acceptable references."""
        refs = [reference] if isinstance(reference, str) else list(reference)
        return max((self.metric.score(prediction, r) for r in refs), default=0.0)


class SpecError(ValueError):
    """A spec that cannot be read or does not validate; the message says where and why."""


def parse_spec(data: dict, *, name: str | None = None) -> DomainSpec:
    """A spec from its JSON/YAML data; `name` (a directory's or a URL's) fills in or must match `name`."""
    if not isinstance(data, dict):
        raise SpecError("a domain spec must be a JSON/YAML object")
    if name is not None:
        if data.setdefault("name", name) != name:
            raise SpecError(f"the spec names domain {data['name']!r} but it is registered as {name!r}")
    try:
        spec = DomainSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid domain spec: {problems}") from exc
    if spec.demonstrations_copy_drafts:
        logger.warning(
            "domain %r: every demonstration's answer equals its draft's; show a corrected draft, or the strong model "
            "learns to copy",
            spec.name,
        )
    return spec


def read_spec_file(path: Path, *, name: str | None = None) -> DomainSpec:
    try:
        text = Path(path).read_text()
        data = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc})") from exc
    try:
        return parse_spec(data, name=name)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def read_dir_spec(directory: Path, name: str | None = None) -> DomainSpec | None:
    """The spec file of a domain directory, or None when it has none."""
    for file in SPEC_FILES:
        if (Path(directory) / file).exists():
            return read_spec_file(Path(directory) / file, name=name)
    return None


def _builtins() -> dict[str, DomainSpec]:
    specs = [read_spec_file(p) for p in sorted(BUILTIN_DIR.glob("*.json"))]
    return {s.name: s for s in specs}


BUILTIN: dict[str, DomainSpec] = _builtins()
_registered: dict[str, DomainSpec] = {}


def register_local(spec: DomainSpec) -> None:
    """Use `spec` in this process (a registered or directory domain); built-ins cannot be replaced."""
    if spec.name in BUILTIN:
        raise SpecError(f"{spec.name!r} is a built-in domain; choose another name")
    _registered[spec.name] = spec


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_registered))


def registered() -> dict[str, DomainSpec]:
    return dict(_registered)


def get(name: str | None) -> DomainSpec:
    """The domain's spec; an unknown name gets the general domain's wording and metric under its own name."""
    name = name or DEFAULT_DOMAIN
    spec = BUILTIN.get(name) or _registered.get(name)
    if spec is None:
        spec = BUILTIN[DEFAULT_DOMAIN].model_copy(update={"name": name, "title": None})
    return spec


async def save(redis, spec: DomainSpec) -> bool:
    """Store a spec for every service and announce it; True when it replaced an earlier version. Used here only
    once stored: a spec Redis did not take must not be served by this process alone."""
    if spec.name in BUILTIN:
        raise SpecError(f"{spec.name!r} is a built-in domain; choose another name")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(redis_keys.DOMAIN_SPECS, spec.name, spec.model_dump_json(exclude_none=True))
        pipe.publish(redis_keys.DOMAINS_CHANGED_CHANNEL, spec.name)
        created, _ = await pipe.execute()
    register_local(spec)
    return not created


async def load_registered(redis) -> dict[str, DomainSpec]:
    """Replace this process's registered specs with Redis's (an entry that no longer validates is skipped
    and logged: one bad entry must not take the others down)."""
    fresh: dict[str, DomainSpec] = {}
    for name, raw in (await redis.hgetall(redis_keys.DOMAIN_SPECS)).items():
        try:
            spec = parse_spec(json.loads(raw), name=name)
        except (ValueError, SpecError) as exc:
            logger.warning("skipping the stored spec of domain %r: %s", name, exc)
            continue
        if spec.name not in BUILTIN:
            fresh[spec.name] = spec
    _registered.clear()
    _registered.update(fresh)
    return fresh
