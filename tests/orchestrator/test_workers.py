"""Several worker processes (COWEST_ORCH_WORKERS): one port, each worker its own spool slot; every answered
request's trace reaches Redis once."""

from __future__ import annotations

import socket

import httpx
import pytest

from cowest.processes import ProcessTable
from services.orchestrator.app import NoDelayConfig
from services.orchestrator.tracelog import SpoolInUse, TraceLog
from shared import redis_keys
from tests.support.chaos import start_orchestrator, wait_for
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import free_port
from tests.support.settings import orch_settings


def test_the_workers_listening_socket_disables_nagle():
    """With several workers, uvicorn's own socket left Nagle's algorithm on: every response waited ~40 ms for a
    delayed ACK (bench/results/orchestrator_overhead.md). Accepted connections inherit the listener's option."""
    config = NoDelayConfig("services.orchestrator.app:service_app", factory=True, port=free_port(), workers=2)
    sock = config.bind_socket()
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


@pytest.mark.slow
def test_two_workers_serve_one_port_each_with_its_own_spool(private_redis, tmp_path):
    table = ProcessTable(tmp_path / "run")
    spool = tmp_path / "spool.jsonl"
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        settings = orch_settings(weak, strong, private_redis.url, spool, port=free_port(), workers=2)
        try:
            url = start_orchestrator(table, settings, tmp_path / "home", "workers")

            def both_slots_taken() -> bool:  # each worker holds one (a third claimant finds none free)
                try:
                    TraceLog(redis_keys.connect(private_redis.url), spool, slots=2).close()
                    return False
                except SpoolInUse:
                    return True

            wait_for(both_slots_taken, 30, "both workers up")
            with httpx.Client(timeout=30) as client:
                ids = [
                    client.post(f"{url}/v1/collaborate", json={"question": f"q{i}"}).json()["id"] for i in range(40)
                ]
        finally:
            table.stop("orchestrator", timeout=20)
    stored = {f["id"] for _, f in private_redis.client().xrange(redis_keys.TRACES_STREAM, count=100_000)}
    assert set(ids) <= stored and len(set(ids)) == 40
