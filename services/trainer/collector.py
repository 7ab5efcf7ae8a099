"""Turns traffic and datasets into preference pairs.

Reads the trace and feedback streams (shared/redis_keys.py) with a Redis consumer group (XREADGROUP, XACK after the
pairs are stored; entries left pending by a crashed consumer are reclaimed with XAUTOCLAIM):
at-least-once delivery, made idempotent by writing each question's pairs once until a round claims them. A trace is
remembered until feedback with a `correct_answer` names it; then collaborative feedback is computed
for its question with that reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.trainer import dead_letters
from services.trainer.collab import CollabClient
from services.trainer.config import TrainerSettings
from services.trainer.pairs import PreferencePair, deltas, select_pairs
from services.trainer.store import TrainerStore, is_heldout
from shared import redis_keys
from shared.adapters import get_active_adapter
from shared.data.example import Example
from shared.records import FeedbackRecord, TraceRecord
from shared.redis_keys import FEEDBACK_STREAM, TRACES_STREAM, TRAINER_GROUP
from shared.supervise import stop_if_cancelled

logger = logging.getLogger(__name__)
# How long feedback whose trace was never logged waits for it: the orchestrator keeps a trace id this long (a
# feedback on an older trace is a 404), and a trace may sit in an orchestrator's spool while Redis is away. A
# trace that was logged is waited for as long as it takes (it is in the stream: the collector will read it).
TRACE_WAIT_S = 7 * 24 * 3600


@dataclass
class Processed:
    """What collaborative feedback did with one question."""

    status: str  # processed | heldout | waiting (already has pairs for the next round) | ignored | failed
    pairs: int = 0
    deltas: list[float] = field(default_factory=list)  # per draft: score with the draft - strong alone


@dataclass
class BuildReport:
    """A bulk build's yield: the share of questions giving at least one pair, and the Δ histogram."""

    questions: int = 0
    processed: int = 0
    heldout: int = 0
    waiting: int = 0
    ignored: int = 0
    failed: int = 0  # a model call failed after its retries: run the build again for these
    errors: list[str] = field(default_factory=list)  # the first few failures
    pairs: int = 0
    questions_with_pairs: int = 0
    gate_items: int = 0  # distinct held-out questions of the domain now (what the gate scores)
    delta_histogram: dict[str, int] = field(default_factory=dict)  # Δ rounded to 0.1 -> drafts
    seconds: float = 0.0

    def add(self, p: Processed) -> None:
        setattr(self, p.status, getattr(self, p.status) + 1)
        self.pairs += p.pairs
        self.questions_with_pairs += p.pairs > 0
        for d in p.deltas:
            key = f"{round(d, 1):+.1f}"
            self.delta_histogram[key] = self.delta_histogram.get(key, 0) + 1

    @property
    def pair_yield(self) -> float:
        return self.questions_with_pairs / self.processed if self.processed else 0.0


def _entry_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), ordered as Redis orders them."""
    ms, _, seq = str(entry_id).partition("-")
    return int(ms), int(seq or 0)


def served_by_adapter(trace: dict) -> bool:
    """Whether the answer a score is about came through the trace's adapter version: a draft it wrote, in the
    collaboration or alone. A strong-alone answer, or one degraded because the weak model failed, is not that
    version's work and must not move its live score."""
    degraded = trace.get("degraded") or ""
    drafted = trace.get("drafted", trace.get("draft") is not None)  # "draft": a copy kept before JOIN_FIELDS
    return trace.get("mode", "collab") != "strong" and drafted and not degraded.startswith("weak")


def valid_score(score: float) -> bool:
    """The feedback contract's range; older records may hold anything (NaN, 1e308)."""
    return math.isfinite(score) and 0.0 <= score <= 1.0


# What the trainer keeps of a trace to join later feedback with: its question, and who answered it how.
JOIN_FIELDS = ("trace_id", "domain", "question", "context", "weak_adapter", "mode", "degraded")


class TraceNotSeenYet(Exception):
    """The two streams are read independently: feedback can come before its trace. Retry later."""


class TraceNeverArrived(Exception):
    """Feedback whose trace did not arrive within TRACE_WAIT_S: dead-lettered, not dropped."""


