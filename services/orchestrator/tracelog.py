"""The trace and feedback log: Redis streams, with a local append-only spool when Redis is away.

- Every record is written with one Lua script that sets `redis_keys.logged(record id)` (NX) and only
  then XADDs: a record replayed twice (say, the process died after XADD but before trimming the
  spool) is stored once.
- When an XADD fails or times out, the record goes to the spool file (fsynced JSON lines) and so do
  all later records until the spool is replayed, so the stream keeps the original order.
- A background task replays the spool in order when Redis answers again; the spool outlives the
  process, so records spooled before a crash or restart are replayed by the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import redis_keys
from shared.records import FeedbackRecord, StreamRecord, TraceRecord
from shared.redis_keys import FEEDBACK_STREAM, TRACES_STREAM, logged

logger = logging.getLogger(__name__)
KEEP_IDS_S = 30 * 24 * 3600  # how long a record id stays known (feedback 404s and de-duplication)
XADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
"""
LOG_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class TraceLog:
    def __init__(
        self,
        redis: Redis,
        spool_path: Path,
        *,
        maxlen: int = 1_000_000,
        timeout_s: float = 0.5,
        replay_interval_s: float = 1.0,
        remember: int = 10_000,
    ):
        self.redis = redis
        self.spool_path = spool_path
        self.maxlen = maxlen
        self.timeout_s = timeout_s
        self.replay_interval_s = replay_interval_s
        self._script = redis.register_script(XADD_ONCE)
        self._lock = asyncio.Lock()  # one writer at a time keeps stream order == arrival order
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self.backlog = self._count_spooled()

    # --- writing --------------------------------------------------------------------------
    async def log_trace(self, record: TraceRecord) -> bool:
        self._recent[record.trace_id] = None
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return await self._append(TRACES_STREAM, record)

    async def log_feedback(self, record: FeedbackRecord) -> bool:
        return await self._append(FEEDBACK_STREAM, record)

    async def _append(self, stream: str, record: StreamRecord) -> bool:
        """True when the record is in Redis, False when it waits in the spool. Never raises."""
        fields = record.to_fields()
        async with self._lock:
            if self.backlog == 0:
                try:
                    await self._xadd(stream, fields)
                    return True
                except LOG_ERRORS as exc:
                    logger.warning("Redis unavailable (%s): spooling to %s", exc, self.spool_path)
            self._spool(stream, fields)
            return False

    async def _xadd(self, stream: str, fields: dict[str, str]) -> None:
        args = [KEEP_IDS_S, self.maxlen, *[x for kv in fields.items() for x in kv]]
        keys = [stream, logged(fields["id"])]
        await asyncio.wait_for(self._script(keys=keys, args=args), self.timeout_s)

    def _spool(self, stream: str, fields: dict[str, str]) -> None:
        with self.spool_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"stream": stream, "fields": fields}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.backlog += 1

    def _count_spooled(self) -> int:
        try:
            with self.spool_path.open(encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    # --- replay ---------------------------------------------------------------------------
    async def replay(self) -> int:
        """Ship spooled records in order; keep the rest when Redis fails again. Returns how many left."""
        async with self._lock:
            if self.backlog == 0:
                return 0
            lines = [ln for ln in self.spool_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            done = 0
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    logger.error("dropping a torn spool line (process died mid-write): %.80s", line)
                    done += 1
                    continue
                try:
                    await self._xadd(entry["stream"], entry["fields"])
                except LOG_ERRORS:
                    break
                done += 1
            rest = lines[done:]
            tmp = self.spool_path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in rest), encoding="utf-8")
            os.replace(tmp, self.spool_path)
            self.backlog = len(rest)
            if done:
                logger.info("replayed %d spooled records, %d left", done, len(rest))
            return self.backlog

    async def run_replayer(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            try:
                await self.replay()
            except Exception:  # noqa: BLE001 - the replayer must survive anything and try again
                logger.exception("spool replay failed")

    async def claim_feedback(self, trace_id: str, source: str, feedback_id: str) -> bool | None:
        """Record that `source` gave feedback `feedback_id` on the trace: False when it already gave one, None
        when Redis cannot tell (then the trainer, which checks the same key, keeps only the first)."""
        try:
            key = redis_keys.feedback_given(trace_id, source)
            return bool(
                await asyncio.wait_for(self.redis.set(key, feedback_id, nx=True, ex=KEEP_IDS_S), self.timeout_s)
            )
        except LOG_ERRORS:
            return None

    # --- reading --------------------------------------------------------------------------
    async def trace_known(self, trace_id: str) -> bool | None:
        """True/False when it can tell; None when Redis is unreachable and the id is not recent here."""
        if trace_id in self._recent:
            return True
        try:
            return bool(await asyncio.wait_for(self.redis.exists(logged(trace_id)), self.timeout_s))
        except LOG_ERRORS:
            return None
