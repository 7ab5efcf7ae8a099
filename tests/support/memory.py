"""In-memory fakes for fast unit tests of the collaboration, the round runner and the swapper.

They implement only what those classes call, with the same signatures, so a test exercises the real logic
(degraded modes, promotion and rejection, flip, history, rollback, reconcile) in milliseconds. The suites
with real parts (vLLM, Redis, trl) stay beside them and prove the fakes' contract holds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from services.weak_server.admin_client import ServedModel, VllmAdminError
from shared.upstream import UpstreamError


class MemoryRedis:
    """Strings, lists, pub/sub messages, transactions and a lock: the Redis subset the swapper and the round
    runner use. Values are `str`, as from `redis_keys.connect()`."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.lists: dict[str, list[str]] = defaultdict(list)
        self.published: list[tuple[str, str]] = []
        self.locked: set[str] = set()
        self.sets: dict[str, set[str]] = {}
        self.transactions: list[list[str]] = []  # the commands of each MULTI/EXEC, in order

    async def get(self, key: str) -> str | None:
        return self.strings.get(key)

    async def set(self, key: str, value: Any, **_: Any) -> bool:
        self.strings[key] = str(value)
        return True

    async def exists(self, *keys: str) -> int:
        return sum(k in self.strings or k in self.lists or k in self.sets or k in self.locked for k in keys)

    async def delete(self, *keys: str) -> int:
        return sum(self.strings.pop(k, None) is not None or self.lists.pop(k, None) is not None for k in keys)

    async def sadd(self, key: str, *values: str) -> int:
        members = self.sets.setdefault(key, set())
        added = len(set(values) - members)
        members.update(values)
        return added

    async def srem(self, key: str, *values: str) -> int:
        members = self.sets.setdefault(key, set())
        removed = len(set(values) & members)
        members.difference_update(values)
        return removed

    async def publish(self, channel: str, message: str) -> int:
        self.published.append((channel, message))
        return 0

    async def lpush(self, key: str, *values: str) -> int:
        for value in values:
            self.lists[key].insert(0, value)
        return len(self.lists[key])

    async def lpop(self, key: str) -> str | None:
        return self.lists[key].pop(0) if self.lists[key] else None

    async def lrange(self, key: str, start: int, end: int) -> list[str]:
        items = self.lists.get(key, [])
        return items[start:] if end == -1 else items[start : end + 1]

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self)

    def lock(self, name: str, timeout: float | None = None, blocking: bool = True, **_: Any) -> _Lock:
        return _Lock(self, name)


class _Pipeline:
    def __init__(self, redis: MemoryRedis):
        self.redis, self.calls = redis, []

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *args, **kw: self.calls.append((name, args, kw))

    async def execute(self) -> list:
        self.redis.transactions.append([name for name, _, _ in self.calls])
        return [await getattr(self.redis, name)(*args, **kw) for name, args, kw in self.calls]


class _Lock:
    def __init__(self, redis: MemoryRedis, name: str):
        self.redis, self.name = redis, name

    async def acquire(self) -> bool:
        if self.name in self.redis.locked:
            return False
        self.redis.locked.add(self.name)
        return True

    async def release(self) -> None:
        self.redis.locked.discard(self.name)

    async def owned(self) -> bool:
        return self.name in self.redis.locked

    async def reacquire(self) -> bool:
        return True


class MemoryVllmAdmin:
    """The weak vLLM server's admin surface: loaded adapters, and log-probs that move when an adapter is
    applied (`no_op` names an adapter that changes nothing, as a zero LoRA would)."""

    def __init__(self, base_model: str, no_op: set[str] | None = None, refuse: set[str] | None = None):
        self.base_model = base_model
        self.loaded: dict[str, str] = {}  # name -> path
        self.no_op, self.refuse = no_op or set(), refuse or set()
        self.calls: list[tuple[str, str]] = []
        self.down = False  # a replica that stopped answering: every call raises ConnectError

    def _answering(self) -> None:
        if self.down:
            raise httpx.ConnectError("connection refused")

    async def ready(self) -> bool:
        return not self.down

    async def adapters(self) -> list[ServedModel]:
        self._answering()
        return [ServedModel(id=n, parent=self.base_model, root=p) for n, p in self.loaded.items()]

    async def models(self) -> list[ServedModel]:
        return [ServedModel(id=self.base_model), *await self.adapters()]

    async def load_lora_adapter(self, name: str, path: str) -> None:
        self._answering()
        self.calls.append(("load", name))
        if name in self.refuse:
            raise VllmAdminError(400, f"cannot load {name}")
        if name in self.loaded:
            raise VllmAdminError(400, f"the lora adapter '{name}' has already been loaded")
        self.loaded[name] = path

    async def unload_lora_adapter(self, name: str) -> None:
        self._answering()
        self.calls.append(("unload", name))
        if self.loaded.pop(name, None) is None:
            raise VllmAdminError(404, f"the lora adapter '{name}' cannot be found")

    async def greedy_logprobs(self, model: str, messages: list[dict], max_tokens: int = 8) -> list[float]:
        self._answering()
        shift = 0.0 if model == self.base_model or model in self.no_op else 0.5
        return [-1.0 - shift] * max_tokens

    async def aclose(self) -> None:
        pass


