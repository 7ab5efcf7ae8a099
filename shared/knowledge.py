"""A domain's knowledge as data, and the lookup that puts it into the weak model's prompt.

Why: SFT on question -> rationale rows memorises answers and recalls the needed fact for a quarter to a half of
new questions (SmolLM2-135M, 2 cores); a small model needs on the order of a hundred exposures per fact, in
several phrasings, before it can retrieve a fact it saw in one form. A lexical index over the domain's fact
statements returns the needed fact first for ~90% of new questions in milliseconds. So a domain's knowledge is a
list of statements, looked up per question and shown to the weak model, which is trained (SFT, DPO) on prompts
that carry what the lookup returned.

Where the statements come from:
- the domain brings them: `knowledge.jsonl` (one fact or passage per line: a JSON string or `{"text": ...}`) or a
  `knowledge/` folder of `.txt` / `.md` files (one passage per paragraph) next to `train.jsonl`;
- otherwise they are derived from the train split: the sentences of rationales and contexts that state a fact
  (a self-contained sentence naming something specific), not those that compute or conclude.

The index (`FactIndex`) is BM25 (`bm25s`) over the statements with a tokenizer that keeps codes such as "KA-214"
whole, made entity-aware: statements that name the question's entities come first, and an entity of the question
that no statement names is reported as missing, so the weak model is told "no fact about X" instead of being
handed another entity's fact that it would rewrite as if it matched.

The knowledge is versioned with the adapter trained on it: the trainer stores it in the adapter's registry
directory and publishes it to Redis under the version's name before any traffic reaches that version, so a
hot-swap, a canary and a rollback move adapter and knowledge together (`publish`, `KnowledgeCache`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import redis_keys

logger = logging.getLogger(__name__)

KNOWLEDGE_FILE = "knowledge.jsonl"
KNOWLEDGE_DIR = "knowledge"
MAX_STATEMENT_CHARS = 1200  # a passage longer than this is cut into sentence groups
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how in is it its of on or the their there these this "
    "to was what when where which who whom whose why will with would after before than then so if not no yes "
    "you your they them he she his her we our us i me my".split()
)
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
# A sentence that computes, compares or concludes: its content is the question's, not the domain's.
_COMPUTES = re.compile(
    r"=|\d\s*[x×*/+]\s*\d|\d\s+-\s+\d|\bvs\.?\b|\bso\b|\btherefore\b|\bthus\b|\bhence\b|\banswer\b|"
    r"\bwhich means\b|\bin total\b|\btotal\b",
    re.IGNORECASE,
)
# A sentence that opens with a pronoun leans on an earlier one: not a statement that stands alone.
_LEANS = re.compile(r"^(it|its|this|that|these|those|they|their|he|she|his|her|there|here|both|each)\b", re.IGNORECASE)
_ENTITY = re.compile(r"\b(?:[A-Z][a-zA-Z]+|[A-Z]{1,4}-?\d+[A-Za-z0-9-]*|\d+[A-Z][A-Za-z0-9-]*)\b")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens without stop words; codes ("KA-214") and hyphenated names stay one token."""
    words = (t.removesuffix("'s") for t in _TOKEN.findall(text.lower().replace("\u2019", "'")))  # possessives
    return [t for t in words if t not in _STOPWORDS]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def states_fact(sentence: str) -> bool:
    """A sentence worth keeping as a fact: it stands alone, names something specific (a capitalised name or a
    number) and neither computes nor concludes."""
    if len(sentence.split()) < 4 or _LEANS.match(sentence) or _COMPUTES.search(sentence):
        return False
    words = sentence.split()
    return any(ch.isdigit() for ch in sentence) or any(w[:1].isupper() for w in words[1:])


def _norm(text: str) -> str:
    return " ".join(text.split())


def dedupe(statements: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for s in statements:
        key = _norm(s).lower()
        if key and key not in seen:
            seen.add(key)
            out.append(_norm(s))
    return out


def derive_facts(rows: Iterable[dict]) -> list[str]:
    """Fact statements from a train split's rationales and contexts (rows with `rationale` / `context`)."""
    found = []
    for row in rows:
        for text in (row.get("context"), row.get("rationale")):
            found += [s for s in sentences(text or "") if states_fact(s)]
    return dedupe(found)


def _passages(text: str) -> list[str]:
    """A text file's paragraphs; a long one cut into groups of whole sentences."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        para = _norm(para.strip().lstrip("#").strip())
        if not para:
            continue
        group = ""
        for s in sentences(para):
            if group and len(group) + len(s) > MAX_STATEMENT_CHARS:
                out.append(group)
                group = ""
            group = f"{group} {s}".strip()
        if group:
            out.append(group)
    return out


def read_knowledge(directory: Path) -> list[str] | None:
    """The knowledge a domain directory brings (`knowledge.jsonl` or `knowledge/*.txt|*.md`), None when none."""
    directory = Path(directory)
    file, folder = directory / KNOWLEDGE_FILE, directory / KNOWLEDGE_DIR
    if file.is_file():
        statements = []
        for n, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            text = row if isinstance(row, str) else row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise ValueError(f"{file}:{n}: a line must be a JSON string or an object with a 'text' string")
            statements += _passages(text)
        return dedupe(statements)
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
        return dedupe(s for p in files for s in _passages(p.read_text()))
    return None


@dataclass(frozen=True)
class Knowledge:
    """A domain's fact statements and where they came from ("file" or "derived")."""

    facts: tuple[str, ...]
    source: str = "derived"

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.facts).encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"facts": list(self.facts), "source": self.source})

    @classmethod
    def from_json(cls, text: str) -> Knowledge:
        body = json.loads(text)
        return cls(tuple(body["facts"]), body.get("source", "derived"))


