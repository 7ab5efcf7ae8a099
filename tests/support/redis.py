"""A redis-server of a test's own (append-only persistence), which the test may stop and restart."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from cowest.processes import ProcessTable
from cowest.redis_server import start_redis
from shared.config import CowestSettings
from tests.support.servers import free_port


class RedisProcess:
    """A redis-server of the test's own (append-only persistence), which the test may stop and restart."""

    def __init__(self, home: Path):
        self.url = f"redis://127.0.0.1:{free_port()}/0"
        self.settings = CowestSettings(home=home, redis_url=self.url)
        self.table = ProcessTable(home / "run")

    def start(self) -> None:
        start_redis(self.settings, self.table)
        wait_for_ping(redis.Redis.from_url(self.url))

    def stop(self) -> None:
        self.table.stop("redis", timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


def wait_for_ping(client: redis.Redis, timeout_s: float = 10.0) -> None:
    """Until a redis-server just started answers PING (its connection errors until then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
