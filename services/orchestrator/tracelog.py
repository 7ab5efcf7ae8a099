"""The trace and feedback log: Redis streams, with a local append-only spool when Redis is away.

- Every record is written with one Lua script that sets `redis_keys.logged(record id)` (NX) and only
  then XADDs: a record replayed twice (say, the process died after XADD but before trimming the
  spool) is stored once. A feedback's script also claims its (trace, source) in the same step: one feedback
  per source, and never a claim whose record was lost.
- When an XADD fails or times out, the record goes to the spool file (fsynced JSON lines) and so do
  all later records until the spool is replayed, so the stream keeps the original order.
- A background task replays the spool in order when Redis answers again; the spool outlives the
  process, so records spooled before a crash or restart are replayed by the next one.
- The spool is one file per process (an exclusive lock; with `slots`, a process takes the first free slot
  `<stem>.<N><suffix>` beside the configured path, so several workers share one setting, and replays the spools
  of slots whose process is gone), fsynced off the event loop, bounded
  (`max_spool_bytes`: beyond it records are dropped and counted), and crash-safe: a torn last line is ended
  before anything is appended, a write cut short (ENOSPC) is truncated away, trimming empties the file in
  place when everything was shipped (no free space needed: the disk may be full) and otherwise writes a new
  file and renames it, a record Redis refuses for good is set aside in `<spool>.rejected` instead of blocking
  the replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import mmap
import os
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from shared import redis_keys
from shared.records import FeedbackRecord, StreamRecord, TraceRecord
from shared.redis_keys import FEEDBACK_STREAM, TRACES_STREAM, logged
from shared.supervise import stop_if_cancelled

logger = logging.getLogger(__name__)
KEEP_IDS_S = 7 * 24 * 3600  # how long a record id stays known: feedback on an older trace is a 404
# ARGV: id TTL, MAXLEN, the record's kind (kept as the id key's value: feedback names traces only), fields.
XADD_ONCE = """
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
end
return false
"""
# A feedback: the claim of its (trace, source) and its XADD in one step, so that no crash can leave a claim
# without its record (a client retrying after a lost answer would get 409 for a feedback that was never stored).
# KEYS: stream, logged(feedback id), feedback_given(trace, source). ARGV: id TTL, MAXLEN, kind, feedback id,
# fields. Returns 1 when stored now, 0 when this very feedback was stored before, -1 when another one holds the claim.
FEEDBACK_ONCE = """
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[4] then
  return -1
end
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[1])
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 5))
  return 1
