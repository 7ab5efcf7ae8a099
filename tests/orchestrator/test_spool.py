"""The trace log's spool (issue 11, defect 5): one file per process, a torn last line cannot swallow the next
record, a full or failing disk loses a record but never raises, and a record Redis refuses for good is set
aside instead of blocking the replay."""

from __future__ import annotations

import json

import pytest

from services.orchestrator.tracelog import SpoolInUse, TraceLog
from shared import redis_keys
from shared.records import TraceRecord
from tests.support.servers import free_port


def record(i: int) -> TraceRecord:
    return TraceRecord(trace_id=f"tr-spool-{i}", domain="general", draft_format="cot", question=f"q{i}")


def unreachable():
    return redis_keys.connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)


async def test_a_torn_last_line_does_not_swallow_the_next_record(private_redis, tmp_path):
    spool = tmp_path / "spool.jsonl"
    good = json.dumps({"stream": redis_keys.TRACES_STREAM, "fields": record(1).to_fields()})
    spool.write_text(good + "\n" + good[:40])  # the previous process died mid-write
    down = TraceLog(unreachable(), spool)
    assert not await down.log_trace(record(2))  # spooled behind the torn line
    down.close()
    up = TraceLog(redis_keys.connect(private_redis.url), spool)
    try:
        assert await up.replay() == 0
        ids = [f["id"] for _, f in await up.redis.xrange(redis_keys.TRACES_STREAM)]
        assert "tr-spool-1" in ids and "tr-spool-2" in ids
    finally:
        up.close()


async def test_a_full_or_failing_spool_drops_and_counts_but_never_raises(tmp_path, monkeypatch):
    log = TraceLog(unreachable(), tmp_path / "spool.jsonl", max_spool_bytes=1)
    try:
        assert not await log.log_trace(record(1)) and log.dropped == 1 and log.backlog == 0
        log.max_spool_bytes = 10**9

        def disk_full(line: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(log, "_spool_line", disk_full)
        assert not await log.log_trace(record(2)) and log.dropped == 2
    finally:
        log.close()


def test_two_processes_cannot_share_a_spool(tmp_path):
    first = TraceLog(unreachable(), tmp_path / "spool.jsonl")
    try:
        with pytest.raises(SpoolInUse):
            TraceLog(unreachable(), tmp_path / "spool.jsonl")
    finally:
        first.close()
    TraceLog(unreachable(), tmp_path / "spool.jsonl").close()  # free again once the first is closed


async def test_a_record_redis_refuses_for_good_is_set_aside(private_redis, tmp_path):
    spool = tmp_path / "spool.jsonl"
    redis = redis_keys.connect(private_redis.url)
    await redis.set("cowest:not-a-stream", "x")  # XADD to it fails with WRONGTYPE, every time
    lines = [
        {"stream": "cowest:not-a-stream", "fields": record(3).to_fields()},
        {"stream": redis_keys.TRACES_STREAM, "fields": record(4).to_fields()},
    ]
    spool.write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = TraceLog(redis, spool)
    try:
        assert await log.replay() == 0 and log.rejected == 1
        assert "tr-spool-4" in [f["id"] for _, f in await redis.xrange(redis_keys.TRACES_STREAM)]
        assert "tr-spool-3" in (tmp_path / "spool.jsonl.rejected").read_text()
    finally:
        log.close()
        await redis.delete("cowest:not-a-stream")
        await redis.aclose()


async def test_workers_take_free_slots_and_a_dead_workers_spool_is_shipped_by_a_live_one(private_redis, tmp_path):
    """Several worker processes share one COWEST_ORCH_SPOOL_PATH: each takes the first free slot, and a live one
    replays the spool of a slot whose process is gone (else those records would wait for a worker that never
    comes back)."""
    base = tmp_path / "spool.jsonl"
    live = TraceLog(redis_keys.connect(private_redis.url), base, slots=2)
    dead = TraceLog(unreachable(), base, slots=2)
    try:
        assert (live.spool_path, dead.spool_path) == (base, tmp_path / "spool.1.jsonl")
        with pytest.raises(SpoolInUse):
            TraceLog(unreachable(), base, slots=2)  # both slots taken
        for i in (10, 11, 12):
            assert not await dead.log_trace(record(i))  # Redis away for this worker: spooled
        assert await live.adopt_orphans() == 0  # its process is alive: its spool is its own
        dead.close()  # the worker dies
        assert await live.adopt_orphans() == 3
        ids = [f["id"] for _, f in await live.redis.xrange(redis_keys.TRACES_STREAM)]
        assert {"tr-spool-10", "tr-spool-11", "tr-spool-12"} <= set(ids)
        assert (tmp_path / "spool.1.jsonl").read_text() == ""
    finally:
        live.close()
        dead.close()


async def test_a_trace_in_another_workers_spool_is_known(private_redis, tmp_path):
    """Issue 20, defect 9: worker B served a trace while Redis was away from it; feedback on it reaching worker A
    (Redis up, the trace not replayed yet) must not be a 404. An id in no spool and not in Redis still is."""
    base = tmp_path / "spool.jsonl"
    a = TraceLog(redis_keys.connect(private_redis.url), base, slots=2)
    b = TraceLog(unreachable(), base, slots=2)
    try:
        assert not await b.log_trace(record(370))  # spooled by B
        assert await a.trace_known("tr-spool-370") is True
        assert await a.trace_known("tr-spool-37") is False  # a prefix of a spooled id is not that id
        assert await a.trace_known("tr-nowhere") is False
    finally:
        a.close()
        b.close()


def test_feedback_that_cannot_be_stored_is_refused_not_accepted(tmp_path):
    """Redis away and the spool full: the answer is still returned (its trace dropped and counted), but a feedback
    gets 503 + Retry-After instead of a 202 for a record that was thrown away (issue 20, defect 8)."""
    import httpx

    from services.orchestrator.app import create_app
    from tests.support.fake_upstream import fake_upstream
    from tests.support.servers import serve_app
    from tests.support.settings import orch_settings

    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        settings = orch_settings(weak, strong, redis_url, tmp_path / "spool.jsonl", max_spool_bytes=1)
        with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
            answer = client.post("/v1/collaborate", json={"question": "q"})
            assert answer.status_code == 200  # the answer goes out although its trace could not be kept
            r = client.post("/v1/feedback", json={"id": answer.json()["id"], "score": 1.0})
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.json()["error"]["code"] == "feedback_not_stored"
            assert "cowest_log_dropped 2.0" in client.get("/metrics").text