def register_version(registry, trained: Path, *, domain: str, base_model_path: Path, round: int = 1) -> str:
    """Register a trained adapter dir as the next DPO version of `domain` (base `tiny-weak`); its name."""
    return registry.register(
        trained,
        domain=domain,
        base_model="tiny-weak",
        base_model_path=base_model_path,
        parent=None,
        round=round,
        pairs=8,
        kind="dpo",
    ).name


def write_adapter(directory: Path, base_model_dir: Path, rank: int = 8, seed: int = 0) -> Path:
    """The files of a LoRA adapter as the registry sees them (config + weights); not loadable by a real server."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"r": rank, "lora_alpha": 2 * rank, "base_model_name_or_path": str(base_model_dir)}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "adapter_model.safetensors").write_bytes(bytes([seed % 256]) * 64)
    return directory


class ScriptedUpstream:
    """An OpenAI-compatible model server as `shared.upstream.Upstream` is used: `chat` answers with `text`, or
    raises UpstreamError while `down`. Records the payloads it was sent."""

    def __init__(self, name: str, text: str = "answer", down: bool = False):
        self.name, self.text, self.down = name, text, down
        self.payloads: list[dict] = []

    async def chat(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        self.payloads.append(payload)
        if self.down:
            raise UpstreamError(f"{self.name} server unreachable")
        n = payload.get("n", 1)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        choices = [{"index": i, "message": {"role": "assistant", "content": self.text}} for i in range(n)]
        return {"choices": choices, "usage": usage}

    async def stream_chat(self, payload: dict, headers: dict[str, str] | None = None):
        self.payloads.append(payload)
        if self.down:
            raise UpstreamError(f"{self.name} server unreachable")
        for word in self.text.split():
            yield {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
        yield {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


class MemoryTrainerStore:
    """The part of `TrainerStore` a round and a canary use: the round counter, pairs to claim, the gate's
    held-out items, live scores per version."""

    def __init__(self, pairs: list | None = None, heldout: list | None = None, round_: int = 1):
        self.pending, self.items, self.counter = list(pairs or []), list(heldout or []), round_
        self.claimed: dict[int, list] = defaultdict(list)
        self.live: dict[str | None, tuple[int, float]] = {}

    def score(self, adapter: str | None, score: float, times: int = 1) -> None:
        n, total = self.live.get(adapter, (0, 0.0))
        self.live[adapter] = (n + times, total + score * times)

    async def live_totals(self, domain: str, adapter: str | None) -> tuple[int, float]:
        return self.live.get(adapter, (0, 0.0))

    async def round(self, domain: str) -> int:
        return self.counter

    async def next_round(self, domain: str) -> int:
        self.counter += 1
        return self.counter

    async def claim_pairs(self, domain: str, round: int) -> list:
        self.claimed[round] += self.pending
        self.pending = []
        return list(self.claimed[round])

    async def heldout(self, domain: str) -> list:
        return list(self.items)


class ScoredCollab:
    """The trainer's collaboration client as the gate uses it: `scores[adapter]` is the score of every
    collaboration drafted with that adapter (None: the base model); drafts say which adapter wrote them."""

    def __init__(self, scores: dict[str | None, float]):
        self.scores = scores
        self.asked: list[str | None] = []

    async def collaborate(self, question: str, domain: str, adapter: str | None, reference, context=None):
        self.asked.append(adapter)
        draft = f"{question} by {adapter}. Answer: {adapter}"
        return draft, draft, self.scores.get(adapter, 0.0)
