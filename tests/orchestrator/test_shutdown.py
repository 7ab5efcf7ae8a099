"""Graceful shutdown (issue 11, defect 4): SIGTERM while a collaboration and a stream are in flight; both are
answered in full and both traces reach Redis before the process exits."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from cowest.processes import ProcessTable
from shared.redis_keys import TRACES_STREAM
from tests.support.chaos import start_orchestrator
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import free_port
from tests.support.settings import orch_settings

pytestmark = pytest.mark.slow


def test_sigterm_drains_in_flight_requests_and_streams_and_logs_their_traces(fresh_redis, tmp_path):
    table = ProcessTable(tmp_path / "run")
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["slow"]) as (strong, fake):
        settings = orch_settings(weak, strong, fresh_redis.url, tmp_path / "spool.jsonl", port=free_port())
        url = start_orchestrator(table, settings, tmp_path / "home")
        got: dict = {}

        def collaborate() -> None:
            r = httpx.post(f"{url}/v1/collaborate", json={"question": "q"}, timeout=30)
            got["collaborate"] = (r.status_code, r.json().get("id"))

        def stream() -> None:
            chat = {"model": "cowest", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat, timeout=30) as r:
                lines = [line for line in r.iter_lines() if line]
                got["stream"] = (r.status_code, lines[-1], r.headers.get("x-cowest-trace-id"))

        clients = [threading.Thread(target=collaborate), threading.Thread(target=stream)]
        for c in clients:
            c.start()
        waited = time.monotonic() + 10
        while len(fake.calls) < 2 and time.monotonic() < waited:  # until both wait on the strong model (2 s)
            time.sleep(0.01)
        assert table.stop("orchestrator", timeout=20) == "stopped"  # SIGTERM; it exited on its own
        for c in clients:
            c.join(30)
    assert got["collaborate"][0] == 200 and got["stream"][:2] == (200, "data: [DONE]"), got
    ids = [fields["id"] for _, fields in fresh_redis.client().xrange(TRACES_STREAM)]
    assert got["collaborate"][1] in ids and len(ids) == 2, ids
