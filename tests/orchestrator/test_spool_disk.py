"""The spool on a real full disk and under SIGKILL (issue 11, disk and network): a tiny tmpfs fills up while Redis
is away (every request is still answered; what could not be spooled is counted, what was spooled parses and
reaches Redis once it is back), and an orchestrator killed again and again while it spools loses none of the
traces its clients were given."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from cowest.processes import ProcessTable
from services.orchestrator.app import create_app
from shared.redis_keys import TRACES_STREAM
from tests.support.chaos import start_orchestrator, wait_for
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import free_port, serve_app
from tests.support.settings import orch_settings


@contextmanager
def tiny_disk(path: Path, kib: int) -> Iterator[Path]:
    """A tmpfs of `kib` KiB mounted at `path` (needs root, as on CI's machines)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def backlog_of(url: str) -> int:
    return httpx.get(f"{url}/readyz", timeout=5).json()["checks"]["log_backlog"]


def stream_ids(redis_proc) -> list[str]:
    return [fields["id"] for _, fields in redis_proc.client().xrange(TRACES_STREAM)]


def test_a_full_disk_drops_and_counts_records_answers_every_request_and_ships_what_it_kept(fresh_redis, tmp_path):
    fresh_redis.stop()
    with ExitStack() as stack:
        disk = stack.enter_context(tiny_disk(tmp_path / "disk", 16))
        weak, _ = stack.enter_context(fake_upstream("tiny-weak", ["ok"], text="draft " * 20))
        strong, _ = stack.enter_context(fake_upstream("tiny-strong", ["ok"], text="answer " * 20))
        spool = disk / "spool.jsonl"
        url = stack.enter_context(serve_app(create_app(orch_settings(weak, strong, fresh_redis.url, spool))))
        answers = [httpx.post(f"{url}/v1/collaborate", json={"question": f"q{i}"}, timeout=30) for i in range(60)]
        assert [r.status_code for r in answers] == [200] * 60  # a full disk never turns an answer into an error
        ids = [r.json()["id"] for r in answers]
        dropped, kept = metric(url, "cowest_log_dropped"), backlog_of(url)
        assert dropped > 0 and kept > 0 and dropped + kept == 60, (dropped, kept)
        # What is in the spool parses, line by line: a write cut short by ENOSPC left no torn line behind.
        lines = spool.read_text().splitlines()
        assert len(lines) == kept and all(json.loads(line)["fields"]["id"] in ids for line in lines)

        fresh_redis.start()
        wait_for(lambda: backlog_of(url) == 0, 30, "the spool shipped")
        shipped = stream_ids(fresh_redis)
        assert len(shipped) == kept == len(set(shipped)) and set(shipped) <= set(ids)
        assert shipped == [i for i in ids if i in set(shipped)]  # in order
        after = httpx.post(f"{url}/v1/collaborate", json={"question": "after"}, timeout=30).json()["id"]
        assert stream_ids(fresh_redis)[-1] == after  # the emptied disk is written again; Redis takes the rest


@pytest.mark.slow
def test_sigkill_in_a_loop_while_spooling_loses_no_trace_a_client_got(fresh_redis, tmp_path):
    fresh_redis.stop()
    got: list[str] = []
    table = ProcessTable(tmp_path / "run")
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        settings = orch_settings(weak, strong, fresh_redis.url, tmp_path / "spool.jsonl", port=free_port())
        url = f"http://127.0.0.1:{settings.port}"

        def start() -> None:
            start_orchestrator(table, settings, tmp_path / "home")

        def client(stop: threading.Event) -> None:
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    try:
                        r = http.post(f"{url}/v1/collaborate", json={"question": "kill me"})
                        if r.status_code == 200:
                            got.append(r.json()["id"])
                    except httpx.HTTPError:
                        time.sleep(0.05)

        try:
            for _ in range(4):
                start()
                stop = threading.Event()
                clients = [threading.Thread(target=client, args=(stop,)) for _ in range(3)]
                for c in clients:
                    c.start()
                before, deadline = len(got), time.monotonic() + 30
                while len(got) < before + 6 and time.monotonic() < deadline:  # answers are being logged
                    time.sleep(0.05)
                table.kill("orchestrator")  # mid-load, mid-spool
                stop.set()
                for c in clients:
                    c.join(15)
            assert len(got) > 20, "too little traffic to mean anything"
            fresh_redis.start()
            start()
            wait_for(lambda: backlog_of(url) == 0, 30, "the spool shipped")
        finally:
            table.stop("orchestrator", timeout=10)
    shipped = stream_ids(fresh_redis)
    assert set(got) <= set(shipped), f"{len(set(got) - set(shipped))} of {len(got)} traces lost"
    assert len(shipped) == len(set(shipped)), "a trace shipped twice"