class Collector:
    def __init__(
        self,
        settings: TrainerSettings,
        redis: Redis,
        store: TrainerStore,
        collab: CollabClient,
        consumer: str | None = None,
        reclaim_idle_ms: int | None = None,
    ):
        self.settings, self.redis, self.store, self.collab = settings, redis, store, collab
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.reclaim_idle_ms = int(settings.reclaim_idle_s * 1000) if reclaim_idle_ms is None else reclaim_idle_ms
        self.processed = 0
        self.waiting = 0  # feedback entries waiting for their trace in the last pass (trainer /metrics)
        self.dead_lettered = 0  # entries this process moved to the dead-letter stream
        self._sem = asyncio.Semaphore(settings.concurrency)  # model calls in flight
        self._entries = asyncio.Semaphore(32)  # entries in flight: bounds Redis connections too
        self._reclaim_from = {TRACES_STREAM: "0-0", FEEDBACK_STREAM: "0-0"}  # XAUTOCLAIM's cursor per stream
        self._waiting = 0

    async def ensure_groups(self) -> None:
        for stream in (TRACES_STREAM, FEEDBACK_STREAM):
            try:
                await self.redis.xgroup_create(stream, TRAINER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def active_adapter(self, domain: str) -> str | None:
        return await get_active_adapter(self.redis, domain)

    # --- one question -----------------------------------------------------------------------
    async def process_item(
        self, item: Example, trace_ids: list[str] | None = None, once_key: str | None = None
    ) -> int:
        """Collaborative feedback for one question; returns how many pairs it stored."""
        return (await self.feedback_item(item, trace_ids, once_key)).pairs

    async def feedback_item(
        self, item: Example, trace_ids: list[str] | None = None, once_key: str | None = None
    ) -> Processed:
        if self.settings.domains is not None and item.domain not in self.settings.domains:
            return Processed("ignored")
        if is_heldout(item.domain, item.question):
            await self.store.add_heldout(item)
            return Processed("heldout")
        if await self.store.has_pairs_for(item.domain, item.question):
            return Processed("waiting")  # already waiting for the next round (a repeat or a redelivery)
        round_ = await self.store.round(item.domain)  # only labels the pairs and seeds the drafts
        adapter = await self.active_adapter(item.domain)
        seed = int(hashlib.sha256(f"{item.id}:{round_}".encode()).hexdigest()[:8], 16)  # reproducible drafts
        async with self._sem:
            fb = await self.collab.feedback(
                item.question, item.domain, adapter, item.answers[0], item.context, seed=seed
            )
        pairs = [
            PreferencePair(
                pair_id=f"{item.domain}:{round_}:{item.id}:{i}",
                domain=item.domain,
                round=round_,
                question_id=item.id,
                prompt=fb.prompt,
                chosen=c.draft,
                rejected=r.draft,
                chosen_delta=dc,
                rejected_delta=dr,
                strong_alone_score=fb.strong_alone_score,
                adapter=adapter,
                trace_ids=trace_ids or [],
            )
            for i, (c, r, dc, dr) in enumerate(
                select_pairs(
                    fb.drafts, fb.strong_alone_score, self.settings.pair_margin, self.settings.max_pairs_per_question
                )
            )
        ]
        stored = await self.store.put_pairs(item.domain, item.question, pairs, once_key)
        self.processed += 1
        return Processed(
            "processed" if stored else "waiting", len(pairs) if stored else 0, deltas(fb.drafts, fb.strong_alone_score)
        )

    async def build(self, items: list[Example], limit: int | None = None) -> BuildReport:
        """The paper's protocol over a labelled set (a training split): every held-out question goes to the
        gate (free: no model call), at most `limit` of the others are turned into pairs, `concurrency` at a
        time so the servers batch them."""
        report = BuildReport(questions=len(items))
        todo = [i for i in items if not is_heldout(i.domain, i.question)][:limit]
        heldout = [i for i in items if is_heldout(i.domain, i.question)]
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(self.feedback_item(i) for i in heldout + todo), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancellation: not a failed question
            if isinstance(outcome, Exception):
                report.failed += 1
                if len(report.errors) < 5:
                    report.errors.append(f"{type(outcome).__name__}: {outcome}"[:300])
            else:
                report.add(outcome)
        report.seconds = round(time.perf_counter() - t0, 1)
        if items:
            report.gate_items = len(await self.store.heldout(items[0].domain))
        return report

    # --- the streams ------------------------------------------------------------------------
    async def handle(self, stream: str, fields: dict[str, str]) -> str | None:
        """Take in one entry; for feedback, returns its outcome (store.FEEDBACK_OUTCOMES)."""
        if stream == TRACES_STREAM:
            trace = TraceRecord.from_fields(fields)
            # Only what joining a feedback needs (the stream keeps the whole record until it is trimmed): a full
            # copy cost ~3x the memory (bench/redis_memory.py).
            joined = {f: getattr(trace, f) for f in JOIN_FIELDS} | {"drafted": trace.draft is not None}
            await self.store.remember_trace(trace.trace_id, json.dumps(joined), self.settings.trace_keep_s)
            return None
        feedback = FeedbackRecord.from_fields(fields)
        if feedback.correct_answer is None and feedback.score is None:
            return "no_reference"  # labels and comments stay in the log
        trace = await self.store.trace(feedback.trace_id)
        if trace is None:
            # Wait (the entry stays pending) while the trace can still come: it is in the stream unread, or in an
            # orchestrator's spool. Past TRACE_WAIT_S it is dead-lettered, never dropped (replay-dead brings it back).
            if await self.redis.exists(redis_keys.logged(feedback.trace_id)):
                raise TraceNotSeenYet(feedback.trace_id)
            if time.time() - feedback.created_at < TRACE_WAIT_S:
                raise TraceNotSeenYet(feedback.trace_id)
            raise TraceNeverArrived(f"feedback {feedback.feedback_id} names a trace never seen: {feedback.trace_id}")
        if not await self.store.first_feedback(feedback.trace_id, feedback.source, feedback.feedback_id):
            logger.info("ignoring feedback %s: %s gave one already", feedback.feedback_id, feedback.source)
            return "repeat_source"
        if feedback.score is not None and valid_score(feedback.score) and served_by_adapter(trace):
            # Live quality of the version that wrote the draft (canary verdicts, auto-rollback): one vote per trace.
            await self.store.add_live_score(
                trace["domain"], trace.get("weak_adapter"), feedback.score, trace["trace_id"]
            )
        if feedback.correct_answer is None:
            return "score_only"
        item = Example(
            id=trace["trace_id"],
            domain=trace["domain"],
            question=trace["question"],
            answer=feedback.correct_answer,
            context=trace.get("context"),
        )
        if await self.store.was_paired(feedback.trace_id, feedback.source):
            return "paired"  # redelivered after its pairs were stored (and maybe trained on): pair nothing twice
        once = redis_keys.paired_feedback(feedback.trace_id, feedback.source)
        done = await self.feedback_item(item, trace_ids=[trace["trace_id"]], once_key=once)
        if done.status == "processed":
            return "paired" if done.pairs else "no_pair"
        return {"heldout": "heldout", "waiting": "question_waiting"}.get(done.status, "other_domain")

    async def poll(self, block_ms: int = 1000) -> int:
        """One pass: reclaimed pending entries first (those whose backoff is over), then new ones. Returns
        entries handled."""
        batches = []
        now = time.time()
        for stream in (TRACES_STREAM, FEEDBACK_STREAM):
            cursor, claimed, *_ = await self.redis.xautoclaim(
                stream,
                TRAINER_GROUP,
                self.consumer,
                self.reclaim_idle_ms,
                start_id=self._reclaim_from[stream],
                count=500,
            )
            self._reclaim_from[stream] = cursor  # "0-0" again once the scan wrapped around
            own = await self.redis.xreadgroup(TRAINER_GROUP, self.consumer, {stream: "0"}, count=500)  # ours, unacked
            entries = list(claimed) + [e for _, got in own for e in got]
            backoff = await self.redis.hgetall(redis_keys.retry_at(stream))
            batches.append((stream, [e for e in entries if float(backoff.get(e[0], 0)) <= now]))
        # Traces are cheap to take in (one SET each) and feedback waits for them: read them in big batches.
        traces = await self.redis.xreadgroup(TRAINER_GROUP, self.consumer, {TRACES_STREAM: ">"}, count=1000)
        fresh = await self.redis.xreadgroup(
            TRAINER_GROUP, self.consumer, {TRACES_STREAM: ">", FEEDBACK_STREAM: ">"}, count=50, block=block_ms
        )
        batches += [(stream, entries) for stream, entries in (traces or []) + (fresh or [])]
        handled = 0
        self._waiting = 0
        seen: set[tuple[str, str]] = set()
        # Traces before feedback, so a trace and its feedback in one batch join up.
        for stream, entries in sorted(batches, key=lambda b: b[0] != TRACES_STREAM):
            tasks = []
            for entry_id, fields in entries:
                if (stream, entry_id) in seen or not fields:
                    continue
                seen.add((stream, entry_id))
                tasks.append(self._handle_and_ack(stream, entry_id, fields))
            handled += sum(await asyncio.gather(*tasks))
        self.waiting = self._waiting
        return handled

    async def _handle_and_ack(self, stream: str, entry_id, fields) -> int:
        async with self._entries:
            return await self._handle_and_ack_one(stream, entry_id, fields)

    async def _handle_and_ack_one(self, stream: str, entry_id, fields) -> int:
        try:
            outcome = await self.handle(stream, fields)
        except TraceNotSeenYet:
            self._waiting += 1
            return 0  # stays pending: the next pass retries it, after the trace was read
        except TraceNeverArrived as exc:
            return await self._dead_letter(stream, entry_id, fields, exc)
        except (ValueError, KeyError) as exc:
            logger.error("dropping malformed entry %s of %s: %s", entry_id, stream, exc)
            outcome = "malformed" if stream == FEEDBACK_STREAM else None
        except (RedisError, OSError):
            raise  # Redis is away: the pass fails and the entry stays pending, no delivery is counted
        except Exception as exc:  # noqa: BLE001 - a model-server error: retried, then dead-lettered
            return await self._failed(stream, entry_id, fields, exc)
        if outcome is not None:  # counted before the ack: a crash in between recounts nothing (once per entry)
            await self.store.count_outcome(entry_id, outcome, self.settings.stream_retention_s)
        await self.redis.xack(stream, TRAINER_GROUP, entry_id)  # only after the pairs are stored
        await self.redis.hdel(redis_keys.delivery_failures(stream), entry_id)
        await self.redis.hdel(redis_keys.retry_at(stream), entry_id)
        return 1

    async def _failed(self, stream: str, entry_id: str, fields: dict[str, str], exc: Exception) -> int:
        """Count a failed delivery and back the entry off (2, 4, 8, ... s: a model server restarting for a few
        seconds costs a few retries, not the entry); after `max_deliveries` move it to the dead-letter stream."""
        failures = await self.redis.hincrby(redis_keys.delivery_failures(stream), entry_id, 1)
        if failures < self.settings.max_deliveries:
            wait = min(self.settings.retry_base_s * 2 ** (failures - 1), self.settings.retry_max_s)
            await self.redis.hset(redis_keys.retry_at(stream), entry_id, time.time() + wait)
            logger.warning(
                "entry %s of %s failed (%d of %d), next try in %.0f s: %s",
                entry_id,
                stream,
                failures,
                self.settings.max_deliveries,
                wait,
                exc,
            )
            return 0
        return await self._dead_letter(stream, entry_id, fields, exc)

    async def _dead_letter(self, stream: str, entry_id: str, fields: dict[str, str], exc: Exception) -> int:
        await dead_letters.dead_letter(self.redis, stream, entry_id, fields, exc)
        self.dead_lettered += 1
        return 1

    async def replay_dead(self, limit: int = 10_000) -> int:
        """Dead-lettered entries back on their streams (services/trainer/dead_letters.py)."""
        return await dead_letters.replay(self.redis, limit)

    async def trim(self, now_ms: int | None = None) -> int:
        """Trim what the trainer group has read and acknowledged, once older than `stream_retention_s`: entries
        before the oldest pending one and up to the group's last-delivered id. Returns entries removed."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = (now_ms - int(self.settings.stream_retention_s * 1000), 0)
        removed = 0
        for stream in (TRACES_STREAM, FEEDBACK_STREAM):
            group = next((g for g in await self.redis.xinfo_groups(stream) if g["name"] == TRAINER_GROUP), None)
            if group is None:
                continue
            ms, seq = _entry_id(group["last-delivered-id"])
            safe = (ms, seq + 1)  # MINID keeps ids >= it: everything delivered goes, unless still pending
            pending = await self.redis.xpending(stream, TRAINER_GROUP)
            if pending["pending"]:
                safe = min(safe, _entry_id(pending["min"]))
            upto = min(safe, cutoff)
            if upto > (0, 0):
                removed += await self.redis.xtrim(stream, minid=f"{upto[0]}-{upto[1]}", approximate=False)
        return removed

    async def run(self) -> None:
        """Poll forever (run under shared/supervise.py: Redis down at start-up is retried there too)."""
        await self.ensure_groups()
        passes = 0
        while True:
            stop_if_cancelled()
            passes += 1
            if passes % 600 == 0:  # about every 10 minutes of idle polling
                with contextlib.suppress(RedisError, OSError):
                    await self.trim()
            try:
                await self.poll()
            except (RedisError, OSError) as exc:
                stop_if_cancelled()
                logger.warning("collector: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(1.0)
            except Exception:  # noqa: BLE001 - a model server error must not kill the loop
                stop_if_cancelled()
                logger.exception("collector pass failed; its entries stay pending and are retried")
                await asyncio.sleep(1.0)