def domain_knowledge(directory: Path | None, train_rows: Iterable[dict]) -> Knowledge:
    """What a domain brings, else what its train split states."""
    given = read_knowledge(directory) if directory else None
    if given is not None:
        return Knowledge(tuple(given), "file")
    return Knowledge(tuple(derive_facts(train_rows)), "derived")


@dataclass
class Lookup:
    """What the index returned for one question: the statements to show, and the question's entities that no
    statement names (the weak model is told so)."""

    facts: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def question_entities(question: str) -> list[str]:
    """Names and codes in a question (capitalised words past its first word, codes like KA-214), as tokens."""
    body = question.split(":", 1)[1] if re.match(r"^[^:]{0,80}:\s", question) else question  # "At Acme: ..." kept
    found = []
    for i, m in enumerate(_ENTITY.finditer(body)):
        if i == 0 and m.start() == 0 and not any(ch.isdigit() for ch in m.group()):
            continue  # the question's first word is capitalised as a sentence, not as a name
        found += tokens(m.group())
    prefix = question[: len(question) - len(body)]
    found += [t for m in _ENTITY.finditer(prefix) for t in tokens(m.group())]
    return list(dict.fromkeys(found))


class FactIndex:
    """BM25 over a domain's statements, entity-aware (see the module's docstring)."""

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge
        self.facts = list(knowledge.facts)
        self._tokens = [set(tokens(f)) for f in self.facts]
        self._vocab = set().union(*self._tokens) if self._tokens else set()
        self._bm25 = bm25s.BM25()
        if self.facts:
            self._bm25.index([tokens(f) or ["_"] for f in self.facts], show_progress=False)

    def __len__(self) -> int:
        return len(self.facts)

    def scores(self, question: str) -> np.ndarray:
        query = [t for t in tokens(question) if t in self._vocab]
        if not self.facts or not query:
            return np.zeros(len(self.facts))
        return np.asarray(self._bm25.get_scores(query), dtype=float)

    def search(self, question: str, k: int = 3) -> Lookup:
        """The `k` best statements, those naming more of the question's known entities first (BM25 within);
        entities no statement names are `missing`. Ties keep the knowledge's order (stable across processes)."""
        if not self.facts or k <= 0:
            return Lookup()
        entities = question_entities(question)
        known = [e for e in entities if e in self._vocab]
        missing = [e for e in entities if e not in self._vocab]
        bm25 = self.scores(question)
        named = np.array([sum(e in toks for e in known) for toks in self._tokens], dtype=float)
        order = sorted(range(len(self.facts)), key=lambda i: (-named[i], -bm25[i], i))
        picked = [i for i in order[:k] if bm25[i] > 0 or named[i] > 0]
        return Lookup([self.facts[i] for i in picked], missing)


# --- versioned with the adapter: Redis ----------------------------------------------------------------------


async def publish(redis: Redis, adapter: str, knowledge: Knowledge, domain: str | None = None) -> None:
    """Store `knowledge` under the adapter version `adapter` (and as the domain's newest, for requests that draft
    with no adapter and for strong + retrieval). Called before the version gets any traffic."""
    await redis.set(redis_keys.knowledge(adapter), knowledge.to_json())
    if domain:
        await redis.set(redis_keys.domain_knowledge(domain), knowledge.to_json())


class KnowledgeCache:
    """Each process's indexes, one per knowledge content, found by adapter version (immutable: cached for good)
    or by domain (re-read every `ttl_s`). A Redis failure means no lookup for that request, never an error."""

    def __init__(self, redis: Redis | None, ttl_s: float = 10.0, max_indexes: int = 64):
        self.redis, self.ttl_s, self.max_indexes = redis, ttl_s, max_indexes
        self._by_sha: dict[str, FactIndex] = {}
        self._by_key: dict[str, tuple[float, str | None]] = {}  # key -> (read at, sha or None)

    def _index(self, knowledge: Knowledge) -> FactIndex:
        sha = knowledge.sha256
        if sha not in self._by_sha:
            if len(self._by_sha) >= self.max_indexes:
                self._by_sha.pop(next(iter(self._by_sha)))
            self._by_sha[sha] = FactIndex(knowledge)
        return self._by_sha[sha]

    async def _get(self, key: str, keep_found_s: float) -> FactIndex | None:
        """The index under `key`: a found one is kept `keep_found_s`, an absent key is asked again after `ttl_s`."""
        now = time.monotonic()
        cached = self._by_key.get(key)
        if cached and now - cached[0] < (keep_found_s if cached[1] else self.ttl_s):
            if cached[1] is None:
                return None
            if cached[1] in self._by_sha:  # else evicted meanwhile: read again
                return self._by_sha[cached[1]]
        if self.redis is None:
            return None
        try:
            text = await self.redis.get(key)
        except (RedisError, OSError) as exc:  # asked again after `ttl_s`, not on every request meanwhile
            logger.warning("knowledge lookup skipped: Redis: %s", exc)
            sha = cached[1] if cached else None
            self._by_key[key] = (now, sha)
            return self._by_sha.get(sha) if sha else None
        if text is None:
            self._by_key[key] = (now, None)
            return None
        knowledge = Knowledge.from_json(text)
        index = self._index(knowledge)
        self._by_key[key] = (now, knowledge.sha256)
        return index

    async def index(self, domain: str, adapter: str | None) -> FactIndex | None:
        """The index a draft with `adapter` looks up in: the version's own knowledge (versions are immutable: kept
        for good once found); the domain's newest when the request drafts with the base model or with a version
        published without knowledge."""
        if adapter and (found := await self._get(redis_keys.knowledge(adapter), float("inf"))) is not None:
            return found
        return await self._get(redis_keys.domain_knowledge(domain), self.ttl_s)
