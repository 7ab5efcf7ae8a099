"""The trainer's state in Redis: preference pairs, the round counter, held-out items for the gate, and
the traces it has seen (to join feedback with its question).

Pairs wait in one pending hash per domain, one field per question (keyed by its normalised text, so a
question asked many times gives one entry: it cannot dominate a round, and a redelivered message never
duplicates pairs). A round claims the pending pairs atomically (one Lua script moves them into the
round's own hash), so pairs stored while a round trains wait for the next round instead of being lost;
a round that fails keeps its claimed hash and its retry claims whatever arrived meanwhile on top.
Every 5th question (by a stable hash of its domain and normalised text, so a question asked again is
held out again) is kept for the gate and never turned into pairs.
"""

from __future__ import annotations

import hashlib
import json

from redis.asyncio import Redis

from services.trainer.pairs import PreferencePair
from shared import redis_keys
from shared.adapters import BASE_ADAPTER
from shared.data.example import Example

TRACE_TTL_S = 7 * 24 * 3600


def question_key(domain: str, question: str) -> str:
    """A stable id for a question's text: the same question sent twice (or in two rounds) maps to one key."""
    text = " ".join(question.lower().split())
    return hashlib.sha256(f"{domain}\n{text}".encode()).hexdigest()[:16]


def is_heldout(domain: str, question: str, every: int = 5) -> bool:
    """Held out by question, not by trace: a question is either always gate data or always training data."""
    return int(question_key(domain, question), 16) % every == 0