end
return 0
"""
TRACE_KINDS = ("trace", "1")  # "1": ids logged before the kind was recorded
LOG_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
Logged = Literal["redis", "spool", "dropped", "taken"]  # where a record went (`TraceLog._append`)


class SpoolInUse(RuntimeError):
    """Another process holds this spool file (or every slot beside it): every replica needs its own."""


def slot_path(spool_path: Path, slot: int) -> Path:
    """Slot 0 is the configured path; slot N is `<stem>.N<suffix>` beside it."""
    return spool_path if slot == 0 else spool_path.with_name(f"{spool_path.stem}.{slot}{spool_path.suffix}")


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
        max_spool_bytes: int = 256 * 2**20,
        slots: int = 1,
    ):
        self.redis = redis
        self.base_path, self.slots = spool_path, slots
        self.maxlen = maxlen
        self.timeout_s = timeout_s
        self.replay_interval_s = replay_interval_s
        self.max_spool_bytes = max_spool_bytes
        self._script = redis.register_script(XADD_ONCE)
        self._feedback_script = redis.register_script(FEEDBACK_ONCE)
        # Held only while the spool is in use (appending, or trimming after a replay), never across a Redis call
        # of the normal path: concurrent requests XADD concurrently.
        self._lock = asyncio.Lock()
        self._replaying = asyncio.Lock()  # one replay at a time: a trim's offsets assume nothing else trimmed
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.dropped = 0  # records neither in Redis nor in the spool (spool full or the disk failed): an alert
        self.rejected = 0  # spooled records Redis refused for good (moved to <spool>.rejected)
        spool_path.parent.mkdir(parents=True, exist_ok=True)
        self.spool_path, self._owner = self._claim_spool()
        self._end_torn_line()
        self.backlog = self._count_spooled()

    # --- the spool file -------------------------------------------------------------------
    def _claim_spool(self):
        """An exclusive lock on a spool for this process's life (two processes appending to one file would
        interleave and trim each other's records): the first free slot. Returns its path and the lock's file."""
        for slot in range(self.slots):
            path = slot_path(self.base_path, slot)
            owner = open(path.with_name(path.name + ".lock"), "a")
            try:
                fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return path, owner
            except BlockingIOError:
                owner.close()
        raise SpoolInUse(f"{self.base_path} ({self.slots} slot(s)) is in use by other processes: give each its own")

    def close(self) -> None:
        self._owner.close()  # releases the lock

    def _end_torn_line(self) -> None:
        """A process killed mid-write leaves a last line without its newline; end it, so the next record does
        not merge into it (replay drops the torn line alone)."""
        try:
            with self.spool_path.open("rb+") as f:
                if f.seek(0, os.SEEK_END) and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
        except FileNotFoundError:
            pass

    @property
    def spool_bytes(self) -> int:
        try:
            return self.spool_path.stat().st_size
        except FileNotFoundError:
            return 0

    # --- writing --------------------------------------------------------------------------
    async def log_trace(self, record: TraceRecord) -> bool:
        self._recent[record.trace_id] = None
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return await self._append(TRACES_STREAM, record) == "redis"

    async def log_feedback(self, record: FeedbackRecord) -> Logged:
        """As `_append`, and the one feedback its source may give on the trace: "taken" (nothing written) when the
        source already gave another one. Claim and record are one Redis step; while records wait in the spool
        (or Redis is away) a duplicate is refused when Redis can tell, and otherwise left to the trainer, which
        keeps the first per trace and source (the same key)."""
        given = redis_keys.feedback_given(record.trace_id, record.source)
        if self.backlog:
            with contextlib.suppress(*LOG_ERRORS):
                owner = await asyncio.wait_for(self.redis.get(given), self.timeout_s)
                if owner is not None and owner != record.feedback_id:
                    return "taken"
        return await self._append(FEEDBACK_STREAM, record, claim=given)

    async def _append(self, stream: str, record: StreamRecord, claim: str | None = None) -> Logged:
        """Where the record went: "redis", "spool" (replayed when Redis is back), "dropped" (the spool is full or
        unwritable: counted in `dropped`), or "taken" when `claim` (a feedback's key) is held by another record.
        Never raises: a served answer must not become a 500 because its log failed."""
        fields = record.to_fields()
        if self.backlog == 0:
            try:
                if claim is None:
                    await self._xadd(stream, fields)
                    return "redis"
                return await self._xadd_claimed(stream, fields, claim)
            except LOG_ERRORS as exc:
                logger.warning("Redis unavailable (%s): spooling to %s", exc, self.spool_path)
        async with self._lock:  # every later record follows into the spool until it is replayed: order kept
            line = json.dumps({"stream": stream, "fields": fields}) + "\n"
            if self.spool_bytes + len(line) > self.max_spool_bytes:
                self.dropped += 1
                logger.error(
                    "spool %s is full (%d bytes): record %s dropped",
                    self.spool_path,
                    self.max_spool_bytes,
                    fields["id"],
                )
                return "dropped"
            try:
                await asyncio.to_thread(self._spool_line, line)  # fsync off the event loop
            except OSError as exc:  # disk full, read-only, ...
                self.dropped += 1
                logger.error("cannot spool record %s to %s: %s", fields["id"], self.spool_path, exc)
                return "dropped"
            self.backlog += 1
            return "spool"

    async def _xadd(self, stream: str, fields: dict[str, str]) -> None:
        args = [KEEP_IDS_S, self.maxlen, fields["kind"], *[x for kv in fields.items() for x in kv]]
        keys = [stream, logged(fields["id"])]
        await asyncio.wait_for(self._script(keys=keys, args=args), self.timeout_s)

    async def _xadd_claimed(self, stream: str, fields: dict[str, str], claim: str) -> Logged:
        args = [KEEP_IDS_S, self.maxlen, fields["kind"], fields["id"], *[x for kv in fields.items() for x in kv]]
        keys = [stream, logged(fields["id"]), claim]
        done = await asyncio.wait_for(self._feedback_script(keys=keys, args=args), self.timeout_s)
        return "taken" if done == -1 else "redis"

    def _spool_line(self, line: str) -> None:
        """Append one line and fsync it; a write cut short (disk full) is truncated away, leaving no torn line."""
        fd = os.open(self.spool_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                data = memoryview(line.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

    def _count_spooled(self) -> int:
        try:
            with self.spool_path.open(encoding="utf-8", errors="replace") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    # --- replay ---------------------------------------------------------------------------
    async def replay(self, batch: int = 1000) -> int:
        """Ship spooled records in order, a batch at a time, without holding the spool while Redis is called;
        stop when Redis fails again, then drop what was shipped. Returns how many are left."""
        async with self._replaying:
            async with self._lock:
                if self.backlog == 0:
                    return 0
            offset, shipped, rejected, failed = 0, 0, [], False
            while not failed:
                lines = await asyncio.to_thread(self._read_batch, offset, batch)
                if not lines:
                    break
                for line, end in lines:
                    try:
                        if line.strip():
                            entry = json.loads(line)
                            await self._xadd(entry["stream"], entry["fields"])
                    except (ValueError, KeyError, TypeError):
                        logger.error("dropping a torn spool line (process died mid-write): %.80s", line)
                    except ResponseError as exc:  # Redis answered and refused it: retrying cannot help
                        logger.error("Redis refused a spooled record for good (%s): set aside", exc)
                        rejected.append(line)
                    except LOG_ERRORS:
                        failed = True
                        break
                    shipped = end
                offset = lines[-1][1]
            async with self._lock:  # records appended meanwhile lie behind `shipped`: they stay
                if shipped:
                    await asyncio.to_thread(self._trim, shipped, rejected)
                self.backlog = self._count_spooled()
        self.rejected += len(rejected)
        if shipped:
            logger.info("replayed the spool up to byte %d, %d records left", shipped, self.backlog)
        return self.backlog

    def _read_batch(self, offset: int, n: int) -> list[tuple[str, int]]:
        """Up to `n` whole lines from byte `offset`, each with the offset just past it. A last line without its
        newline is being written (appends run beside the replay): left for the next replay."""
        out: list[tuple[str, int]] = []
        with self.spool_path.open("rb") as f:
            f.seek(offset)
            while len(out) < n and (raw := f.readline()).endswith(b"\n"):
                offset += len(raw)
                out.append((raw.decode("utf-8", errors="replace").rstrip("\n"), offset))
        return out

    def _trim(self, shipped: int, rejected: list[str]) -> None:
        """Drop the spool's first `shipped` bytes. All of it: empty the file in place (needs no free space, and a
        crash leaves either all of it, shipped again and stored once, or nothing). Part of it: copy the rest to a
        new file, fsync, rename; when that copy cannot be written (disk full) keep the spool as it is: the next
        replay ships those records again, stored once, and empties it."""
        if rejected:
            with self.spool_path.with_name(self.spool_path.name + ".rejected").open("a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in rejected))
                f.flush()
                os.fsync(f.fileno())
        with self.spool_path.open("rb+") as src:
            if src.seek(0, os.SEEK_END) <= shipped:
                src.truncate(0)
                os.fsync(src.fileno())
                return
            src.seek(shipped)
            tmp = self.spool_path.with_suffix(".tmp")
            try:
                with tmp.open("wb") as dst:
                    while chunk := src.read(2**20):
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                logger.warning("cannot trim the spool (%s): its shipped records will be sent again", exc)
                return
        os.replace(tmp, self.spool_path)
        dirfd = os.open(self.spool_path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)  # the rename itself survives a crash
        finally:
            os.close(dirfd)

    async def adopt_orphans(self) -> int:
        """Replay the spools of other slots whose process is gone (a worker that died, or was scaled away): their
        lock is free. A live process's spool is left to it. Returns how many records were shipped."""
        shipped = 0
        for slot in range(self.slots):
            path = slot_path(self.base_path, slot)
            if path == self.spool_path or not path.exists() or not path.stat().st_size:
                continue
            try:
                orphan = TraceLog(self.redis, path, maxlen=self.maxlen, timeout_s=self.timeout_s)
            except SpoolInUse:
                continue
            try:
                before = orphan.backlog
                shipped += before - await orphan.replay()
            finally:
                orphan.close()
        return shipped

    async def run_replayer(self) -> None:
        passes = 0
        while True:
            stop_if_cancelled()
            await asyncio.sleep(self.replay_interval_s)
            passes += 1
            try:
                if self.slots > 1 and passes % 30 == 1:
                    await self.adopt_orphans()
                await self.replay()
            except Exception:  # noqa: BLE001 - the replayer must survive anything and try again
                stop_if_cancelled()
                logger.exception("spool replay failed")

    # --- reading --------------------------------------------------------------------------
    async def trace_known(self, trace_id: str) -> bool | None:
        """True/False when it can tell; None when Redis is unreachable and the id is not recent here."""
        if trace_id in self._recent:
            return True
        try:
            # Only a trace: a feedback id (also logged once) is not something to give feedback on.
            if await asyncio.wait_for(self.redis.get(logged(trace_id)), self.timeout_s) in TRACE_KINDS:
                return True
        except LOG_ERRORS:
            return None
        # Not in Redis yet: it may wait in another worker's spool (served while Redis was away, not replayed yet).
        return await asyncio.to_thread(self._in_sibling_spool, trace_id)

    def _in_sibling_spool(self, trace_id: str) -> bool:
        """Whether another worker's spool (the other slots beside this one) holds a record with this id."""
        needle = json.dumps(trace_id).encode()
        for slot in range(self.slots):
            path = slot_path(self.base_path, slot)
            if path == self.spool_path:
                continue
            try:
                with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if data.find(needle) >= 0:
                        return True
            except (OSError, ValueError):  # no such slot, or an empty file (mmap refuses length 0)
                continue
        return False