# KEYS[1] live-score hash, KEYS[2] the feedback's "counted" marker; ARGV: n field, sum field, score, marker TTL.
_ADD_SCORE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[2], ARGV[3])
return 1
"""

# What becomes of each feedback entry, counted once per entry (redis_keys.FEEDBACK_OUTCOMES, trainer /metrics).
# Together with the dead-letter stream these account for every accepted feedback: none is acknowledged unseen.
FEEDBACK_OUTCOMES = {
    "paired": "collaborative feedback ran and stored preference pairs for the next round",
    "no_pair": "collaborative feedback ran; no draft moved the strong model's score past the margin: nothing to learn",
    "question_waiting": "the question already has pairs waiting for the next round (asked again)",
    "heldout": "the question belongs to the gate's held-out set: kept for evaluation, never trained on",
    "other_domain": "the trainer does not train this domain (COWEST_TRAINER_DOMAINS)",
    "repeat_source": "the same source already gave feedback on this trace",
    "score_only": "a score without a reference: counted as a live score (canary, rollback)",
    "no_reference": "neither a reference nor a score (a label or comment): kept in the log only",
    "malformed": "the entry could not be parsed",
}


# KEYS[1] the entry's counted-key, KEYS[2] the outcome counts. An entry redelivered after a crash counts once.
_COUNT_ONCE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

# KEYS[1] pending hash, KEYS[2] the feedback's once-key. Pairs and the mark that they were made: one step.
_PUT_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS[1] pending hash, KEYS[2] the round's hash. A question already claimed by this round keeps its pairs.
_CLAIM = """
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do redis.call('HSETNX', KEYS[2], fields[i], fields[i + 1]) end
redis.call('DEL', KEYS[1])
return #fields / 2
"""


def _parse_pairs(values) -> list[PreferencePair]:
    return [PreferencePair(**p) for v in values for p in json.loads(v)]


class TrainerStore:
    def __init__(self, redis: Redis):
        self.redis = redis

    async def round(self, domain: str) -> int:
        return int(await self.redis.get(redis_keys.round_counter(domain)) or 1)

    async def domains(self) -> set[str]:
        """Every domain with trainer state (pairs, gate items, a round counter)."""
        return set(await self.redis.smembers(redis_keys.TRAINER_DOMAINS))

    async def next_round(self, domain: str) -> int:
        key = redis_keys.round_counter(domain)
        await self.redis.sadd(redis_keys.TRAINER_DOMAINS, domain)
        await self.redis.set(key, 1, nx=True)  # an absent counter means round 1
        return int(await self.redis.incr(key))

    async def has_pairs_for(self, domain: str, question: str) -> bool:
        """Whether this question already has pairs waiting for the next round (possibly none)."""
        return bool(await self.redis.hexists(redis_keys.pending_pairs(domain), question_key(domain, question)))

    async def put_pairs(
        self, domain: str, question: str, pairs: list[PreferencePair], once_key: str | None = None
    ) -> bool:
        """Store a question's pairs (possibly none: it still counts as processed) for the next round.
        False when the question already has pairs waiting (a repeat or a redelivery: the first wins). `once_key`
        (a feedback's `paired_feedback` key) is set in the same step, so that feedback is never paired again,
        even after a round has claimed these pairs."""
        payload = json.dumps([p.model_dump() for p in pairs])
        await self.redis.sadd(redis_keys.TRAINER_DOMAINS, domain)
        pending = redis_keys.pending_pairs(domain)
        if once_key is None:
            return bool(await self.redis.hsetnx(pending, question_key(domain, question), payload))
        keys = [pending, once_key]
        return bool(await self.redis.eval(_PUT_ONCE, 2, *keys, question_key(domain, question), payload, TRACE_TTL_S))

    async def count_outcome(self, entry_id: str, outcome: str, keep_s: float) -> bool:
        """Count what became of one feedback stream entry, once per entry (`keep_s`: as long as a redelivery can
        come, the stream's retention)."""
        if outcome not in FEEDBACK_OUTCOMES:  # the documented list is the metric's label set: keep them one
            raise ValueError(f"undocumented feedback outcome {outcome!r}")
        keys = [redis_keys.feedback_counted(entry_id), redis_keys.FEEDBACK_OUTCOMES]
        return bool(await self.redis.eval(_COUNT_ONCE, 2, *keys, outcome, max(1, int(keep_s))))

    async def feedback_outcomes(self) -> dict[str, int]:
        return {k: int(v) for k, v in (await self.redis.hgetall(redis_keys.FEEDBACK_OUTCOMES)).items()}

    async def was_paired(self, trace_id: str, source: str) -> bool:
        """Whether this feedback's pairs were stored already (defect: a redelivery after a round trained twice)."""
        return bool(await self.redis.exists(redis_keys.paired_feedback(trace_id, source)))

    async def pending_pairs(self, domain: str) -> list[PreferencePair]:
        """What the next round will train on: pairs stored since the last claim, plus the pairs an unfinished
        (failed or skipped) round of the current number already claimed."""
        claimed = await self.claimed_pairs(domain, await self.round(domain))
        return claimed + _parse_pairs(await self.redis.hvals(redis_keys.pending_pairs(domain)))

    async def claim_pairs(self, domain: str, round: int) -> list[PreferencePair]:
        """Move every pending pair into round `round`'s hash, atomically, and return all that round holds.
        Call it under the domain's round lock; a retried round re-claims on top of its earlier claim."""
        await self.redis.eval(_CLAIM, 2, redis_keys.pending_pairs(domain), redis_keys.claimed_pairs(domain, round))
        return await self.claimed_pairs(domain, round)

    async def claimed_pairs(self, domain: str, round: int) -> list[PreferencePair]:
        return _parse_pairs(await self.redis.hvals(redis_keys.claimed_pairs(domain, round)))

    async def reset(self, domain: str) -> int:
        """Forget a domain's pairs, held-out items, round counter and live scores (a fresh experiment: pairs
        drafted by an earlier run's adapters must not train the next one). Returns the keys deleted."""
        keys = [k async for k in self.redis.scan_iter(match=redis_keys.domain_pairs_pattern(domain))]
        keys += [redis_keys.heldout(domain), redis_keys.round_counter(domain), redis_keys.live_scores(domain)]
        return int(await self.redis.delete(*keys))

    async def add_heldout(self, item: Example) -> None:
        # Keyed by the question, so a question seen in many traces is one gate item; the first reference
        # stays (a later feedback cannot move the gate's answer key).
        await self.redis.sadd(redis_keys.TRAINER_DOMAINS, item.domain)
        await self.redis.hsetnx(
            redis_keys.heldout(item.domain), question_key(item.domain, item.question), item.model_dump_json()
        )

    async def heldout(self, domain: str) -> list[Example]:
        values = await self.redis.hvals(redis_keys.heldout(domain))
        return sorted((Example.model_validate_json(v) for v in values), key=lambda i: i.id)

    async def first_feedback(self, trace_id: str, source: str, feedback_id: str) -> bool:
        """True for the first feedback `source` gave on the trace, and for that same feedback redelivered;
        False for any later one (the orchestrator refuses them; this covers records spooled while Redis was
        away and clients writing to the stream directly)."""
        key = redis_keys.feedback_given(trace_id, source)
        await self.redis.set(key, feedback_id, nx=True, ex=TRACE_TTL_S)
        return await self.redis.get(key) == feedback_id

    async def add_live_score(self, domain: str, adapter: str | None, score: float, trace_id: str) -> bool:
        """Count the first score given on a trace, once: a second source or a redelivered entry adds nothing (one
        answer, one vote). False when the trace was already counted."""
        name = adapter or BASE_ADAPTER
        keys = [redis_keys.live_scores(domain), redis_keys.scored_trace(trace_id)]
        return bool(await self.redis.eval(_ADD_SCORE, 2, *keys, f"{name}:n", f"{name}:sum", score, TRACE_TTL_S))

    async def live_totals(self, domain: str, adapter: str | None) -> tuple[int, float]:
        """(number of live scores, their sum) for one adapter version (None: the base model)."""
        n, total = await self.redis.hmget(
            redis_keys.live_scores(domain), f"{adapter or BASE_ADAPTER}:n", f"{adapter or BASE_ADAPTER}:sum"
        )
        return int(n or 0), float(total or 0.0)

    async def live_score(self, domain: str, adapter: str | None) -> tuple[int, float | None]:
        """(number of live scores, their mean) for one adapter version (None: the base model)."""
        count, total = await self.live_totals(domain, adapter)
        return count, (total / count if count else None)

    async def set_manual_rounds(self, domain: str, manual: bool, ttl_s: int | None = None) -> None:
        """Pause (or resume) automatic rounds of a domain: a driver that wants one round per phase,
        like the demo, starts them itself with POST /train. With `ttl_s` the pause lapses on its own
        unless renewed, so a driver killed midway cannot leave the domain paused."""
        if manual:
            await self.redis.set(redis_keys.manual_rounds(domain), "1", ex=ttl_s)
        else:
            await self.redis.delete(redis_keys.manual_rounds(domain))

    async def manual_rounds(self, domain: str) -> bool:
        return bool(await self.redis.exists(redis_keys.manual_rounds(domain)))

    async def remember_trace(self, trace_id: str, data: str, ttl_s: float = TRACE_TTL_S) -> None:
        await self.redis.set(redis_keys.seen_trace(trace_id), data, ex=int(ttl_s))

    async def trace(self, trace_id: str) -> dict | None:
        raw = await self.redis.get(redis_keys.seen_trace(trace_id))
        return json.loads(raw) if raw else None
